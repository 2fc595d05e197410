import t from 'tap'
import Fastify from 'fastify'
import fastifyMetrics from 'fastify-metrics'
import { Registry, register } from 'prom-client'
import reliableWs = require('../../index')
import { once } from 'node:events'
import WebSocket from 'ws'
import { loadPromClient } from '../../lib/observability/prom-client-loader'
import { PROTOCOL, resumeToken } from '../../lib/protocol/protocol'
import { closeEvent, connect, RawPeer, rawExchange, start, upgradeRequest, waitFor } from '../helpers/helpers'

interface Sample { labels: Record<string, string | number>, value: number, metricName?: string }

/** The samples of one metric as a scrape would see them (its collect() runs). */
async function samples (registry: Registry, name: string): Promise<Sample[]> {
  const metric = registry.getSingleMetric(name)
  if (metric === undefined) throw new Error(`no metric ${name}`)
  return (await metric.get()).values as Sample[]
}

async function total (registry: Registry, name: string, where: Record<string, string> = {}, suffix?: string): Promise<number> {
  let sum = 0
  for (const sample of await samples(registry, name)) {
    if (suffix !== undefined && sample.metricName !== name + suffix) continue
    if (Object.entries(where).every(([key, value]) => sample.labels[key] === value)) sum += sample.value
  }
  return sum
}

const CHUNK = Buffer.alloc(64 * 1024, 7)

t.test('metrics agree with wsStats after a scripted scenario, heartbeat kills included', async (t) => {
  const registry = new Registry()
  const { app, url, port } = await start({ metrics: { registry }, backpressure: { highWaterMark: 128 * 1024, lowWaterMark: 0 } }, (app) => {
    app.get('/rooms/:id', { websocket: true, config: { reliable: { json: true, heartbeat: { intervalMs: 40 } } } }, (socket) => {
      socket.on('json', (message) => socket.sendJSON({ echo: message }))
    })
    app.get('/flood', { websocket: true, config: { reliable: { heartbeat: false } } }, (socket) => {
      socket.on('message', () => { for (let i = 0; i < 200; i++) socket.send(CHUNK) })
    })
    app.get('/private', {
      websocket: true,
      onRequest: (_request, reply, done) => { reply.code(401).send(); done() }
    }, () => {})
  })
  t.teardown(() => app.close())

  const a = await connect(url('/rooms/1'))
  const b = await connect(url('/rooms/2'))
  const c = await connect(url('/rooms/3'))
  a.send('{"hi":1}')
  a.send('not json')
  await waitFor(() => app.wsStats.messages.sent === 2)
  // Raw peers never answer a ping: the heartbeat terminates them (1006), the case third-party exporters miss.
  const silent = [await RawPeer.connect(port, '/rooms/4'), await RawPeer.connect(port, '/rooms/5')]
  const flooded = await connect(url('/flood'))
  ;(flooded as any)._socket.pause()
  flooded.send('go')
  await waitFor(() => app.wsStats.messages.dropped > 0, 3000, 'a drop')
  t.match(await rawExchange(port, upgradeRequest(port, '/private', ['Connection: close'])), /^HTTP\/1\.1 401 /)
  await waitFor(() => app.wsStats.heartbeat.timeouts === 2, 3000, 'two heartbeat timeouts')
  const closed = [closeEvent(b), closeEvent(c)]
  b.close(4001, 'app code')
  c.close(3001)
  await Promise.all(closed)
  await waitFor(() => app.wsStats.connections.closed === 4)

  const checkAgreement = async (): Promise<void> => {
    const stats = app.wsStats
    const totals: Array<[string, number]> = [
      ['ws_connections_active', stats.connections.active],
      ['ws_connections_opened_total', stats.connections.opened],
      ['ws_connections_closed_total', stats.connections.closed],
      ['ws_connections_rejected_total', stats.connections.rejected],
      ['ws_heartbeat_timeouts_total', stats.heartbeat.timeouts],
      ['ws_messages_received_total', stats.messages.received],
      ['ws_messages_sent_total', stats.messages.sent],
      ['ws_messages_dropped_total', stats.messages.dropped],
      ['ws_messages_invalid_total', stats.messages.invalid],
      ['ws_received_bytes_total', stats.bytes.received],
      ['ws_sent_bytes_total', stats.bytes.sent],
      ['ws_buffered_bytes', stats.backpressure.bufferedBytes]
    ]
    for (const [name, value] of totals) t.equal(await total(registry, name), value, name)
    for (const [route, counters] of Object.entries(stats.routes)) {
      t.equal(await total(registry, 'ws_connections_active', { route }), counters.active, `${route} active`)
      t.equal(await total(registry, 'ws_connections_opened_total', { route }), counters.opened, `${route} opened`)
      t.equal(await total(registry, 'ws_messages_received_total', { route }), counters.messagesReceived, `${route} in`)
      t.equal(await total(registry, 'ws_messages_sent_total', { route }), counters.messagesSent, `${route} out`)
      t.equal(await total(registry, 'ws_connection_duration_seconds', { route }, '_count'), counters.opened - counters.active, `${route} durations observed`)
    }
    for (const [cause, count] of Object.entries(stats.closeCauses)) {
      t.equal(await total(registry, 'ws_connections_closed_total', { cause }), count, `closed by ${cause}`)
    }
    for (const [limit, count] of Object.entries(stats.limits)) {
      t.equal(await total(registry, 'ws_limits_total', { limit }), count, `limit ${limit}`)
    }
  }
  await checkAgreement()
  t.ok(app.wsStats.backpressure.bufferedBytes > 0, 'the stalled reader still holds buffered bytes')

  t.same(app.wsStats.closeCodes, { 1006: 2, 4001: 1, 3001: 1 })
  t.equal(await total(registry, 'ws_connections_closed_total', { route: '/rooms/:id', code: '1006', cause: 'heartbeat' }), 2,
    'terminated by the heartbeat: 1006, cause heartbeat')
  t.equal(await total(registry, 'ws_connections_closed_total', { code: '4000-4999', cause: 'client' }), 1, 'application codes grouped')
  t.equal(await total(registry, 'ws_connections_closed_total', { code: '3000-3999' }), 1, 'library codes grouped')
  t.equal(await total(registry, 'ws_connections_active', { route: '/rooms/:id' }), 1, 'no drift: only the live client is counted')
  t.equal(await total(registry, 'ws_messages_dropped_total', { route: '/flood' }), app.wsStats.messages.dropped)
  t.equal(await total(registry, 'ws_messages_invalid_total', { route: '/rooms/:id' }), 1)
  t.ok(await total(registry, 'ws_ping_rtt_seconds', { route: '/rooms/:id' }, '_count') >= 1, 'round trips observed')
  const rttSum = await total(registry, 'ws_ping_rtt_seconds', {}, '_sum')
  t.ok(rttSum > 0 && rttSum < 5, `round trips in seconds (${rttSum})`)
  t.equal(await total(registry, 'ws_ping_rtt_seconds', { route: '/flood' }, '_count'), 0, "a route's series exist before its first observation")

  // Counters never go back between scrapes, and move on as more happens.
  const before = await total(registry, 'ws_connections_closed_total')
  t.equal(await total(registry, 'ws_connections_closed_total'), before, 'a second scrape reads the same')
  const sentBefore = await total(registry, 'ws_sent_bytes_total')
  const closing = [closeEvent(a), closeEvent(flooded)]
  a.close()
  flooded.terminate()
  await Promise.all(closing)
  await waitFor(() => app.wsStats.connections.active === 0)
  t.equal(await total(registry, 'ws_connections_closed_total'), before + 2)
  const sentAfter = await total(registry, 'ws_sent_bytes_total')
  t.ok(sentAfter >= sentBefore, `bytes sent never go back, not even when a reader dies with megabytes queued for it (${sentBefore} -> ${sentAfter})`)
  await checkAgreement()
  for (const peer of silent) peer.destroy()
})

t.test('the text exposition: names, types and labels as docs/operations.md lists them', async (t) => {
  const registry = new Registry()
  // Connection lines off: closes with only the metrics to feed.
  const { app, url } = await start({ heartbeat: false, metrics: { registry, prefix: 'chat_' }, logging: { connections: false } }, (app) => {
    app.get('/ws', { websocket: true }, () => {})
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  const text = await registry.metrics()
  for (const [name, type] of [
    ['chat_connections_active', 'gauge'], ['chat_buffered_bytes', 'gauge'], ['chat_connections_opened_total', 'counter'],
    ['chat_connections_closed_total', 'counter'], ['chat_connections_rejected_total', 'counter'],
    ['chat_heartbeat_timeouts_total', 'counter'], ['chat_messages_received_total', 'counter'], ['chat_messages_sent_total', 'counter'],
    ['chat_received_bytes_total', 'counter'], ['chat_sent_bytes_total', 'counter'], ['chat_messages_dropped_total', 'counter'],
    ['chat_messages_invalid_total', 'counter'], ['chat_ping_rtt_seconds', 'histogram'], ['chat_connection_duration_seconds', 'histogram'],
    ['chat_limits_total', 'counter']
  ]) {
    t.match(text, `# TYPE ${name} ${type}\n`, `${name} is a ${type}`)
  }
  t.match(text, 'chat_connections_active{route="/ws"} 1\n')
  t.match(text, 'chat_connections_rejected_total 0\n')
  t.match(text, 'chat_limits_total{limit="pingFloods"} 0\n')
  ws.close()
})

t.test("without a registry the metrics join prom-client's default one, and leave it on close", async (t) => {
  const { app, url } = await start({ heartbeat: false, metrics: true }, (app) => {
    app.get('/ws', { websocket: true }, () => {})
  })
  const ws = await connect(url('/ws'))
  t.match(await register.metrics(), 'ws_connections_active{route="/ws"} 1\n')
  ws.close()
  await app.close()
  t.equal(register.getSingleMetric('ws_connections_active'), undefined, 'removed on close')
})

t.test('two instances in one process: the same registry and prefix is a coded error; a prefix or registry each works', async (t) => {
  const first = Fastify()
  await first.register(reliableWs, { metrics: true })
  t.teardown(() => first.close())
  const second = Fastify()
  await t.rejects(async () => { await second.register(reliableWs, { metrics: true }) }, {
    code: 'FST_RELIABLE_WS_METRICS_CONFLICT',
    message: /"ws_connections_active" is already in the registry.*`metrics\.registry` or `metrics\.prefix`/
  })
  await second.close()
  const third = Fastify()
  await t.resolves(async () => { await third.register(reliableWs, { metrics: { prefix: 'admin_ws_' } }) })
  await third.close()
  const fourth = Fastify()
  await t.resolves(async () => { await fourth.register(reliableWs, { metrics: { registry: new Registry() } }) })
  await fourth.close()
})

t.test('an app of its own serves the metrics at /metrics', async (t) => {
  const registry = new Registry()
  const { app, url, port } = await start({ heartbeat: false, metrics: { registry } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => { socket.on('message', (data) => socket.send(data)) })
    app.get('/metrics', async (_request, reply) => reply.type(registry.contentType).send(await registry.metrics()))
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  ws.send('ping')
  await waitFor(() => app.wsStats.messages.sent === 1)
  const response = await fetch(`http://127.0.0.1:${port}/metrics`)
  t.match(response.headers.get('content-type'), /^text\/plain/)
  const text = await response.text()
  t.match(text, 'ws_messages_received_total{route="/ws"} 1\n')
  t.match(text, 'ws_messages_sent_total{route="/ws"} 1\n')
  ws.close()
})

t.test('loadPromClient: a missing prom-client is a coded error; any other failure is passed on as it is', async (t) => {
  const missing = Object.assign(new Error("Cannot find module 'prom-client'"), { code: 'MODULE_NOT_FOUND' })
  t.throws(() => loadPromClient(() => { throw missing }), {
    code: 'FST_RELIABLE_WS_PROM_CLIENT_MISSING',
    message: /needs prom-client.*npm install prom-client/,
    cause: missing
  })
  const broken = new SyntaxError('Unexpected token')
  t.throws(() => loadPromClient(() => { throw broken }), broken, 'any other failure is passed on as it is')
  t.equal(loadPromClient(), require('prom-client'))
})

// Left for last: fastify-metrics fills prom-client's default registry with its own metrics for the rest of the process.
t.test('fastify-metrics serves the default registry: the metrics appear at its /metrics as they are', async (t) => {
  const { app, url, port } = await start({ heartbeat: false, metrics: true }, (app) => {
    app.register(fastifyMetrics, { endpoint: '/metrics' })
    app.get('/ws', { websocket: true }, () => {})
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  await app.ready()
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  t.match(text, 'ws_connections_active{route="/ws"} 1\n')
  t.match(text, 'ws_connections_opened_total{route="/ws"} 1\n')
  ws.close()
})

t.test('session metrics agree with wsStats.sessions', async (t) => {
  const registry = new Registry()
  const { app, port } = await start({ metrics: { registry } }, (app) => {
    app.get('/s', { websocket: true, config: { reliable: { resume: { ttlMs: 1000, maxBufferedMessages: 2 } } } }, () => {})
  })
  t.teardown(() => app.close())
  const open = async (token?: string): Promise<{ ws: WebSocket, id: string, secret: string }> => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/s`, token === undefined ? PROTOCOL : [PROTOCOL, token])
    const [welcome] = await once(ws, 'message')
    const { session, token: secret } = JSON.parse(welcome.toString().slice(1))
    return { ws, id: session, secret }
  }
  const first = await open()
  app.wsSessions.get(first.id)!.send('one') // unacknowledged, replayed on resume
  first.ws.terminate()
  await waitFor(() => app.wsSessions.get(first.id)?.connected === false, 2000, 'detached')
  const again = await open(resumeToken(first.id, first.secret, 0))
  const session = app.wsSessions.get(again.id)!
  session.send('two')
  session.send('three') // one over maxBufferedMessages: overflow
  const other = await open(resumeToken(first.id, 'f'.repeat(32), 0)) // a wrong secret: a new session
  other.ws.terminate()
  await waitFor(() => app.wsStats.sessions.expired === 1, 5000, 'expiry')
  const stats = app.wsStats.sessions
  t.match(stats, { active: 0, resumed: 1, resumeRefused: 1, expired: 1, overflowed: 1, replayed: 1, bufferedBytes: 0 })
  const pairs: Array<[string, number]> = [
    ['ws_sessions_active', stats.active],
    ['ws_sessions_resumed_total', stats.resumed],
    ['ws_sessions_expired_total', stats.expired],
    ['ws_sessions_overflowed_total', stats.overflowed],
    ['ws_sessions_replayed_messages_total', stats.replayed],
    ['ws_sessions_resume_refused_total', stats.resumeRefused],
    ['ws_sessions_evicted_total', stats.evicted],
    ['ws_sessions_rejected_total', stats.rejected],
    ['ws_sessions_buffered_bytes', stats.bufferedBytes]
  ]
  for (const [name, value] of pairs) t.equal(await total(registry, name), value, name)
  again.ws.terminate()
})
