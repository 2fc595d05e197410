import type { FastifyBaseLogger } from 'fastify'
import { OPEN } from '../protocol/protocol'
import type { ReliableSocket } from './shapes'
import { kCause, kLog, kRoute } from './symbols'

/**
 * An error in the application's code for this socket (its handler, a 'json' or 'drain'
 * listener) or on the socket itself. A socket still open gets 1011; one that
 * ws is already closing (a protocol error: 1002, 1007, 1009) keeps ws's code.
 */
export function failConnection (socket: ReliableSocket, err: unknown): void {
  const fromPeer = countError(socket, err)
  if (socket.readyState === OPEN) {
    socketLog(socket).error({ err }, 'websocket connection failed')
    socket.close(1011, 'Internal server error')
  } else {
    // Malformed input is the peer's fault, like a 4xx: not worth a warning each time.
    socketLog(socket)[fromPeer ? 'info' : 'warn']({ err }, 'websocket connection error')
  }
}

/**
 * Logs of one socket carry its id (and the request's reqId while connection lines are logged).
 * Built when there is something to log, never per connection.
 */
export function socketLog (socket: ReliableSocket): FastifyBaseLogger {
  return (socket[kLog] ?? socket[kRoute]!.ctx.log).child({ socketId: socket.id })
}

/** Counts an error; returns whether it was the peer's malformed input (a frame ws refused). */
export function countError (socket: ReliableSocket, err: unknown): boolean {
  const stats = socket[kRoute]!.ctx.stats
  stats.errors++
  // A close the plugin or the app started for another reason keeps that reason.
  if (socket[kCause] === undefined || socket[kCause] === 'server') socket[kCause] = 'error'
  const code = (err as { code?: unknown } | null)?.code
  if (typeof code !== 'string' || !code.startsWith('WS_ERR_')) return false
  // ws closes these with 1009; every other WS_ERR_ is a protocol error (1002, 1007, 1008).
  if (code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' || code === 'WS_ERR_UNSUPPORTED_DATA_PAYLOAD_LENGTH') stats.limits.payloadTooLarge++
  else stats.limits.protocolErrors++
  return true
}
