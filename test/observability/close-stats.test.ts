import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { Registry } from 'prom-client'
import { OPCODE, RawPeer, buildFrame, closeEvent, connect, start, waitFor } from '../helpers/helpers'

// What wsStats and the metrics record for sockets ws itself fails: the code the server sent, and the right cause.

// @types/ws does not list ws's maxPendingAutoPongs yet.
const FEW_PENDING_PONGS = { maxPendingAutoPongs: 4 } as {}

interface Sample { labels: Record<string, string | number>, value: number }

async function total (registry: Registry, name: string, where: Record<string, string>): Promise<number> {
  const metric = registry.getSingleMetric(name)
  if (metric === undefined) throw new Error(`no metric ${name}`)
  let sum = 0
  for (const sample of (await metric.get()).values as Sample[]) {
    if (Object.entries(where).every(([key, value]) => sample.labels[key] === value)) sum += sample.value
  }
  return sum
}

async function server (t: tap.Test, options: Record<string, unknown> = {}) {
  const registry = new Registry()
  const infos: Array<{ code: number, cause: string }> = []
  const started = await start({
    heartbeat: false,
    metrics: { registry },
    onDisconnect: (_socket, info) => { infos.push(info) },
    ...options
  }, (app: FastifyInstance) => {
    app.get('/ws', { websocket: true, config: { reliable: { limits: { maxPayload: 1024 } } } }, (socket) => {
      socket.on('message', (data) => socket.send(data.toString()))
    })
  }, { logger: { level: 'fatal' } })
  t.teardown(() => started.app.close())
  return { ...started, registry, infos }
}

t.test('a message over maxPayload is recorded as the 1009 ws sent, not the 1006 of the answer it never read', async (t) => {
  const { app, url, registry, infos } = await server(t)
  const ws = await connect(url('/ws'))
  ws.on('error', () => {})
  ws.send('x'.repeat(1025))
  // The client answers the close frame, but ws stopped reading at the refused frame: its 'close' event says 1006.
  t.equal((await closeEvent(ws)).code, 1009)
  await waitFor(() => infos.length === 1, 3000, 'the close')
  t.same(app.wsStats.closeCodes, { 1009: 1 })
  t.same(app.wsStats.closeCauses, { error: 1 })
  t.same(infos.map((info) => [info.code, info.cause]), [[1009, 'error']], 'onDisconnect is told the same code')
  t.equal(await total(registry, 'ws_connections_closed_total', { route: '/ws', code: '1009', cause: 'error' }), 1, 'the metrics label')
  t.equal(await total(registry, 'ws_connections_closed_total', { code: '1006' }), 0)
  t.equal(await total(registry, 'ws_limits_total', { limit: 'payloadTooLarge' }), 1)
})

t.test('protocol errors are recorded as the 1002 and 1007 ws sent', async (t) => {
  const { app, port, infos } = await server(t)
  const unmasked = await RawPeer.connect(port, '/ws')
  unmasked.socket.write(buildFrame({ opcode: OPCODE.text, payload: 'hi', mask: false }))
  const utf8 = await RawPeer.connect(port, '/ws')
  utf8.socket.write(buildFrame({ opcode: OPCODE.text, payload: Buffer.from([0x68, 0xff, 0xfe]) }))
  await waitFor(() => infos.length === 2, 3000, 'both closes')
  t.equal(unmasked.closeCode(), 1002)
  t.equal(utf8.closeCode(), 1007)
  t.same(app.wsStats.closeCodes, { 1002: 1, 1007: 1 })
  t.same(app.wsStats.closeCauses, { error: 2 })
})

t.test('a socket closed by the server for another reason and never answered stays 1006', async (t) => {
  const { app, port, infos } = await server(t, { shutdown: { timeoutMs: 100 } })
  const peer = await RawPeer.connect(port, '/ws')
  // The app closes it and the raw peer never answers: a close handshake left unfinished is what 1006 means.
  const [socket] = [...app.websocketServer.clients]
  socket.close(4000, 'bye')
  await waitFor(() => infos.length === 1, 3000, 'the close timeout')
  t.equal(peer.closeCode(), 4000)
  t.same(infos.map((info) => [info.code, info.cause]), [[1006, 'server']])
  peer.destroy()
})

t.test("a peer that floods pings and never reads the pongs: terminated by ws, cause 'error', counted in pingFloods", async (t) => {
  const { app, port, registry, infos } = await server(t, { websocket: { options: FEW_PENDING_PONGS } })
  const good = await connect(`ws://127.0.0.1:${port}/ws`)
  const peer = await RawPeer.connect(port, '/ws')
  // Stop reading: the pongs pile up in the server's buffers until ws gives up.
  peer.socket.pause()
  const ping = buildFrame({ opcode: OPCODE.ping, payload: Buffer.alloc(125) })
  const batch = Buffer.concat(Array.from({ length: 1000 }, () => ping))
  for (let i = 0; i < 200 && infos.length === 0; i++) {
    if (!peer.socket.write(batch)) await new Promise((resolve) => setTimeout(resolve, 5))
  }
  await waitFor(() => infos.length === 1, 5000, 'the flooder to be terminated')
  t.same(infos.map((info) => [info.code, info.cause]), [[1006, 'error']], 'no close frame: ws terminates it')
  t.equal(app.wsStats.limits.pingFloods, 1)
  t.same(app.wsStats.closeCauses, { error: 1 })
  t.equal(await total(registry, 'ws_limits_total', { limit: 'pingFloods' }), 1, 'exported with the other limits')
  t.equal(await total(registry, 'ws_connections_closed_total', { code: '1006', cause: 'error' }), 1)
  // An app that terminates a socket itself is still the server's doing.
  const [socket] = [...app.websocketServer.clients]
  socket.terminate()
  await waitFor(() => infos.length === 2, 3000, 'the app\'s terminate')
  t.equal(infos[1].cause, 'server')
  t.equal(app.wsStats.limits.pingFloods, 1)
  peer.destroy()
  good.terminate()
})

t.test('a route that opted out keeps ws\'s behaviour and is counted nowhere', async (t) => {
  const started = await start({ heartbeat: false, websocket: { options: FEW_PENDING_PONGS } }, (app) => {
    app.get('/plain', { websocket: true, config: { reliable: false } }, () => {})
  }, { logger: { level: 'fatal' } })
  t.teardown(() => started.app.close())
  const peer = await RawPeer.connect(started.port, '/plain')
  peer.socket.pause()
  const ping = buildFrame({ opcode: OPCODE.ping, payload: Buffer.alloc(125) })
  const batch = Buffer.concat(Array.from({ length: 1000 }, () => ping))
  const closed = new Promise((resolve) => [...started.app.websocketServer.clients][0].once('close', resolve))
  let done = false
  closed.then(() => { done = true }, () => {})
  for (let i = 0; i < 200 && !done; i++) {
    if (!peer.socket.write(batch)) await new Promise((resolve) => setTimeout(resolve, 5))
  }
  await closed
  t.equal(started.app.wsStats.limits.pingFloods, 0)
  peer.destroy()
})
