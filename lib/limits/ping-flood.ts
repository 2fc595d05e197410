import type { ReliableSocket } from '../core/shapes'
import { kRoute } from '../core/symbols'
import { pingBacklogFull } from '../core/ws-internals'
import { OPEN } from '../protocol/protocol'

/**
 * ws answers every ping with a pong, and terminates a peer that keeps pinging
 * while `maxPendingAutoPongs` of those pongs are still unsent because it does
 * not read them (receiverOnPing in ws's websocket.js): a peer that would
 * otherwise grow the send buffer without bound. ws calls terminate() for it,
 * from inside the ping's event, with nothing else to tell it apart: this
 * recognises that call (the backlog at its cap, the frame being handled a
 * ping) and counts it. Returns whether terminate() is ws's, for a ping flood.
 */
export function pingFlood (socket: ReliableSocket): boolean {
  const flood = pingBacklogFull(socket) && socket.readyState === OPEN && socket[kRoute] !== undefined
  if (flood) socket[kRoute]!.ctx.stats.limits.pingFloods++
  return flood
}
