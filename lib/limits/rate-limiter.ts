import { performance } from 'node:perf_hooks'
import type { MessageRate, ReliableSocket, Route } from '../core/shapes'
import type { LimitSettings } from '../core/options'
import { kCause, kLastMessageAt, kRateNoticeAt, kTat } from '../core/symbols'
import { OPEN } from '../protocol/protocol'

const RATE_LIMIT_REPLY = '{"type":"error","message":"Rate limit exceeded"}'
// The notice itself must not become a flood.
const NOTICE_INTERVAL_MS = 1000

export function messageRate (limits: LimitSettings): MessageRate | null {
  if (limits.messagesPerSecond === Infinity) return null
  const emissionMs = 1000 / limits.messagesPerSecond
  const burst = limits.burst ?? Math.max(1, Math.ceil(limits.messagesPerSecond))
  // Half a message of slack, so float rounding never decides the burst-th message.
  return { emissionMs, toleranceMs: (burst - 0.5) * emissionMs }
}

/**
 * Runs for every message of a route with a rate limit or an idle timeout,
 * before any 'message' listener. The bucket is a token bucket kept as one
 * number (GCRA): the time at which it would be full again. A message is
 * admitted while that time is less than `burst` messages ahead of now, and
 * pushes it one message further. No timer, no allocation: a clock read and
 * a few arithmetic operations.
 */
export function admitMessage (socket: ReliableSocket, route: Route): boolean {
  const now = performance.now()
  socket[kLastMessageAt] = now
  return withinRate(socket, route, now)
}

/** The rate check alone, for frames that count against the rate but are not activity (control frames). */
export function withinRate (socket: ReliableSocket, route: Route, now = performance.now()): boolean {
  const rate = route.rate
  if (rate === null) return true
  const tat = socket[kTat] > now ? socket[kTat] : now
  if (tat - now <= rate.toleranceMs) {
    socket[kTat] = tat + rate.emissionMs
    return true
  }
  return refuseMessage(socket, route, now)
}

function refuseMessage (socket: ReliableSocket, route: Route, now: number): false {
  yieldReading(socket)
  // Whatever a closed flooder had in flight is discarded, not counted again.
  if (socket.readyState !== OPEN) return false
  route.ctx.stats.limits.rateLimited++
  if (route.limits.onRateLimit === 'close') {
    socket[kCause] = 'rateLimit'
    // Nothing it sends from now on is admitted, whatever the clock says.
    socket[kTat] = Infinity
    socket.close(1008, 'Rate limit exceeded')
  } else if (now - socket[kRateNoticeAt] >= NOTICE_INTERVAL_MS) {
    socket[kRateNoticeAt] = now
    socket.send(RATE_LIMIT_REPLY)
  }
  return false
}

/**
 * A flooder's frames are parsed even when its messages are dropped, and
 * Node reads up to 32 chunks from one socket per turn of the event loop:
 * while it is over its rate, it gets one chunk per turn, so every other
 * socket is read in between. (A peer closed with 1008 keeps being read
 * this way until its close frame arrives or ws's close timer ends it.)
 */
function yieldReading (socket: ReliableSocket): void {
  if (socket.isPaused) return
  socket.pause()
  setImmediate(resumeReading, socket)
}

function resumeReading (socket: ReliableSocket): void {
  socket.resume()
}
