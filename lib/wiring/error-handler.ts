import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { WebsocketPluginOptions } from '@fastify/websocket'
import type { WebSocket } from 'ws'
import type { ReliableSocket } from '../core/shapes'
import { countError, failConnection } from '../core/socket-errors'
import { kRoute } from '../core/symbols'

/**
 * The errorHandler handed to @fastify/websocket: it sees a handler that threw
 * or rejected, and every 'error' event of a socket.
 */
export function createErrorHandler (userHandler: WebsocketPluginOptions['errorHandler']): NonNullable<WebsocketPluginOptions['errorHandler']> {
  return function errorHandler (this: FastifyInstance, err: Error, ws: WebSocket, request: FastifyRequest, reply: FastifyReply) {
    const socket = ws as unknown as ReliableSocket
    const reliable = socket[kRoute] !== undefined
    if (userHandler !== undefined) {
      if (reliable) countError(socket, err)
      return userHandler.call(this, err, ws, request, reply)
    }
    if (reliable) return failConnection(socket, err)
    // A route that opted out keeps @fastify/websocket's default.
    request.log.error(err)
    socket.terminate()
  }
}
