import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { WebsocketPluginOptions } from '@fastify/websocket'
import type { WebSocket } from 'ws'
import type { ReliableSocket } from './reliable-socket'
import { kCause, kRoute } from './symbols'

const OPEN = 1

/**
 * An error in the application's code for this socket (its handler, a 'json' or 'drain'
 * listener) or on the socket itself. A socket still open gets 1011; one that
 * ws is already closing (a protocol error: 1002, 1007, 1009) keeps ws's code.
 */
export function failConnection (socket: ReliableSocket, err: unknown): void {
  const ctx = socket[kRoute]!.ctx
  countError(socket)
  if (socket.readyState === OPEN) {
    ctx.log.error({ err, socketId: socket.id }, 'websocket connection failed')
    socket.close(1011, 'Internal server error')
  } else {
    ctx.log.warn({ err, socketId: socket.id }, 'websocket connection error')
  }
}

function countError (socket: ReliableSocket): void {
  socket[kRoute]!.ctx.stats.errors++
  // A close the plugin or the app started for another reason keeps that reason.
  if (socket[kCause] === undefined || socket[kCause] === 'server') socket[kCause] = 'error'
}

/**
 * The errorHandler handed to @fastify/websocket: it sees a handler that threw
 * or rejected, and every 'error' event of a socket.
 */
export function createErrorHandler (userHandler: WebsocketPluginOptions['errorHandler']): NonNullable<WebsocketPluginOptions['errorHandler']> {
  return function errorHandler (this: FastifyInstance, err: Error, ws: WebSocket, request: FastifyRequest, reply: FastifyReply) {
    const socket = ws as unknown as ReliableSocket
    const reliable = socket[kRoute] !== undefined
    if (userHandler !== undefined) {
      if (reliable) countError(socket)
      return userHandler.call(this, err, ws, request, reply)
    }
    if (reliable) return failConnection(socket, err)
    // A route that opted out keeps @fastify/websocket's default.
    request.log.error(err)
    socket.terminate()
  }
}
