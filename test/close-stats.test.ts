import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { Registry } from 'prom-client'
import { OPCODE, RawPeer, buildFrame, closeEvent, connect, start, waitFor } from './helpers'

// What wsStats and the metrics record for sockets ws itself fails: the code the server sent, and the right cause.

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
