// The same extensions as index.d.ts gives ws's CommonJS declaration, for @types/ws's ES module one (index.d.mts):
// an application compiled as an ES module imports ws's types from there, while @fastify/websocket hands out
// sockets typed by the CommonJS one. Each class's events name the class itself, so both must carry the same members
// for a socket to be assignable to the `WebSocket` an application imports.
import type * as fastifyReliableWs from './index.js'

declare module 'ws' {
  interface WebSocket extends fastifyReliableWs.SocketExtensions {
    send (data: fastifyReliableWs.BufferLike, cb?: fastifyReliableWs.SendCallback): boolean
    send (data: fastifyReliableWs.BufferLike, options: fastifyReliableWs.SendOptions, cb?: fastifyReliableWs.SendCallback): boolean
  }
}
