import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { ServerResponse } from 'node:http'
import { join } from 'node:path'
import { TLSSocket } from 'node:tls'
import Fastify from 'fastify'
import t from 'tap'
import { Registry } from 'prom-client'
import WebSocket from 'ws'
import reliableWs = require('../../index')
import { bootWith, collect, connect, start, waitFor } from '../helpers/helpers'

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
  ['WebSocket#_extensions', (socket) => { socket._extensions = null }],
  ['WebSocket#_receiver', (socket) => { socket._receiver = null }],
  ['Receiver#_maxPayload', (socket) => { delete socket._receiver._maxPayload }],
  ['Receiver#_errored', (socket) => { delete socket._receiver._errored }],
  // ws renumbering its parser's states would leave GET_INFO, copied here, meaning something else.
  ['Receiver#_state', (socket) => { socket._receiver._state = 1 }],
  ['Receiver#_bufferedBytes', (socket) => { delete socket._receiver._bufferedBytes }],
  ['Receiver#_fragmented', (socket) => { socket._receiver._fragmented = false }],
  ['Receiver#_opcode', (socket) => { delete socket._receiver._opcode }],
  ['WebSocket#_sender', (socket) => { socket._sender = null }],
  // A busy sender at rest would send every published frame through the ordinary path, or overtake its queue.
  ['Sender#_state', (socket) => { socket._sender._state = 1 }],
  ['Sender#sendFrame', (socket) => { socket._sender.sendFrame = undefined }]
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
  // permessage-deflate's class, which ws hangs on its WebSocket class, as a release that changed it would have it.
  const { PerMessageDeflate } = WebSocket as any
  const deflates: Array<[string, unknown]> = [
    ['WebSocket.PerMessageDeflate', undefined],
    ['PerMessageDeflate#_maxPayload', class extends PerMessageDeflate { constructor (options: object) { super(options); delete this._maxPayload } }],
    ['PerMessageDeflate#_inflate', class extends PerMessageDeflate { constructor (options: object) { super(options); this._inflate = undefined } }],
    ['PerMessageDeflate#compress', class extends PerMessageDeflate { compress = undefined }],
    ['PerMessageDeflate#compress', class extends PerMessageDeflate { decompress = undefined }]
  ]
  for (const [field, Deflate] of deflates) {
    const Changed = class extends WebSocket {} as any
    Changed.PerMessageDeflate = Deflate
    await t.rejects(bootWith({ websocket: { options: { WebSocket: Changed } } }), { code: 'FST_RELIABLE_WS_UNSUPPORTED_DEPENDENCY', message: new RegExp(`: ${field} is missing`) }, field)
  }
  const { extension } = WebSocket as any
  const { parse } = extension
  extension.parse = undefined
  try {
    await t.rejects(bootWith({}), { code: 'FST_RELIABLE_WS_UNSUPPORTED_DEPENDENCY', message: /: WebSocket\.extension\.parse is missing/ })
  } finally {
    extension.parse = parse
  }
  // The frame builder topics write every subscriber's frame with: gone, or building another frame.
  const { Sender } = WebSocket as any
  const { frame } = Sender
  for (const changed of [undefined, (data: Buffer) => [Buffer.from([0x82, data.length]), data]]) {
    Sender.frame = changed
    try {
      await t.rejects(bootWith({}), { code: 'FST_RELIABLE_WS_UNSUPPORTED_DEPENDENCY', message: /: WebSocket\.Sender\.frame is missing/ })
    } finally {
      Sender.frame = frame
    }
  }
  // A subclass that keeps ws's internals as they are is accepted.
  await t.resolves(bootWith({ websocket: { options: { WebSocket: wsWhere(() => {}) } } }))
})

t.test('the check builds its probe with the application\'s server options, so a subclass of its own that reads them registers', async (t) => {
  class Tagged extends WebSocket {
    tag: string
    constructor (address: null, protocols: undefined, options: { tag: string }) {
      super(address as unknown as string, protocols, options as WebSocket.ClientOptions)
      this.tag = options.tag.toUpperCase()
    }
  }
  const tagged = await start({ websocket: { options: { WebSocket: Tagged as unknown as typeof WebSocket, tag: 'room' } as object } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => { socket.send((socket as unknown as Tagged).tag) })
  })
  t.teardown(() => tagged.app.close())
  const client = await connect(tagged.url('/ws'))
  const received = collect(client)
  await waitFor(() => received.length === 1, 3000, 'the message')
  t.same(received, ['ROOM'])
  client.close()
})

t.test('a refused registration leaves nothing behind: no metric in the registry, so a second attempt gets the same error', async (t) => {
  const registry = new Registry()
  const broken = wsWhere((socket) => { delete socket._closeFrameReceived })
  for (const attempt of ['first', 'second']) {
    await t.rejects(bootWith({ metrics: { registry }, websocket: { options: { WebSocket: broken } } }),
      { code: 'FST_RELIABLE_WS_UNSUPPORTED_DEPENDENCY' }, attempt)
  }
  t.same(registry.getMetricsAsArray(), [])
})

const nodeMessage = (field: string): string =>
  `Node ${process.version} is not supported: ${field} is missing or has changed. Install a version within the ranges in fastify-reliable-ws's package.json`

t.test("registration fails with a coded error naming Node's version when ServerResponse#detachSocket no longer detaches", async (t) => {
  const detachSocket = ServerResponse.prototype.detachSocket
  t.teardown(() => { ServerResponse.prototype.detachSocket = detachSocket })
  ServerResponse.prototype.detachSocket = function () {}
  await t.rejects(bootWith({}), { code: 'FST_RELIABLE_WS_UNSUPPORTED_DEPENDENCY', message: nodeMessage('ServerResponse#detachSocket') })
  ;(ServerResponse.prototype as any).detachSocket = undefined
  await t.rejects(bootWith({}), { code: 'FST_RELIABLE_WS_UNSUPPORTED_DEPENDENCY', message: nodeMessage('ServerResponse#detachSocket') })
})

t.test("registration fails with a coded error naming Node's version when a response no longer links its socket", async (t) => {
  const assignSocket = ServerResponse.prototype.assignSocket
  t.teardown(() => { ServerResponse.prototype.assignSocket = assignSocket })
  ServerResponse.prototype.assignSocket = function (this: ServerResponse, socket) {
    assignSocket.call(this, socket)
    delete (socket as any)._httpMessage
  }
  await t.rejects(bootWith({}), { code: 'FST_RELIABLE_WS_UNSUPPORTED_DEPENDENCY', message: nodeMessage('Socket#_httpMessage') })
  ServerResponse.prototype.assignSocket = function (this: ServerResponse, socket) {
    assignSocket.call(this, socket)
    ;(this as any)._headerSent = undefined
  }
  await t.rejects(bootWith({}), { code: 'FST_RELIABLE_WS_UNSUPPORTED_DEPENDENCY', message: nodeMessage('ServerResponse#_headerSent') })
})

t.test("on a TLS server, registration fails with a coded error naming Node's version when a TLS socket no longer links the TCP one", async (t) => {
  const key = readFileSync(join(__dirname, '..', 'fixtures', 'localhost-key.pem'))
  const cert = readFileSync(join(__dirname, '..', 'fixtures', 'localhost-cert.pem'))
  const boot = async (): Promise<void> => {
    const app = Fastify({ https: { key, cert } })
    try {
      await app.register(reliableWs, {})
      await app.ready()
    } finally {
      await app.close().catch(() => {})
    }
  }
  await t.resolves(boot())
  // Assignments of _parent land in this setter and are lost, as if Node had renamed the field.
  Object.defineProperty(TLSSocket.prototype, '_parent', { configurable: true, get () { return undefined }, set () {} })
  t.teardown(() => { delete (TLSSocket.prototype as any)._parent })
  await t.rejects(boot(), { code: 'FST_RELIABLE_WS_UNSUPPORTED_DEPENDENCY', message: nodeMessage('TLSSocket#_parent') })
  // A plain HTTP server has no use for it.
  await t.resolves(bootWith({}))
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
