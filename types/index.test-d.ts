// Compiled by `npm run test:types`: a regression in a public type fails the suite.
import fastify from 'fastify'
import { Cluster, Redis } from 'ioredis'
import { Registry, register } from 'prom-client'
import WsClass from 'ws'
import type { WebSocket } from 'ws'
import reliableWs, { fastifyReliableWs, RedisSessionStore } from '..'
import type {
  AllowedOrigins, DisconnectInfo, FastifyReliableWsOptions, InvalidMessageReply, LimitOptions, LimitStats, LoggingOptions, LogLevel,
  MetricsOptions, MetricsRegistry, PluginLimitOptions, RouteReliableOptions, RouteStats, Session, SessionStats, SessionStore, SessionRecord, ClaimResult, SessionSendResult, PostResult,
  SocketExtensions, WsStats
} from '..'
import { ReliableWebSocket } from '../lib/client'

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
function expectType<T> (_value: T): void {}
function expectExact<A, B> (_proof: Equal<A, B>): void {}

const app = fastify()

app.register(reliableWs)
app.register(fastifyReliableWs, { heartbeat: false, health: false })
app.register(fastifyReliableWs, { health: true })
app.register(reliableWs, {
  heartbeat: { intervalMs: 30_000, timeoutMs: 30_000 },
  backpressure: { highWaterMark: 1_048_576, lowWaterMark: 262_144, onLimit: 'close' },
  shutdown: { closeCode: 1001, reason: 'Server shutting down', timeoutMs: 5_000 },
  health: { path: '/health/ws' },
  websocket: { options: { maxPayload: 1_048_576 } },
  onConnect (socket, request) {
    expectExact<typeof socket, WebSocket>(true)
    expectType<string>(request.url)
    // The socket is ws's WebSocket: usable wherever the application takes one (esm.test-d.mts: from an ES module too).
    new WeakMap<WebSocket, string>().set(socket, 'x')
  },
  async onDisconnect (socket, info) {
    expectType<string>(socket.id)
    expectExact<typeof info, DisconnectInfo>(true)
    expectExact<typeof info.cause, 'client' | 'server' | 'heartbeat' | 'backpressure' | 'shutdown' | 'error' | 'rateLimit' | 'idle' | 'replaced' | 'session'>(true)
  }
})
app.register(reliableWs, {
  allowedOrigins: ['https://example.com'],
  limits: {
    maxConnections: 10_000,
    maxConnectionsPerIp: Infinity,
    maxPayload: 1_048_576,
    messagesPerSecond: 1000,
    burst: 1000,
    onRateLimit: 'drop',
    handshakeTimeoutMs: 10_000,
    idleTimeoutMs: Infinity
  }
})
app.register(reliableWs, {
  allowedOrigins (origin, request) {
    expectExact<typeof origin, string | undefined>(true)
    expectType<string>(request.ip)
    return origin === 'https://example.com'
  }
})
app.register(reliableWs, { metrics: true, logging: { connections: 'debug', warningsPerSecond: 10 } })
app.register(reliableWs, { metrics: { registry: new Registry(), prefix: 'ws_' }, logging: { connections: false } })
app.register(reliableWs, { metrics: { registry: register } })
expectType<MetricsRegistry>(register)
expectType<MetricsOptions>({ prefix: 'chat_' })
expectType<LoggingOptions>({ connections: 'info' })
expectExact<LogLevel, 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace'>(true)
// @ts-expect-error connections is a level or false
app.register(reliableWs, { logging: { connections: true } })
// @ts-expect-error a registry is a prom-client Registry
app.register(reliableWs, { metrics: { registry: 'default' } })
// @ts-expect-error onRateLimit is 'drop' or 'close'
app.register(reliableWs, { limits: { onRateLimit: 'block' } })
// @ts-expect-error allowedOrigins is a list of strings or a function
app.register(reliableWs, { allowedOrigins: 'https://example.com' })
// @ts-expect-error the handshake timeout is server-wide: not a route limit
const routeLimits: LimitOptions = { handshakeTimeoutMs: 100 }
expectType<LimitOptions>(routeLimits)
expectType<LimitOptions>({} as PluginLimitOptions)
expectType<AllowedOrigins>(['https://example.com'])
// @ts-expect-error onLimit is 'drop' or 'close'
app.register(reliableWs, { backpressure: { onLimit: 'block' } })
// @ts-expect-error intervalMs is a number
app.register(reliableWs, { heartbeat: { intervalMs: '30s' } })

const options: FastifyReliableWsOptions = { heartbeat: { intervalMs: 10 } }
expectType<FastifyReliableWsOptions>(options)

app.get('/chat', { websocket: true, config: { reliable: { json: true, heartbeat: { intervalMs: 100 } } } }, (socket, request) => {
  expectType<string>(socket.id)
  expectExact<typeof socket.isAlive, boolean>(true)
  expectExact<typeof socket.latencyMs, number | null>(true)
  expectExact<ReturnType<typeof socket.sendJSON>, boolean>(true)
  expectType<boolean>(socket.send('text'))
  expectType<boolean>(socket.send(Buffer.from('x'), { binary: true }, (err) => { expectType<Error | undefined>(err) }))
  socket.on('json', (message) => { socket.sendJSON({ echo: message }) })
  socket.on('drain', () => {})
  socket.on('message', (data, isBinary) => {
    expectType<boolean>(isBinary)
    expectType<Buffer | ArrayBuffer | Buffer[]>(data)
  })
  socket.on('close', (code, reason) => {
    expectType<number>(code)
    expectType<Buffer>(reason)
  })
  socket.once('pong', (data) => { expectType<Buffer>(data) })
  expectType<string>(request.url)
})
app.get('/plain', { websocket: true, config: { reliable: false } }, () => {})
app.get('/limited', {
  websocket: true,
  config: { reliable: { allowedOrigins: () => true, limits: { maxPayload: 1024, messagesPerSecond: 10, onRateLimit: 'close', idleTimeoutMs: 60_000 } } }
}, () => {})
// A store may answer at once or with a promise, method by method.
const records = new Map<string, SessionRecord>()
const store: SessionStore = {
  create: (record) => { records.set(record.id, record) },
  claim: async (request) => {
    const record = records.get(request.id)
    return record === undefined ? { ok: false, refusal: 'unknown' } : { ok: true, record, previous: record.instance, handover: null }
  },
  write: () => 'ok',
  release: async () => 'fenced' as const,
  end: (id) => records.delete(id) ? 'ok' : 'lost',
  read: (id) => records.get(id) ?? null
}
app.register(reliableWs, { resume: true, sessionStore: store })
// The records in Redis, through the application's ioredis client or Cluster client (`app.redis` of @fastify/redis).
app.register(reliableWs, { resume: true, sessionStore: new RedisSessionStore(new Redis({ lazyConnect: true })) })
app.register(reliableWs, { sessionStore: new RedisSessionStore(new Cluster([]), { prefix: 'app1' }) })
expectType<SessionStore>(new RedisSessionStore(new Redis({ lazyConnect: true })))
expectType<Promise<SessionRecord | null>>(new RedisSessionStore(new Redis({ lazyConnect: true })).read('0123'))
// @ts-expect-error its client is an ioredis client, not a URL (the `redis` option's forms are not all taken)
expectType<SessionStore>(new RedisSessionStore('redis://127.0.0.1'))
// @ts-expect-error the prefix is a string
expectType<SessionStore>(new RedisSessionStore(new Redis({ lazyConnect: true }), { prefix: 1 }))
// @ts-expect-error a refusal is one of six kinds
expectType<ClaimResult>({ ok: false, refusal: 'expired' })
// @ts-expect-error a store of live sessions is no store of records
app.register(reliableWs, { sessionStore: new Map<string, Session>() })
app.register(reliableWs, { resume: { ttlMs: 60_000, maxBufferedMessages: 100, maxBufferedBytes: 65_536 } })
// @ts-expect-error ttlMs is a number
app.register(reliableWs, { resume: { ttlMs: '2m' } })
app.get('/resumable', { websocket: true, config: { reliable: { resume: { ttlMs: 30_000 } } } }, (socket) => {
  const session = socket.session
  expectExact<typeof session, Session | null>(true)
  if (session !== null) {
    expectType<string>(session.id)
    expectType<boolean>(session.resumed)
    expectType<boolean>(session.connected)
    expectType<boolean>(session.send('hi'))
    expectType<boolean>(session.sendJSON({ hi: 1 }))
  }
})
app.wsSessions.get('0123')?.send(Buffer.from('x'), { binary: true })
// From any instance sharing the store: what became of it.
expectType<Promise<SessionSendResult>>(app.wsSessions.send('0123', 'hi'))
expectType<Promise<SessionSendResult>>(app.wsSessions.send('0123', new Uint8Array(2), { binary: true }))
expectType<Promise<SessionSendResult>>(app.wsSessions.sendJSON('0123', { hi: 1 }))
// @ts-expect-error a result is one of five
expectType<SessionSendResult>('dropped')
// A store that posts: both methods, with the notices its listen gives.
const posting: SessionStore = {
  ...store,
  listen: (_instance, notices) => { notices.posted('0123'); notices.asked('0123', 2); return () => {} },
  ask: () => {},
  post: (_id, message) => message.binary ? { holder: '' } : 'full',
  take: async () => [{ data: Buffer.from('x'), binary: true }]
}
app.register(reliableWs, { resume: true, sessionStore: posting })
expectType<Promise<PostResult>>(new RedisSessionStore(new Redis({ lazyConnect: true })).post('0123', { data: 'x', binary: false }, 10, Infinity))
expectExact<typeof app.wsStats.sessions, SessionStats>(true)
app.get('/schema', { websocket: true, config: { reliable: { messageSchema: { type: 'object' } } } }, () => {})
// @ts-expect-error json is a boolean
app.get('/bad', { websocket: true, config: { reliable: { json: 'yes' } } }, () => {})

const stats = app.wsStats
expectExact<typeof stats, WsStats>(true)
expectType<number>(stats.connections.active)
expectExact<typeof stats.heartbeat.latencyMs.p99, number | null>(true)
expectExact<(typeof stats.routes)[string], RouteStats>(true)
expectType<boolean>(stats.draining)
expectType<number | undefined>(stats.closeCauses.heartbeat)
// @ts-expect-error causes are those of onDisconnect
expectType<number | undefined>(stats.closeCauses.timeout)
expectExact<typeof stats.limits, LimitStats>(true)
expectExact<keyof LimitStats, 'originRejected' | 'maxConnectionsRejected' | 'perIpRejected' | 'payloadTooLarge' | 'rateLimited' | 'handshakeTimeouts' | 'idleTimeouts' | 'protocolErrors' | 'pingFloods' | 'fragmentTimeouts'>(true)
// @ts-expect-error wsStats is read-only
app.wsStats = stats

const reply: InvalidMessageReply = { type: 'error', message: 'Invalid message' }
expectType<InvalidMessageReply>(reply)

// Unknown keys: the options of the plugin are checked key by key, at any depth.
// @ts-expect-error heartbeet is not an option
app.register(reliableWs, { heartbeet: false })
// @ts-expect-error intervalMS is not a heartbeat option
app.register(reliableWs, { heartbeat: { intervalMS: 10 } })
// @ts-expect-error maxConection is not a limit
app.register(reliableWs, { limits: { maxConection: 10 } })
// Fastify infers a route's `config` from the object given (unknown keys included): `satisfies` checks config.reliable.
// @ts-expect-error heartbeet is not a route option
app.get('/typo', { websocket: true, config: { reliable: { heartbeet: false } satisfies RouteReliableOptions } }, () => {})
app.get('/checked', { websocket: true, config: { reliable: { json: true } satisfies RouteReliableOptions } }, (socket) => {
  expectType<SocketExtensions>(socket)
  expectType<WebSocket>(socket)
})
// @ts-expect-error route limits are checked too
expectType<RouteReliableOptions>({ limits: { idleTimeout: 1000 } })

// The client takes ws's class and the browser's as they are.
expectType<ReliableWebSocket>(new ReliableWebSocket('ws://127.0.0.1:9/', { WebSocket: WsClass }))
expectType<ReliableWebSocket>(new ReliableWebSocket('ws://127.0.0.1:9/', { WebSocket: globalThis.WebSocket }))
// @ts-expect-error not a WebSocket class
expectType<ReliableWebSocket>(new ReliableWebSocket('ws://127.0.0.1:9/', { WebSocket: Map }))
