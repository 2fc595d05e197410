import { performance } from 'node:perf_hooks'
import { ALIVE, AWAITING, OVERDUE } from '../core/shapes'
import type { Context, Route, ReliableSocket } from '../core/shapes'
import type { HeartbeatSettings } from '../core/options'
import { kPongState, kCause, kLatency, kNextPingAt, kOnConnectPending, kPingAt, kRoute } from '../core/symbols'

/** A new socket's first ping: about one interval on, in a batch the scheduler paces (see Scheduler.pace). */
export function firstPingAt (ctx: Context, heartbeat: HeartbeatSettings, now: number): number {
  return ctx.scheduler.pace(now, now + heartbeat.intervalMs)
}

/**
 * A socket's heartbeat is due: either for a ping or for the end of its pong
 * deadline (when timeoutMs < intervalMs there are two visits per interval,
 * otherwise one). Returns when it is next due, or -1 once the peer is terminated.
 */
export function heartbeatDue (socket: ReliableSocket, route: Route, now: number): number {
  const ctx = route.ctx
  const state = socket[kPongState]
  if (state !== ALIVE && readingPaused(socket)) {
    // The pong may be waiting unread: the peer is judged once the app reads again. The round trip, stretched by
    // the pause, is not measured.
    socket[kPongState] = AWAITING
    socket[kPingAt] = 0
    return now + (route.heartbeat as HeartbeatSettings).timeoutMs
  }
  if (state === AWAITING) {
    // Timers run before I/O in each turn of the event loop: after a busy spell
    // the pong may be sitting unread. Decide only after one more I/O phase.
    socket[kPongState] = OVERDUE
    return now
  }
  if (state === OVERDUE) {
    socket.isAlive = false
    route.counters.timeouts++
    socket[kCause] = 'heartbeat'
    ctx.warnings.warn(socket, route, { timeoutMs: (route.heartbeat as HeartbeatSettings).timeoutMs }, 'websocket peer missed its heartbeat: terminated')
    socket.terminate()
    return -1
  }
  const heartbeat = route.heartbeat as HeartbeatSettings
  if (now < socket[kNextPingAt]) return socket[kNextPingAt]
  socket[kPongState] = AWAITING
  socket[kPingAt] = now
  // ws's own ping, through its sender: none after the close frame, nothing read from ws's private fields. Writing
  // the frame's two bytes to the TCP socket instead saved little (bench/notes.md, "The heartbeat's ping through ws").
  socket.ping()
  ctx.stats.pingsSent++
  // Keep the phase picked at connect; after a stall, start again from now.
  let next = socket[kNextPingAt] + heartbeat.intervalMs
  if (next <= now) next = now + heartbeat.intervalMs
  socket[kNextPingAt] = next
  return heartbeat.timeoutMs < heartbeat.intervalMs ? now + heartbeat.timeoutMs : next
}

/**
 * The app has stopped reading the socket (pause(), or a stream's flow control), so what the peer sent may be
 * waiting unread. The plugin's own pause while an async onConnect runs does not count: a dead peer must still be
 * found then, whatever the hook waits for.
 */
export function readingPaused (socket: ReliableSocket): boolean {
  return socket.isPaused && !socket[kOnConnectPending]
}

/** 'pong' listener: a sign of life, and the round trip of the last ping. */
export function onPong (this: ReliableSocket): void {
  this[kPongState] = ALIVE
  const route = this[kRoute]!
  route.ctx.stats.pongsReceived++
  const pingAt = this[kPingAt]
  if (pingAt !== 0) {
    const rtt = performance.now() - pingAt
    this[kLatency] = rtt
    route.ctx.stats.recordLatency(rtt)
    const observers = route.observers
    if (observers !== null) observers.rtt.observe(rtt / 1000)
    this[kPingAt] = 0
  }
}

/** 'ping' listener: a peer that pings us is alive too. */
export function onPeerPing (this: ReliableSocket): void {
  this[kPongState] = ALIVE
}
