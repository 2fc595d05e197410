// Topics between instances through a real redis-server (test/helpers/redis.ts): the `redis` option, delivery from one
// instance to the subscribers of another, sessions ended by a gap in Redis, and the health route while Redis is gone.
import t from 'tap'
import Module from 'node:module'
import { once } from 'node:events'
import WebSocket from 'ws'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import reliableWs = require('../../index')
import { ReliableWebSocket } from '../../lib/client'
import type { SessionLostEvent } from '../../lib/client'
import { TOPIC_GAP_CODE } from '../../lib/protocol/protocol'
import { start, waitFor } from '../helpers/helpers'
import type { Options } from '../helpers/helpers'
import { needs, REDIS } from '../helpers/programs'
import { freePort, RedisServer } from '../helpers/redis'

t.setTimeout(120_000)

type Teardown = { teardown: (fn: () => unknown) => void }

/** An instance whose clients subscribe by sending `sub:<topic>` (answered `subscribed`). */
async function instance (t: Teardown, options: Options, reliable: object = {}): Promise<{ app: FastifyInstance, url: (path: string) => string, port: number }> {
  const server = await start({ logging: { connections: false }, ...options }, (app) => {
    app.get('/t', { websocket: true, config: { reliable } }, (socket) => {
      socket.on('message', (data: Buffer) => {
        const text = data.toString()
        if (text.startsWith('sub:')) {
          socket.subscribe(text.slice(4))
          socket.send('subscribed')
        }
      })
    })
  })
  t.teardown(() => server.app.close())
  return server
}

async function subscriber (url: string, topic: string): Promise<{ ws: WebSocket, received: string[] }> {
  const ws = new WebSocket(url)
  const received: string[] = []
  ws.on('message', (data) => received.push(data.toString()))
  await once(ws, 'open')
  ws.send(`sub:${topic}`)
  await waitFor(() => received.length === 1, 3000, 'the subscription')
  received.length = 0
  return { ws, received }
}

/** The project's client with fast retries, collecting what it receives, the sessions it lost and its close codes. */
function reliableClient (t: Teardown, url: string): { ws: ReliableWebSocket, received: string[], lost: SessionLostEvent[], codes: number[] } {
  const ws = new ReliableWebSocket(url, { WebSocket, backoff: { initialDelayMs: 5, maxDelayMs: 20, slowAfter: Infinity } })
  t.teardown(() => ws.close())
  const received: string[] = []
  const lost: SessionLostEvent[] = []
  const codes: number[] = []
  ws.addEventListener('message', (event) => received.push(String(event.data)))
  ws.addEventListener('sessionlost', (event) => lost.push(event))
  ws.addEventListener('close', (event) => codes.push((event as unknown as { code: number }).code))
  return { ws, received, lost, codes }
}

async function subscribed (client: ReturnType<typeof reliableClient>, topic: string): Promise<void> {
  await once(client.ws as any, 'open')
  client.ws.send(`sub:${topic}`)
  await waitFor(() => client.received.length === 1, 3000, 'the subscription')
  client.received.length = 0
}

const numbered = (n: number, from = 1): string[] => Array.from({ length: n }, (_, i) => `m${i + from}`)

t.test('the redis option, 3 instances: a publish on one instance reaches the subscribers of every instance, each once, in order', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const options = { redis: redis.url, topics: { keyPrefix: 'chat-app' } }
  const a = await instance(t, options)
  const b = await instance(t, options)
  const c = await instance(t, options)
  const onA = await subscriber(a.url('/t'), 'news')
  const onB = await subscriber(b.url('/t'), 'news')
  const onC = await subscriber(c.url('/t'), 'news')
  const elsewhere = await subscriber(b.url('/t'), 'sport')
  t.teardown(() => { for (const { ws } of [onA, onB, onC, elsewhere]) ws.close() })

  const offsets: number[] = []
  for (let i = 1; i <= 500; i++) offsets.push((await b.app.wsPublish('news', `m${i}`)).offset)
  t.same(offsets, Array.from({ length: 500 }, (_, i) => i + 1), 'Redis numbers each topic\'s messages')
  await waitFor(() => [onA, onB, onC].every(({ received }) => received.length >= 500), 10_000, 'every instance')
  t.same(onA.received, numbered(500), 'another instance\'s subscriber: every message once, in order')
  t.same(onC.received, numbered(500), 'and the third\'s')
  t.same(onB.received, numbered(500), 'the publishing instance\'s subscriber too: through Redis, not beside it')
  t.same(elsewhere.received, [], 'only subscribers of the topic')
  t.match(a.app.wsStats.topics, { topics: 1, subscriptions: 1, published: 0, delivered: 500 })
  t.match(b.app.wsStats.topics, { topics: 2, subscriptions: 2, published: 500, delivered: 500 })
  t.match(a.app.wsStats.broker, { state: 'up' })
  const channels = (await redis.client().pubsub('CHANNELS', '*')) as string[]
  // Beside the probes, each instance listens on a channel of its own for its sessions (the redis option keeps them).
  t.same(channels.filter((channel) => !channel.includes(':probe:') && !channel.startsWith('chat-app:i:')).sort(), ['chat-app:{news}:channel', 'chat-app:{sport}:channel'],
    'Redis carries only the topics instances have subscribers of, under topics.keyPrefix')
  t.equal(channels.filter((channel) => channel.startsWith('chat-app:i:')).length, 3, 'and a channel per instance for its sessions, under it too')
})

t.test('Redis flushed: a session subscribed to the topic ends with 4801 and its client reports sessionlost', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const a = await instance(t, { redis: redis.url, resume: true })
  const b = await instance(t, { redis: redis.url })
  const { ws, received, lost, codes } = reliableClient(t, a.url('/t'))
  await subscribed({ ws, received, lost, codes }, 'prices')
  for (let i = 1; i <= 5; i++) await b.app.wsPublish('prices', `m${i}`)
  await waitFor(() => received.length === 5, 5000, 'live messages')

  // The topic's history and its epoch are gone: instance A can no longer tell what it missed.
  await redis.client().flushall()
  await b.app.wsPublish('prices', 'after the flush')
  await waitFor(() => lost.length === 1, 5000, 'sessionlost')
  t.same(codes, [TOPIC_GAP_CODE])
  t.same(received, numbered(5), 'nothing of the new epoch reached the ended session')
  t.match(a.app.wsStats.sessions, { topicGaps: 1 })
  t.ok(a.app.wsStats.topics.gaps >= 1)
})

t.test('Redis restarted while publishing: each session either has every message, once, in order, or is ended and told', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const a = await instance(t, { redis: redis.url, resume: true, topics: { probeIntervalMs: 50 } })
  const b = await instance(t, { redis: redis.url, topics: { probeIntervalMs: 50 } })
  const clients: Array<ReturnType<typeof reliableClient>> = []
  for (let i = 0; i < 5; i++) {
    // One at a time: a client already open would never see the 'open' awaited.
    clients.push(reliableClient(t, a.url('/t')))
    await subscribed(clients[i], 'ticks')
  }

  // Publishes go on through the restart; those refused while Redis is away are not counted as sent.
  const sent: string[] = []
  let publishing = true
  const publisher = (async () => {
    for (let i = 1; publishing; i++) {
      try {
        await b.app.wsPublish('ticks', `m${i}`)
        sent.push(`m${i}`)
      } catch (err) {
        if ((err as { code?: string }).code !== 'FST_RELIABLE_WS_BROKER_UNAVAILABLE') throw err
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
    }
  })()
  await waitFor(() => sent.length >= 50, 5000, 'publishes before the restart')
  await redis.stop('SIGKILL')
  await redis.restart()
  await waitFor(() => a.app.wsStats.broker.state === 'up' && b.app.wsStats.broker.state === 'up', 10_000, 'both brokers up again')
  const before = sent.length
  await waitFor(() => sent.length >= before + 50, 10_000, 'publishes after the restart')
  publishing = false
  await publisher

  // Redis came back empty: the topic's epoch changed, and what A's sessions were promised cannot be made up.
  await waitFor(() => clients.every(({ lost }) => lost.length === 1), 10_000, 'every session told')
  for (const { received, codes } of clients) {
    t.same(codes.slice(0, 1), [TOPIC_GAP_CODE], 'ended with 4801')
    t.same(received, sent.slice(0, received.length), 'what it had was every message from the first, once, in order')
  }
  t.equal(a.app.wsStats.sessions.topicGaps, clients.length, 'each ended session counted')
})

t.test('Redis killed: publishes are refused within publishTimeoutMs, the health route answers 503; both recover', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const a = await instance(t, { redis: redis.url, health: true, topics: { publishTimeoutMs: 300, probeIntervalMs: 50 } })
  const health = async (): Promise<{ status: number, body: { broker?: { state: string } } }> => {
    const response = await a.app.inject('/health/ws')
    return { status: response.statusCode, body: response.json() }
  }
  t.match(await health(), { status: 200 })

  await redis.stop('SIGKILL')
  const began = Date.now()
  await t.rejects(a.app.wsPublish('news', 'lost'), { code: 'FST_RELIABLE_WS_BROKER_UNAVAILABLE', statusCode: 503 })
  t.ok(Date.now() - began < 300 + 2000, 'refused within the bound, not buffered')
  await waitFor(() => a.app.wsStats.broker.state !== 'up', 5000, 'the broker to be down')
  const down = await health()
  t.equal(down.status, 503, 'unhealthy while the broker is down')
  t.not(down.body.broker?.state, 'up')

  await redis.restart()
  await waitFor(() => a.app.wsStats.broker.state === 'up', 10_000, 'the broker to be up again')
  t.match(await health(), { status: 200 })
  t.match(await a.app.wsPublish('news', 'back'), { offset: 1 })
})

t.test('the application\'s client is duplicated, never closed; a Redis that cannot be reached fails ready()', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const client = redis.client()
  const app = Fastify()
  await app.register(reliableWs, { redis: client, logging: { connections: false } })
  await app.ready()
  t.equal(app.wsStats.broker.state, 'up')
  await app.close()
  t.equal(client.status, 'ready', 'the application\'s own connection is left open')
  t.equal(await client.ping(), 'PONG')

  const nowhere = Fastify()
  await nowhere.register(reliableWs, { redis: `redis://127.0.0.1:${await freePort()}` })
  await t.rejects(async () => { await nowhere.ready() }, { code: 'ECONNREFUSED' }, 'an instance does not start without its broker')
  await nowhere.close()
})

t.test('the redis option and the broker\'s topics options are checked at registration', async (t) => {
  for (const [options, field] of [
    [{ redis: 42 }, 'redis'],
    [{ redis: null }, 'redis'],
    [{ redis: 'http://127.0.0.1:6379' }, 'redis'],
    [{ topics: { keyPrefix: 'a{b}' } }, 'topics.keyPrefix'],
    [{ topics: { keyPrefix: '' } }, 'topics.keyPrefix'],
    [{ topics: { publishTimeoutMs: 0 } }, 'topics.publishTimeoutMs'],
    [{ topics: { probeIntervalMs: 1 } }, 'topics.probeIntervalMs']
  ] as Array<[object, string]>) {
    const app = Fastify()
    await t.rejects(async () => { await app.register(reliableWs, options as Options).ready() }, { code: 'FST_RELIABLE_WS_INVALID_OPTION', message: new RegExp(field.replace('.', '\\.')) }, field)
  }
  // Only the form is checked at registration: nothing connects before ready().
  const app = Fastify()
  await app.register(reliableWs, { redis: { host: '127.0.0.1', port: 1, lazyConnect: true } })
  t.equal(app.wsStats.broker.state, 'down', 'no broker state before ready()')
  await app.close()
})

t.test('without ioredis installed: a URL or ioredis options fail registration with a coded error; a client needs none', async (t) => {
  // As an application without the optional peer sees it: ioredis cannot be resolved.
  const modules = Module as unknown as { _resolveFilename: (request: string, ...rest: unknown[]) => string }
  const resolve = modules._resolveFilename
  modules._resolveFilename = function (request, ...rest) {
    if (request === 'ioredis') throw Object.assign(new Error("Cannot find module 'ioredis'"), { code: 'MODULE_NOT_FOUND' })
    return resolve.call(this, request, ...rest)
  }
  t.teardown(() => { modules._resolveFilename = resolve })
  for (const redis of ['redis://127.0.0.1:6379', { host: '127.0.0.1' }]) {
    const app = Fastify()
    await t.rejects(async () => { await app.register(reliableWs, { redis }).ready() },
      { code: 'FST_RELIABLE_WS_REDIS_MISSING', message: /npm install ioredis/ })
  }
  const client = { duplicate: () => { throw new Error('not connected in this test') } }
  const app = Fastify()
  await t.rejects(async () => { await app.register(reliableWs, { redis: client }).ready() }, { message: 'not connected in this test' },
    'a client is duplicated without loading ioredis')
})

t.test('the broker over Redis logs each change once: up at start; down with its cause, then up again', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const lines: Array<{ level: number, msg: string, err?: { message: string } }> = []
  const stream = { write: (line: string) => { lines.push(JSON.parse(line)) } }
  const app = Fastify({ logger: { level: 'info', stream } })
  await app.register(reliableWs, { redis: redis.url, logging: { connections: false }, topics: { probeIntervalMs: 50 } })
  t.teardown(() => app.close())
  await app.ready()
  const told = (): string[] => lines.filter(({ msg }) => msg.startsWith('topic broker')).map(({ msg }) => msg)
  t.same(told(), ['topic broker up'])
  await redis.stop('SIGKILL')
  await waitFor(() => app.wsStats.broker.state !== 'up', 5000, 'the broker to be down')
  await redis.restart()
  await waitFor(() => app.wsStats.broker.state === 'up', 10_000, 'the broker to be up again')
  t.same(told(), [
    'topic broker up',
    'topic broker: Redis is unreachable or not delivering; publishes are refused until it is back',
    'topic broker not up: publishes are refused',
    'topic broker up'
  ])
  t.match(lines.find(({ msg }) => msg.startsWith('topic broker: Redis is unreachable')), { level: 40, err: { message: /connection to Redis closed|ECONNRESET/ } }, 'the cause named')
})
