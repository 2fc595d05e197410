import t from 'tap'
import Fastify from 'fastify'
import fastifyWebsocket from '@fastify/websocket'
import reliableWs = require('../../index')
import { bootWith } from '../helpers/helpers'
import { MemorySessionStore } from '../../lib/sessions/session-store'

const CODE = 'FST_RELIABLE_WS_INVALID_OPTION'

const badPluginOptions: Array<[string, unknown, RegExp]> = [
  ['negative interval', { heartbeat: { intervalMs: -1 } }, /"heartbeat\.intervalMs".*got -1/],
  ['zero interval', { heartbeat: { intervalMs: 0 } }, /"heartbeat\.intervalMs"/],
  ['non-numeric interval', { heartbeat: { intervalMs: '30s' } }, /"heartbeat\.intervalMs".*got "30s"/],
  ['NaN interval', { heartbeat: { intervalMs: NaN } }, /"heartbeat\.intervalMs"/],
  ['timeout above interval', { heartbeat: { intervalMs: 100, timeoutMs: 200 } }, /"heartbeat\.timeoutMs".*must not exceed intervalMs/],
  ['heartbeat not an object', { heartbeat: true }, /"heartbeat": must be an object/],
  ['misspelt heartbeat field', { heartbeat: { interval: 100 } }, /"heartbeat\.interval": unknown option/],
  ['unknown onLimit', { backpressure: { onLimit: 'block' } }, /"backpressure\.onLimit".*'drop' or 'close'/],
  ['lowWaterMark equal to highWaterMark', { backpressure: { highWaterMark: 100, lowWaterMark: 100 } }, /"backpressure\.lowWaterMark".*below highWaterMark/],
  ['lowWaterMark above the default highWaterMark', { backpressure: { lowWaterMark: 2_000_000 } }, /"backpressure\.lowWaterMark"/],
  ['negative highWaterMark', { backpressure: { highWaterMark: -5 } }, /"backpressure\.highWaterMark"/],
  ['onConnect not a function', { onConnect: 'hello' }, /"onConnect": must be a function/],
  ['onDisconnect not a function', { onDisconnect: 42 }, /"onDisconnect": must be a function/],
  ['reserved close code', { shutdown: { closeCode: 1005 } }, /"shutdown\.closeCode"/],
  ['close code out of range', { shutdown: { closeCode: 999 } }, /"shutdown\.closeCode"/],
  ['close reason over 123 bytes', { shutdown: { reason: 'x'.repeat(124) } }, /"shutdown\.reason"/],
  ['negative shutdown timeout', { shutdown: { timeoutMs: -1 } }, /"shutdown\.timeoutMs"/],
  ['relative health path', { health: { path: 'health' } }, /"health\.path"/],
  ['a preClose of its own', { websocket: { preClose: () => {} } }, /"websocket\.preClose"/],
  ['client tracking off', { websocket: { options: { clientTracking: false } } }, /"websocket\.options\.clientTracking"/],
  ['non-numeric maxPayload', { websocket: { options: { maxPayload: 'big' } } }, /"websocket\.options\.maxPayload"/],
  ['websocket not an object', { websocket: 'ws' }, /"websocket": must be an object/],
  ['websocket.options not an object', { websocket: { options: [] } }, /"websocket\.options": must be an object/],
  ['errorHandler not a function', { websocket: { errorHandler: 'log' } }, /"websocket\.errorHandler"/],
  ['unknown top-level option', { heartbeats: false }, /"options\.heartbeats": unknown option/],
  ['limits not an object', { limits: 5 }, /"limits": must be an object/],
  ['misspelt limit', { limits: { maxConnection: 5 } }, /"limits\.maxConnection": unknown option/],
  ['zero maxConnections', { limits: { maxConnections: 0 } }, /"limits\.maxConnections": must be a positive integer or Infinity/],
  ['fractional maxConnectionsPerIp', { limits: { maxConnectionsPerIp: 1.5 } }, /"limits\.maxConnectionsPerIp".*got 1\.5/],
  ['negative messagesPerSecond', { limits: { messagesPerSecond: -1 } }, /"limits\.messagesPerSecond": must be a positive number/],
  ['NaN burst', { limits: { burst: NaN } }, /"limits\.burst"/],
  ['unknown onRateLimit', { limits: { onRateLimit: 'block' } }, /"limits\.onRateLimit".*'drop' or 'close'/],
  ['non-numeric idle timeout', { limits: { idleTimeoutMs: '1m' } }, /"limits\.idleTimeoutMs".*got "1m"/],
  ['zero handshake timeout', { limits: { handshakeTimeoutMs: 0 } }, /"limits\.handshakeTimeoutMs"/],
  ['a fractional session cap', { limits: { maxSessions: 1.5 } }, /"limits\.maxSessions": must be a positive integer/],
  ['a zero session budget', { limits: { sessionBufferBytes: 0 } }, /"limits\.sessionBufferBytes"/],
  ['a zero cap on sessions being settled', { limits: { maxPendingSessions: 0 } }, /"limits\.maxPendingSessions": must be a positive integer/],
  ['maxPayload of Infinity', { limits: { maxPayload: Infinity } }, /"limits\.maxPayload": must be an integer from 1 to 2147483647/],
  ['maxPayload past what ws can hold', { limits: { maxPayload: 2 ** 32 } }, /"limits\.maxPayload"/],
  ['maxPayload set twice', { limits: { maxPayload: 1024 }, websocket: { options: { maxPayload: 1024 } } }, /"websocket\.options\.maxPayload": set the limit once, as limits\.maxPayload/],
  ['allowedOrigins not a list', { allowedOrigins: 'https://example.com' }, /"allowedOrigins": must be an array of origins or a function/],
  ['an origin with a trailing slash', { allowedOrigins: ['https://example.com/'] }, /"allowedOrigins": "https:\/\/example\.com\/" is not an origin/],
  ['an origin in capitals', { allowedOrigins: ['https://Example.com'] }, /"allowedOrigins"/],
  ['an origin with a path', { allowedOrigins: ['https://example.com/app'] }, /"allowedOrigins"/],
  ['the null origin', { allowedOrigins: ['null'] }, /"allowedOrigins": "null" is not an origin/],
  ['a host without a scheme', { allowedOrigins: ['example.com'] }, /"allowedOrigins"/],
  ['an origin that is not a string', { allowedOrigins: [42] }, /"allowedOrigins": 42 is not an origin/],
  ['metrics not an object', { metrics: 'prometheus' }, /"metrics": must be an object/],
  ['misspelt metrics field', { metrics: { registery: {} } }, /"metrics\.registery": unknown option/],
  ['a registry that is not one', { metrics: { registry: {} } }, /"metrics\.registry": must be a prom-client Registry/],
  ['a registry that is not an object', { metrics: { registry: 'default' } }, /"metrics\.registry"/],
  ['a prefix Prometheus refuses', { metrics: { prefix: 'ws-' } }, /"metrics\.prefix".*got "ws-"/],
  ['a prefix that is not a string', { metrics: { prefix: 5 } }, /"metrics\.prefix"/],
  ['logging not an object', { logging: 'info' }, /"logging": must be an object/],
  ['misspelt logging field', { logging: { connection: 'info' } }, /"logging\.connection": unknown option/],
  ['an unknown log level', { logging: { connections: 'verbose' } }, /"logging\.connections": must be a log level.*got "verbose"/],
  ['connection logging turned on with true', { logging: { connections: true } }, /"logging\.connections"/],
  ['a fractional warning rate', { logging: { warningsPerSecond: 0.5 } }, /"logging\.warningsPerSecond": must be an integer >= 0/],
  ['a negative warning rate', { logging: { warningsPerSecond: -1 } }, /"logging\.warningsPerSecond"/],
  ['negative reconnect window', { shutdown: { reconnectWindowMs: -1 } }, /"shutdown\.reconnectWindowMs"/],
  ['resume not an object', { resume: 'yes' }, /"resume": must be an object/],
  ['misspelt resume field', { resume: { ttl: 5 } }, /"resume\.ttl": unknown option/],
  ['zero session ttl', { resume: { ttlMs: 0 } }, /"resume\.ttlMs"/],
  ['fractional session buffer', { resume: { maxBufferedMessages: 1.5 } }, /"resume\.maxBufferedMessages"/],
  ['zero session bytes', { resume: { maxBufferedBytes: 0 } }, /"resume\.maxBufferedBytes"/],
  ['a session store without read', { sessionStore: { create () {}, claim () {}, write () {}, release () {}, end () {} } }, /"sessionStore": must be an object with create, claim, write, release, end, read methods \(read is missing\)/],
  ['a session store with listen and no ask', { sessionStore: { create () {}, claim () {}, write () {}, release () {}, end () {}, read () {}, listen () {} } }, /"sessionStore": must have both listen and ask methods, or neither/],
  ['a session store with ask and no listen', { sessionStore: { create () {}, claim () {}, write () {}, release () {}, end () {}, read () {}, ask () {} } }, /"sessionStore": must have both listen and ask methods, or neither/],
  ['a session store with post and no take', { sessionStore: { create () {}, claim () {}, write () {}, release () {}, end () {}, read () {}, post () {} } }, /"sessionStore": must have both post and take methods, or neither/],
  ['a session store with take and no post', { sessionStore: { create () {}, claim () {}, write () {}, release () {}, end () {}, read () {}, listen () {}, ask () {}, take () {} } }, /"sessionStore": must have both post and take methods, or neither/],
  ['durable sessions in this process\'s memory only', { resume: { durable: true } }, /"resume\.durable": needs a sessionStore shared by the instances, with a keep method/],
  ['durable sessions kept in memory beside the redis option', { resume: { durable: true }, redis: 'redis://127.0.0.1:1', sessionStore: null }, /"resume\.durable": needs a sessionStore shared by the instances/],
  ['durable sessions on a store without keep', { resume: { durable: true }, sessionStore: { create () {}, claim () {}, write () {}, release () {}, end () {}, read () {} } }, /"resume\.durable": needs a sessionStore/],
  ['durable not a boolean', { resume: { durable: 1 } }, /"resume\.durable": must be a boolean/],
  ['a fractional receiveWindow', { resume: { receiveWindow: 1.5 } }, /"resume\.receiveWindow": must be an integer from 1 to 65536/],
  ['a zero receiveWindow', { resume: { receiveWindow: 0 } }, /"resume\.receiveWindow"/],
  ['a session store of the former kind', { sessionStore: new Map() }, /"sessionStore".*create is missing/],
  ['a session store that is not an object', { sessionStore: 'redis' }, /"sessionStore".*create is missing/]
]

for (const [name, options, message] of badPluginOptions) {
  t.test(`register rejects: ${name}`, async (t) => {
    await t.rejects(bootWith(options as any), { code: CODE, message })
  })
}

const badRouteConfigs: Array<[string, unknown, RegExp]> = [
  ['timeout above the route interval', { heartbeat: { intervalMs: 50, timeoutMs: 60 } }, /"config\.reliable of \/ws\.heartbeat\.timeoutMs"/],
  ['unknown field', { jsonMode: true }, /"config\.reliable of \/ws\.jsonMode": unknown option/],
  ['json not a boolean', { json: 'yes' }, /"config\.reliable of \/ws\.json"/],
  ['schema not an object', { messageSchema: 'object' }, /"config\.reliable of \/ws\.messageSchema"/],
  ['route highWaterMark under the plugin lowWaterMark', { backpressure: { highWaterMark: 1000 } }, /"config\.reliable of \/ws\.backpressure\.lowWaterMark"/],
  ['reliable not an object', 'yes', /"config\.reliable of \/ws": must be an object/],
  ['a handshake timeout per route', { limits: { handshakeTimeoutMs: 100 } }, /"config\.reliable of \/ws\.limits\.handshakeTimeoutMs": it applies before any route is known/],
  ['a session cap per route', { limits: { maxSessionsPerIp: 5 } }, /"config\.reliable of \/ws\.limits\.maxSessionsPerIp": it bounds the sessions of every route together/],
  ['a cap on sessions being settled per route', { limits: { maxPendingSessions: 5 } }, /"config\.reliable of \/ws\.limits\.maxPendingSessions": it bounds the sessions of every route together/],
  ['an owner that is not a function', { resume: { owner: 'alice' } }, /"config\.reliable of \/ws\.resume\.owner": must be a function/],
  ['durable sessions on a route, the store in memory', { resume: { durable: true } }, /"config\.reliable of \/ws\.resume\.durable": needs a sessionStore shared by the instances/],
  ['a route maxPayload above the plugin one', { limits: { maxPayload: 2_000_000 } }, /"config\.reliable of \/ws\.limits\.maxPayload": a route may lower the plugin's maxPayload, not raise it \(2000000 > 1048576\)/],
  ['an unknown route limit', { limits: { maxConections: 1 } }, /"config\.reliable of \/ws\.limits\.maxConections": unknown option/],
  ['route limits not an object', { limits: [] }, /"config\.reliable of \/ws\.limits": must be an object/],
  ['a bad route origin', { allowedOrigins: ['*'] }, /"config\.reliable of \/ws\.allowedOrigins": "\*" is not an origin/]
]

for (const [name, reliable, message] of badRouteConfigs) {
  t.test(`a websocket route is rejected: ${name}`, async (t) => {
    await t.rejects(bootWith({}, (app) => {
      app.get('/ws', { websocket: true, config: { reliable: reliable as any } }, () => {})
    }), { code: CODE, message })
  })
}

t.test('registering next to @fastify/websocket fails with a coded error saying what to do', async (t) => {
  const app = Fastify()
  await app.register(fastifyWebsocket)
  await t.rejects(async () => { await app.register(reliableWs) }, {
    code: 'FST_RELIABLE_WS_ALREADY_REGISTERED',
    message: /register fastify-reliable-ws alone and pass the @fastify\/websocket options as its `websocket` option/
  })
  await app.close()
})

t.test('good options register', async (t) => {
  await t.resolves(bootWith({
    heartbeat: { intervalMs: 1000, timeoutMs: 500 },
    backpressure: { highWaterMark: 2048, lowWaterMark: 0, onLimit: 'close' },
    shutdown: { closeCode: 4000, reason: 'bye', timeoutMs: 0, reconnectWindowMs: 0 },
    resume: { ttlMs: 1000, maxBufferedMessages: Infinity, maxBufferedBytes: 1024, durable: true, receiveWindow: 1 },
    sessionStore: new MemorySessionStore(),
    health: { path: '/status' },
    websocket: { options: { maxPayload: 1024 } },
    onConnect () {},
    onDisconnect () {},
    allowedOrigins: ['https://example.com', 'http://localhost:3000'],
    limits: {
      maxConnections: 10_000,
      maxConnectionsPerIp: Infinity,
      messagesPerSecond: 0.5,
      burst: 1,
      onRateLimit: 'drop',
      handshakeTimeoutMs: 5_000,
      idleTimeoutMs: 60_000
    }
  }))
  await t.resolves(bootWith({ limits: { maxPayload: 64 * 1024 * 1024 } }, (app) => {
    app.get('/ws', { websocket: true, config: { reliable: { allowedOrigins: () => true, limits: { maxPayload: 1024 } } } }, () => {})
  }), 'the plugin may raise maxPayload; a route may lower it')
  await t.resolves(bootWith({ heartbeat: false, health: false }))
  await t.resolves(bootWith({ metrics: false, logging: { connections: false, warningsPerSecond: 0 } }))
  await t.resolves(bootWith({ metrics: { prefix: '' }, logging: { connections: 'debug', warningsPerSecond: 100 } }), 'an empty prefix is allowed')
  await t.resolves(bootWith({ resume: true }, (app) => {
    app.get('/a', { websocket: true, config: { reliable: { resume: false } } }, () => {})
    app.get('/b', { websocket: true, config: { reliable: { resume: { ttlMs: 5 } } } }, () => {})
    app.get('/c', { websocket: true, config: { reliable: { resume: true } } }, () => {})
  }), 'routes may turn sessions off, tune them, or take the plugin\'s')
})

t.test('health: true and health: {} serve the default path', async (t) => {
  for (const health of [true, {}]) {
    const app = Fastify()
    await app.register(reliableWs, { health: health as any })
    const res = await app.inject('/health/ws')
    t.equal(res.statusCode, 200)
    t.equal(res.json().status, 'ok')
    await app.close()
  }
})

t.test('the plugin is exported as a function with default and named aliases', async (t) => {
  t.type(reliableWs, 'function')
  t.equal((reliableWs as any).default, reliableWs)
  t.equal((reliableWs as any).fastifyReliableWs, reliableWs)
})
