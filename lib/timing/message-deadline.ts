import type { Route, ReliableSocket } from '../core/shapes'
import { kCause, kMessageStartedAt } from '../core/symbols'
import { midMessage } from '../core/ws-internals'

const NONE = -1

/**
 * ws buffers a message until its last frame arrives (up to maxPayload), so a
 * peer that starts one and never finishes it, while answering pings, pins that
 * memory for the life of the socket. This gives every message a deadline
 * without a timer or any work per frame: each of the socket's deadline visits
 * looks at ws's parser. The first visit that finds it inside a message (a
 * frame's header or payload partly read, or a fragmented message begun) notes
 * the time; a visit fragmentTimeoutMs later that finds it still inside closes
 * the socket, unless a message was completed in between (the 'message' event
 * resets the note, one store). Visits come at least every fragmentTimeoutMs,
 * so a message is closed between once and twice that after it began.
 * Returns when the socket next needs a visit for it, or -1 once closed.
 */
export function messageDue (socket: ReliableSocket, route: Route, now: number): number {
  const timeoutMs = route.limits.fragmentTimeoutMs
  if (timeoutMs === Infinity) return Infinity
  // Paused (by the app, or by the plugin while an async onConnect runs), the rest may be waiting unread: the
  // peer is not to blame, and its message is measured again once reading resumes.
  if (!midMessage(socket) || socket.isPaused) {
    socket[kMessageStartedAt] = NONE
    return now + timeoutMs
  }
  const startedAt = socket[kMessageStartedAt]
  if (startedAt === NONE) {
    socket[kMessageStartedAt] = now
    return now + timeoutMs
  }
  if (now - startedAt < timeoutMs) return startedAt + timeoutMs
  route.ctx.stats.limits.fragmentTimeouts++
  socket[kCause] = 'error'
  socket.close(1008, 'Message timeout')
  return -1
}
