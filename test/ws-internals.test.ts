import { once } from 'node:events'
import { ServerResponse } from 'node:http'
import t from 'tap'
import WebSocket from 'ws'
import { bootWith, connect, start } from './helpers'

const { version: wsVersion } = require('ws/package.json') as { version: string }

// A ws WebSocket class as a ws release that renamed or changed one of the internals the plugin reads would build
// it: the field as ws's server leaves it after setSocket, then changed.
function wsWhere (change: (socket: any) => void): typeof WebSocket {
  return class extends WebSocket {
    setSocket (...args: unknown[]): void {
      (WebSocket.prototype as any).setSocket.apply(this, args)
      change(this)
    }
  } as unknown as typeof WebSocket
}

const changes: Array<[string, (socket: any) => void]> = [
  ['WebSocket#_closeFrameReceived', (socket) => { delete socket._closeFrameReceived }],
  ['WebSocket#_pendingAutoPongs', (socket) => { delete socket._pendingAutoPongs }],
  ['WebSocket#_maxPendingAutoPongs', (socket) => { socket._maxPendingAutoPongs = undefined }],
  ['WebSocket#_receiver', (socket) => { socket._receiver = null }],
  ['Receiver#_maxPayload', (socket) => { delete socket._receiver._maxPayload }],
  ['Receiver#_errored', (socket) => { delete socket._receiver._errored }],
  // ws renumbering its parser's states would leave GET_INFO, copied here, meaning something else.
  ['Receiver#_state', (socket) => { socket._receiver._state = 1 }],
  ['Receiver#_bufferedBytes', (socket) => { delete socket._receiver._bufferedBytes }],
  ['Receiver#_fragmented', (socket) => { socket._receiver._fragmented = false }],
  ['Receiver#_opcode', (socket) => { delete socket._receiver._opcode }]
]

t.test('registration fails with a coded error naming ws, its version and the field, when a ws internal the plugin reads is missing or changed', async (t) => {
  for (const [field, change] of changes) {
    await t.rejects(bootWith({ websocket: { options: { WebSocket: wsWhere(change) } } }), {
      code: 'FST_RELIABLE_WS_UNSUPPORTED_DEPENDENCY',
      message: `ws ${wsVersion} is not supported: ${field} is missing or has changed. Install a version within the ranges in fastify-reliable-ws's package.json`
    }, field)
  }
  const NoSetSocket = class extends WebSocket {} as any
  NoSetSocket.prototype.setSocket = undefined
  await t.rejects(bootWith({ websocket: { options: { WebSocket: NoSetSocket } } }), { code: 'FST_RELIABLE_WS_UNSUPPORTED_DEPENDENCY', message: /WebSocket#setSocket/ })
  // A subclass that keeps ws's internals as they are is accepted.
  await t.resolves(bootWith({ websocket: { options: { WebSocket: wsWhere(() => {}) } } }))
})

t.test("registration fails with a coded error naming Node's version when ServerResponse#detachSocket is gone", async (t) => {
  const detachSocket = ServerResponse.prototype.detachSocket
  t.teardown(() => { ServerResponse.prototype.detachSocket = detachSocket })
  ;(ServerResponse.prototype as any).detachSocket = undefined
  await t.rejects(bootWith({}), {
    code: 'FST_RELIABLE_WS_UNSUPPORTED_DEPENDENCY',
    message: `Node ${process.version} is not supported: ServerResponse#detachSocket is missing or has changed. Install a version within the ranges in fastify-reliable-ws's package.json`
  })
})

t.test("an 'error' listener an application adds in its own 'connection' listener is never taken for @fastify/websocket's", async (t) => {
  const { app, url } = await start({ heartbeat: false }, (app) => {
    app.get('/ws', { websocket: true }, () => {})
  })
  t.teardown(() => app.close())
  const seen: string[] = []
  app.websocketServer.on('connection', (socket) => {
    socket.on('error', (err) => { seen.push(err.message) })
  })
  const ws = await connect(url('/ws'))
  const [socket] = app.websocketServer.clients
  // Two listeners were added after the count at 'connection' (the app's and @fastify/websocket's): both stay.
  t.equal(socket.listenerCount('error'), 2)
  const closed = once(ws, 'close')
  socket.emit('error', new Error('boom'))
  t.same(seen, ['boom'], "the application's listener still runs")
  // @fastify/websocket's listener hands the error to the plugin's errorHandler: 1011.
  const [code] = await closed
  t.equal(code, 1011)
})

t.test("without other 'error' listeners, @fastify/websocket's is swapped for the plugin's shared one", async (t) => {
  const { app, url } = await start({ heartbeat: false }, (app) => {
    app.get('/ws', { websocket: true }, () => {})
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  const [socket] = app.websocketServer.clients
  const [listener] = socket.listeners('error')
  t.equal(socket.listenerCount('error'), 1)
  t.equal(listener.name, 'onError', 'the shared listener, not a closure over the request')
  ws.terminate()
})
