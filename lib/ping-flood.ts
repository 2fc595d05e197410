import type { ReliableSocket } from './reliable-socket'
import { kRoute } from './symbols'

const OPEN = 1
const PING = 0x9

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
  // In ws's own order; both fields are undefined when autoPong is off, and the comparisons are then false.
  const flood = socket._maxPendingAutoPongs > 0 && socket._pendingAutoPongs >= socket._maxPendingAutoPongs &&
    socket._receiver._opcode === PING && socket.readyState === OPEN && socket[kRoute] !== undefined
  if (flood) socket[kRoute]!.ctx.stats.limits.pingFloods++
  return flood
}
