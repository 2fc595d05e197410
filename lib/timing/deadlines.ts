import type { Route, ReliableSocket } from '../core/shapes'
import { firstPingAt, heartbeatDue, readingPaused } from './heartbeat'
import { messageDue } from './message-deadline'
import { kCause, kHeartbeatDueAt, kLastMessageAt, kNextPingAt, kRoute } from '../core/symbols'
import { OPEN } from '../protocol/protocol'

/**
 * A socket has one place on the scheduler for three deadlines, its heartbeat,
 * its idle timeout and the fragment timeout of a message arriving: it is
 * visited at the earliest one, and each visit settles whichever is due. The
 * idle deadline moves with every message without touching the wheel; a visit
 * that finds it moved just reschedules.
 */
export function startDeadlines (socket: ReliableSocket, route: Route, now: number): void {
  socket[kLastMessageAt] = now
  const heartbeat = route.heartbeat
  if (heartbeat !== false) socket[kHeartbeatDueAt] = socket[kNextPingAt] = firstPingAt(route.ctx, heartbeat, now)
  const limits = route.limits
  const due = Math.min(socket[kHeartbeatDueAt], now + limits.idleTimeoutMs, now + limits.fragmentTimeoutMs)
  if (due !== Infinity) route.ctx.scheduler.add(socket, due)
}

/** The scheduler's callback for a reliable socket. */
export function onSocketDue (socket: ReliableSocket, now: number): void {
  if (socket.readyState !== OPEN) return
  const route = socket[kRoute]!
  let idleAt = socket[kLastMessageAt] + route.limits.idleTimeoutMs
  if (now >= idleAt) {
    if (!readingPaused(socket)) return closeIdle(socket, route)
    // Paused by the app, it may have messages waiting unread: its idle time counts from now.
    socket[kLastMessageAt] = now
    idleAt = now + route.limits.idleTimeoutMs
  }
  const messageAt = messageDue(socket, route, now)
  if (messageAt < 0) return
  let due = socket[kHeartbeatDueAt]
  // Visited early for the idle deadline, the heartbeat waits for its own.
  if (now >= due) {
    due = heartbeatDue(socket, route, now)
    if (due < 0) return
    socket[kHeartbeatDueAt] = due
  }
  route.ctx.scheduler.add(socket, Math.min(due, idleAt, messageAt))
}

function closeIdle (socket: ReliableSocket, route: Route): void {
  route.ctx.stats.limits.idleTimeouts++
  socket[kCause] = 'idle'
  socket.close(1000, 'Idle timeout')
}
