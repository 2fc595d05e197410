// Compiled by `npm run test:types` as an ES module (the package is CommonJS; this file is not): the import forms and
// types an application compiled as an ES module sees, with ws's types from @types/ws's index.d.mts.
import fastify from 'fastify'
import reliableWs, { fastifyReliableWs, RedisSessionStore } from 'fastify-reliable-ws'
import type { RouteReliableOptions } from 'fastify-reliable-ws'
import WsClass from 'ws'
import type { WebSocket } from 'ws'

const app = fastify()
const names = new WeakMap<WebSocket, string>()
await app.register(reliableWs, {
  onConnect (socket) {
    names.set(socket, 'x')
  }
})
await app.register(fastifyReliableWs, { heartbeat: false })
await app.register(reliableWs, { sessionStore: new RedisSessionStore({ defineCommand () {}, publish: async () => 0, duplicate () { return this } }) })
app.get('/chat', { websocket: true, config: { reliable: { json: true } satisfies RouteReliableOptions } }, (socket) => {
  names.set(socket, socket.id)
  const plain: WebSocket = socket
  plain.sendJSON({ latencyMs: socket.latencyMs })
})
// A socket of ws's ES module declaration is one of the CommonJS declaration too.
app.websocketServer.clients.add(new WsClass('ws://127.0.0.1:9/'))
