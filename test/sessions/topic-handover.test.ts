// Sessions subscribed to topics, handed over between instances that share Redis (for topics and for sessions): the next
// holder subscribes the session again from where it stood, reads what came after from the topic's history while what
// arrives live waits, and the client gets every message of the topic once, in order; where that cannot be, the
// session ends explicitly (4801, or 4800 past its limits), never with a silent gap.
import t from 'tap'
import type { Test } from 'tap'
import { once } from 'node:events'
import WebSocket from 'ws'
import type { FastifyInstance } from 'fastify'
import type { Redis } from 'ioredis'
import type fastifyReliableWs = require('../../types/index')
import { RedisSessionStore } from '../../lib/sessions/redis-session-store'
import { MemorySessionStore } from '../../lib/sessions/session-store'
import { resumeToken } from '../../lib/protocol/protocol'
import { sleep, start, waitFor } from '../helpers/helpers'
import { topicKeys } from '../../lib/topics/redis-scripts'
import { SLICE } from '../../lib/topics/fan-out'
import type { Options } from '../helpers/helpers'
import { needs, REDIS } from '../helpers/programs'
import { RedisServer } from '../helpers/redis'
import { closed, moveTo, Peer } from '../helpers/session-peer'
import { followed } from '../helpers/topic-follower'

type Socket = WebSocket & fastifyReliableWs.SocketExtensions

interface Instance {
  app: FastifyInstance
  port: number
  url: (path: string) => string
  /** Whether the handler saw each connection's session resumed. */
  resumed: boolean[]
  logs: Array<{ level: number, msg: string }>
}

const QUICK_CLOSE = { reconnectWindowMs: 20, timeoutMs: 2000 }

/** An instance whose route `/s` has sessions and subscribes each connection's session to `news` (`onSocket` may change that). */
async function instance (t: Test, options: Options, resume: object = {}, onSocket: (socket: Socket) => void = (socket) => { socket.subscribe('news') }): Promise<Instance> {
  const self: Partial<Instance> = { resumed: [], logs: [] }
  const stream = { write: (line: string) => { self.logs!.push(JSON.parse(line)) } }
  const server = await start({ heartbeat: false, logging: { connections: false }, shutdown: QUICK_CLOSE, ...options }, (app) => {
    app.get('/s', { websocket: true, config: { reliable: { resume: { ttlMs: 60_000, ...resume } } } }, (socket) => {
      self.resumed!.push(socket.session?.resumed ?? false)
      onSocket(socket)
    })
  }, { logger: { level: 'warn', stream } })
  t.teardown(() => server.app.close())
  return Object.assign(self, server) as Instance
}

// Every message of the longest test stays in the topic's history.
const HISTORY = { historySize: 20_000 }

/** An instance on `redis` for both topics and sessions. */
async function onRedis (t: Test, redis: RedisServer, resume: object = {}, onSocket?: (socket: Socket) => void): Promise<Instance> {
  return await instance(t, { redis: redis.url, sessionStore: new RedisSessionStore(redis.client()), topics: HISTORY }, resume, onSocket)
}

/** An instance that publishes, its history as long as the others'. */
async function publisherOn (t: Test, redis: RedisServer): Promise<Instance> {
  return await instance(t, { redis: redis.url, topics: HISTORY })
}

t.test('rolling restarts while a topic is published to: the session moves with its topic, and the client gets each message once, in order', needs(REDIS), async (t) => {
  const TOTAL = 4000
  const redis = await RedisServer.start(t)
  const publisher = await publisherOn(t, redis)
  let current = await onRedis(t, redis)
  const instances = [current]
  const { proxy, ws, published, check } = await followed(t, publisher, current, TOTAL, 25)
  for (let restart = 0; restart < 4; restart++) {
    await waitFor(() => published.count > (restart + 1) * TOTAL / 6, 10_000, `messages before restart ${restart}`)
    const next = await onRedis(t, redis)
    instances.push(next)
    proxy.target = next.port
    await current.app.close()
    t.match(current.app.wsStats.sessions, { handedOver: 1, handoverFailed: 0 }, `restart ${restart}: handed over`)
    current = next
    await waitFor(() => current.resumed.length === 1 && ws.readyState === ws.OPEN, 10_000, `the resume after restart ${restart}`)
  }
  await check()
  t.same(instances.map((one) => one.resumed), [[false], [true], [true], [true], [true]])
  for (const one of instances) t.match(one.app.wsStats.topics, { gaps: 0 })
  t.match(current.app.wsStats.sessions, { claimedRemote: 1, topicGaps: 0, active: 1 })
  t.equal(current.app.wsTopicStats('news')?.subscribers, 1, 'subscribed on the last instance')
})

t.test('a client moving between two live instances at every dropped connection keeps its topic: each message once, in order', needs(REDIS), async (t) => {
  const TOTAL = 3000
  const redis = await RedisServer.start(t)
  const publisher = await publisherOn(t, redis)
  // A move takes up to 2.25 s (the client is told to come back while the holder hands over): what was published
  // meanwhile is caught up at once.
  const resume = { maxBufferedMessages: 10_000, maxBufferedBytes: 1 << 24 }
  const a = await onRedis(t, redis, resume)
  const b = await onRedis(t, redis, resume)
  const { proxy, ws, published, check } = await followed(t, publisher, a, TOTAL, 2)
  let current = a
  for (let move = 0; move < 4; move++) {
    await waitFor(() => published.count > (move + 1) * TOTAL / 6, 10_000, `messages before move ${move}`)
    current = current === a ? b : a
    await moveTo(proxy, ws, current, `the resume after move ${move}`)
  }
  await check()
  for (const one of [a, b]) t.match(one.app.wsStats.sessions, { handedOver: 2, claimedRemote: 2, topicGaps: 0 })
  t.equal((a.app.wsTopicStats('news')?.subscribers ?? 0) + (b.app.wsTopicStats('news')?.subscribers ?? 0), 1, 'subscribed where it is, only')
})

/**
 * A session of `a` subscribed to `news` that has received `p0` (not acknowledged), then handed over (`a` closed), and
 * `p1`… `p<count>` published meanwhile.
 */
async function handedOver (t: Test, a: Instance, publisher: FastifyInstance, count: number): Promise<{ session: string, token: string }> {
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  await waitFor(() => a.app.wsTopicStats('news')?.subscribers === 1, 3000, 'the subscription')
  await publisher.wsPublish('news', 'p0')
  await waitFor(() => peer.data().length === 1, 3000, 'p0')
  await a.app.close()
  t.equal(a.app.wsStats.sessions.handedOver, 1)
  for (let i = 1; i <= count; i++) await publisher.wsPublish('news', `p${i}`)
  return { session: welcome.session, token: welcome.token }
}

/** A client of `instance` without the subprotocol (its socket subscribes, without a session), noting what it receives. */
async function plain (instance: Instance): Promise<string[]> {
  const ws = new WebSocket(instance.url('/s'))
  const received: string[] = []
  ws.on('message', (data: Buffer) => received.push(data.toString()))
  await once(ws, 'open')
  await waitFor(() => instance.app.wsTopicStats('news') !== null, 3000, 'the subscription')
  return received
}

t.test('the topic\'s history trimmed past where the session stood: the next instance ends it with 4801', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const options = { redis: redis.url, sessionStore: new RedisSessionStore(redis.client()), topics: { historySize: 10 } }
  const publisher = await instance(t, { redis: redis.url, topics: { historySize: 10 } })
  const a = await instance(t, options)
  const b = await instance(t, options)
  const { session, token } = await handedOver(t, a, publisher.app, 30)
  const back = new Peer(b.url('/s'), resumeToken(session, token, 0))
  t.match(await back.welcome(), { resumed: true })
  t.match(await closed(back), { code: 4801, reason: 'Topic history lost' })
  t.same(back.data(), ['p0'], 'what it had been sent, then none of what was left: never a gap')
  t.match(b.app.wsStats.sessions, { topicGaps: 1, active: 0 })
  t.equal(b.app.wsTopicStats('news'), null)
})

t.test('what the session missed while it moved outgrows its limits: it ends with 4800 as it catches up', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const publisher = await publisherOn(t, redis)
  const a = await onRedis(t, redis, { maxBufferedMessages: 20 })
  const b = await onRedis(t, redis, { maxBufferedMessages: 20 })
  const { session, token } = await handedOver(t, a, publisher.app, 30)
  const back = new Peer(b.url('/s'), resumeToken(session, token, 0))
  t.match(await closed(back), { code: 4800, reason: 'Session buffer full' })
  t.equal(back.data().length, 20, 'as many as it may keep unacknowledged')
  t.match(b.app.wsStats.sessions, { overflowed: 1, active: 0 })
})

t.test('a handler that leaves the topic as the session arrives: nothing more of it is read or sent', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const publisher = await publisherOn(t, redis)
  const a = await onRedis(t, redis)
  const b = await onRedis(t, redis, {}, (socket) => { t.ok(socket.unsubscribe('news'), 'subscribed when the handler runs') })
  const { session, token } = await handedOver(t, a, publisher.app, 5)
  const back = new Peer(b.url('/s'), resumeToken(session, token, 0))
  t.match(await back.welcome(), { resumed: true })
  await publisher.app.wsPublish('news', 'later')
  await sleep(100)
  t.same(back.data(), ['p0'], 'what it had been sent, nothing more')
  t.equal(b.app.wsTopicStats('news'), null)
  t.match(b.app.wsStats.sessions, { active: 1, topicGaps: 0 })
  back.ws.close()
})

/**
 * `redis` as an ioredis client whose connections the broker opens (duplicates) are noted: once `arm()` is called, the
 * test holds back the reads of a topic's history for sessions moved here until `open()`, `before` Redis reads it or
 * after; `reading` resolves once the first is held back.
 */
function gatedReads (client: Redis, before = false): { client: Redis, arm: () => void, open: () => void, reading: Promise<void>, reads: () => number } {
  let armed = false
  let reads = 0
  let open!: () => void
  let entered!: () => void
  const gate = new Promise<void>((resolve) => { open = resolve })
  const reading = new Promise<void>((resolve) => { entered = resolve })
  const duplicate = client.duplicate.bind(client)
  client.duplicate = (...args: Parameters<Redis['duplicate']>) => {
    const connection = duplicate(...args) as Redis & { defineCommand: Redis['defineCommand'] }
    const define = connection.defineCommand.bind(connection)
    connection.defineCommand = (name, definition) => {
      define(name, definition)
      if (name !== 'reliableWsRead') return
      const c = connection as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>
      const read = c.reliableWsReadBuffer.bind(connection)
      c.reliableWsReadBuffer = async (...args: unknown[]) => {
        // The broker's own reads go on; only those of a topic's history for a session moved here wait.
        if (!armed || new Error().stack?.includes('historyAfter') !== true) return await read(...args)
        reads++
        if (before) {
          entered()
          await gate
          return await read(...args)
        }
        const result = await read(...args)
        entered()
        await gate
        return result
      }
    }
    return connection
  }
  return { client, arm: () => { armed = true }, open, reading, reads: () => reads }
}

t.test('messages that arrive while the session reads its topic\'s history wait for it, and follow it in order', needs(REDIS), async (t) => {
  // The read answered before they arrive (they follow it), or asked after (it has them already: each is passed over).
  for (const before of [false, true]) await t.test(before ? 'read after they arrive' : 'read before they arrive', async (t) => await heldWhileReading(t, before))
})

/**
 * A session of A that kept `p0`, handed over while `p1`… `p<published>` were published, resuming on B, whose read of
 * the topic's history for it is held back (`before` Redis runs it, or after) while `p<published + 1>`…
 * `p<published + arriving>` arrive live at B (where another client listens to the topic already).
 */
async function resumingWhileHeld (t: Test, published: number, arriving: number, { before = false, topics = {}, resume = {} }: { before?: boolean, topics?: object, resume?: object }): Promise<{ publisher: Instance, b: Instance, back: Peer, open: () => void }> {
  const redis = await RedisServer.start(t)
  const publisher = await publisherOn(t, redis)
  const a = await onRedis(t, redis, resume)
  const gated = gatedReads(redis.client(), before)
  const b = await instance(t, { redis: gated.client, sessionStore: new RedisSessionStore(redis.client()), topics }, resume)
  const other = await plain(b)
  await sleep(50)
  gated.arm()
  const { session, token } = await handedOver(t, a, publisher.app, published)
  const back = new Peer(b.url('/s'), resumeToken(session, token, 0))
  await gated.reading
  for (let i = published + 1; i <= published + arriving; i++) await publisher.app.wsPublish('news', `p${i}`)
  await waitFor(() => other.length === published + arriving + 1, 3000, 'the live messages at B')
  return { publisher, b, back, open: gated.open }
}

async function heldWhileReading (t: Test, before: boolean): Promise<void> {
  const { publisher, b, back, open } = await resumingWhileHeld(t, 4, 5, { before })
  t.same(back.data(), ['p0'], 'what it had been sent; the rest held while the history is read')
  open()
  await waitFor(() => back.data().length === 10, 3000, 'every message')
  t.same(back.data(), Array.from({ length: 10 }, (_, i) => `p${i}`), 'the history, then what waited')
  await publisher.app.wsPublish('news', 'p10')
  await waitFor(() => back.data().length === 11, 3000, 'a live one')
  t.equal(back.data()[10], 'p10')
  t.match(b.app.wsStats.sessions, { claimedRemote: 1, topicGaps: 0 })
  back.ws.close()
}

t.test('what waits for a session reading its topic\'s history is bounded: past topics.maxQueuedMessages, or past its own limits, it ends', needs(REDIS), async (t) => {
  for (const [name, topics, resume, code] of [
    ['maxQueuedMessages', { maxQueuedMessages: 3 }, {}, 4801],
    ['maxBufferedMessages', {}, { maxBufferedMessages: 3 }, 4800]
  ] as const) {
    const { b, back, open } = await resumingWhileHeld(t, 0, 5, { topics, resume })
    open()
    t.match(await closed(back), { code }, name)
    t.match(b.app.wsStats, code === 4801 ? { topics: { gaps: 1 }, sessions: { topicGaps: 1 } } : { topics: { gaps: 0 }, sessions: { overflowed: 1 } }, `${name}: counted`)
    t.ok(back.data().length <= 3, `${name}: ${back.data().length} sent`)
  }
})

t.test('Redis does not answer the history read: the session ends with 4801 and a warning; one that ended meanwhile, silently', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  // Sessions in this process's memory, shared by the instances; only the topics in Redis.
  const store = new MemorySessionStore()
  const options = { redis: redis.url, sessionStore: store, topics: { publishTimeoutMs: 200 } }
  const a = await instance(t, options)
  const first = new Peer(a.url('/s'))
  const second = new Peer(a.url('/s'))
  const welcomes = [await first.welcome(), await second.welcome()]
  await waitFor(() => a.app.wsTopicStats('news')?.subscribers === 2, 3000, 'the subscriptions')
  await a.app.close()
  t.equal(a.app.wsStats.sessions.handedOver, 2)
  const b = await instance(t, options)
  const c = await instance(t, options)
  redis.signal('SIGSTOP')
  t.teardown(() => redis.signal('SIGCONT'))
  const back = new Peer(b.url('/s'), resumeToken(welcomes[0].session, welcomes[0].token, 0))
  t.match(await closed(back), { code: 4801 })
  t.ok(b.logs.some((line) => line.msg === 'topic history could not be read for a session handed over'), 'logged')
  t.match(b.app.wsStats.sessions, { topicGaps: 1 })

  const later = new Peer(c.url('/s'), resumeToken(welcomes[1].session, welcomes[1].token, 0))
  await later.welcome()
  // Its session handed over again as the instance closes, while its read waits: the read's failure concerns nobody.
  await c.app.close()
  t.match(c.app.wsStats.sessions, { handedOver: 1, topicGaps: 0 })
  await sleep(300)
  t.notOk(c.logs.some((line) => line.msg === 'topic history could not be read for a session handed over'))
  t.match(await closed(later), { code: 1001 })
})

t.test('where a session stands in a topic is not known yet (the broker was down since it subscribed): not handed over, counted and logged', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const options = { redis: redis.url, sessionStore: new MemorySessionStore(), topics: { publishTimeoutMs: 200 } }
  const a = await instance(t, options)
  redis.signal('SIGSTOP')
  t.teardown(() => redis.signal('SIGCONT'))
  const peer = new Peer(a.url('/s'))
  await peer.welcome()
  await a.app.close()
  t.match(a.app.wsStats.sessions, { handedOver: 0, handoverFailed: 1, active: 0 })
  t.ok(a.logs.some((line) => line.msg.startsWith('session not handed over: where it stands in a topic is not known yet')), 'logged')
  t.match(await closed(peer), { code: 1001 })
})

t.test('a session that subscribes while the topic\'s fan-out is under way stands where that leaves it: a message going out is not its own, one queued is', async (t) => {
  // Sessions in this process's memory, shared by the instances; topics on the in-process broker, which delivers in the
  // publish's turn: past SLICE subscribers a fan-out goes on in the next turn.
  const releases: fastifyReliableWs.SessionHandover[] = []
  const memory = new MemorySessionStore()
  const store = Object.assign(Object.create(memory) as MemorySessionStore, {
    release: (...args: Parameters<MemorySessionStore['release']>) => {
      releases.push(args[3]!)
      return memory.release(...args)
    }
  })
  let sessionSocket: Socket | null = null
  let sockets = 0
  const a = await instance(t, { sessionStore: store }, {}, (socket) => {
    if (socket.session === null) socket.subscribe(sockets++ === 0 ? 'other' : 'news')
    else sessionSocket = socket
  })
  const plainSockets = await Promise.all(Array.from({ length: SLICE + 2 }, async () => {
    const ws = new WebSocket(a.url('/s'))
    await once(ws, 'open')
    return ws
  }))
  t.teardown(() => { for (const ws of plainSockets) ws.terminate() })
  await waitFor(() => a.app.wsTopicStats('news')?.subscribers === SLICE + 1, 5000, 'the subscribers')
  const peer = new Peer(a.url('/s'))
  await peer.welcome()
  // In one turn: the first slice of news's fan-out goes out, other's message waits its turn, and the session subscribes.
  await Promise.all([a.app.wsPublish('news', 'n1'), a.app.wsPublish('other', 'o1'), Promise.resolve().then(() => {
    t.equal(a.app.wsStats.topics.queued, 2, 'both under way')
    sessionSocket!.subscribe('news')
    sessionSocket!.subscribe('other')
  })])
  await waitFor(() => a.app.wsStats.topics.queued === 0, 3000, 'both fan-outs')
  await sleep(50)
  t.same(peer.data(), ['o1'], 'news\'s going out was not its own; other\'s, queued, was')
  await a.app.close()
  t.match(releases, [{ topics: [{ topic: 'news', offset: 1 }, { topic: 'other', offset: 1 }] }], 'where it stood: n1 counted as passed, o1 as kept')
})

t.test('an instance with no room for a handed-over session\'s topics (limits.maxSubscriptions, topics.maxTopics) ends it: 1013 before the welcome', async (t) => {
  const store = new MemorySessionStore()
  const a = await instance(t, { sessionStore: store }, {}, (socket) => {
    socket.subscribe('news')
    socket.subscribe('sport')
  })
  const peers = [new Peer(a.url('/s')), new Peer(a.url('/s'))]
  const welcomes = [await peers[0].welcome(), await peers[1].welcome()]
  await a.app.close()
  t.equal(a.app.wsStats.sessions.handedOver, 2)
  for (const [i, [name, limit]] of ([['limits.maxSubscriptions', { limits: { maxSubscriptions: 1 } }], ['topics.maxTopics', { topics: { maxTopics: 1 } }]] as const).entries()) {
    const b = await instance(t, { sessionStore: store, ...limit })
    const back = new Peer(b.url('/s'), resumeToken(welcomes[i].session, welcomes[i].token, 0))
    t.match(await closed(back), { code: 1013, reason: 'Too many topics' }, name)
    t.same(back.frames, [], 'no welcome')
    t.match(b.app.wsStats.sessions, { rejected: 1, active: 0 })
    t.match(b.app.wsStats.topics, { refused: 1, subscriptions: 0, topics: 0 })
    t.same(b.resumed, [], 'nor the handler')
    t.equal(store.read(welcomes[i].session), null, 'the session ended')
  }
})

t.test('sessions handed over together read their topic\'s history once on the instance they move to, unless something of it arrived in between', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const publisher = await publisherOn(t, redis)
  const a = await onRedis(t, redis)
  const peers = [new Peer(a.url('/s')), new Peer(a.url('/s')), new Peer(a.url('/s'))]
  const welcomes = await Promise.all(peers.map(async (peer) => await peer.welcome()))
  await waitFor(() => a.app.wsTopicStats('news')?.subscribers === 3, 3000, 'the subscriptions')
  await publisher.app.wsPublish('news', 'p0')
  await waitFor(() => peers.every((peer) => peer.data().length === 1), 3000, 'p0')
  await a.app.close()
  t.equal(a.app.wsStats.sessions.handedOver, 3)
  for (let i = 1; i <= 4; i++) await publisher.app.wsPublish('news', `p${i}`)
  const gated = gatedReads(redis.client())
  const b = await instance(t, { redis: gated.client, sessionStore: new RedisSessionStore(redis.client()) })
  // B listens to the topic already (its own reads of the topic's stream are not held back).
  await plain(b)
  await sleep(50)
  gated.arm()
  const back = (i: number): Peer => new Peer(b.url('/s'), resumeToken(welcomes[i].session, welcomes[i].token, 0))
  const first = back(0)
  await gated.reading
  const second = back(1)
  await second.welcome()
  t.equal(gated.reads(), 1, 'the second shares the first one\'s read')
  await publisher.app.wsPublish('news', 'p5')
  await waitFor(() => b.app.wsStats.topics.queued === 0 && b.app.wsTopicStats('news') !== null, 3000, 'p5 at B')
  const third = back(2)
  await third.welcome()
  await waitFor(() => gated.reads() === 2, 3000, 'a read of its own')
  t.pass('the third reads anew: p5 arrived since the first read was asked, and it did not get it live')
  gated.open()
  const all = Array.from({ length: 6 }, (_, i) => `p${i}`)
  await waitFor(() => [first, second, third].every((peer) => peer.data().length === 6), 3000, 'every message')
  for (const [i, peer] of [first, second, third].entries()) t.same(peer.data(), all, `session ${i + 1}: each once, in order`)
  t.equal(gated.reads(), 2)
  for (const peer of [first, second, third]) peer.ws.close()
})

t.test('a topic without messages yet when its session moves: the session goes on from the topic\'s first message, in whatever epoch it begins', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const publisher = await publisherOn(t, redis)
  const a = await onRedis(t, redis)
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  // A listens once it has read where the topic stands (nowhere: it has no history) and subscribed to its channel.
  const { channel } = topicKeys('reliable-ws', 'news')
  const listening = async (): Promise<void> => {
    await waitFor(() => redis.commandSync('PUBSUB', 'NUMSUB', channel).endsWith('1'), 3000, 'an instance listening')
    await sleep(50)
  }
  await listening()
  await a.app.close()
  t.match(a.app.wsStats.sessions, { handedOver: 1, handoverFailed: 0 })

  // On B, still nothing published: its history read finds no history at all.
  const b = await onRedis(t, redis)
  const onB = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  const second = await onB.welcome()
  t.match(second, { resumed: true })
  await listening()
  await b.app.close()
  t.match(b.app.wsStats.sessions, { handedOver: 1, topicGaps: 0 })

  // Published while it moves to C, the topic's first messages, in the epoch they began.
  for (let i = 0; i < 3; i++) await publisher.app.wsPublish('news', `p${i}`)
  const c = await onRedis(t, redis)
  const onC = new Peer(c.url('/s'), resumeToken(second.session, second.token, 0))
  await waitFor(() => onC.data().length === 3, 3000, 'what was published while it moved')
  await publisher.app.wsPublish('news', 'p3')
  await waitFor(() => onC.data().length === 4, 3000, 'a live one')
  t.same(onC.data(), ['p0', 'p1', 'p2', 'p3'])
  t.match(c.app.wsStats.sessions, { topicGaps: 0, claimedRemote: 1 })
  onC.ws.close()
})

t.test('a read shared only within one listening: a session arriving after its topic was let go and listened to again reads anew', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const publisher = await publisherOn(t, redis)
  const a = await onRedis(t, redis)
  const peers = [new Peer(a.url('/s')), new Peer(a.url('/s'))]
  const welcomes = await Promise.all(peers.map(async (peer) => await peer.welcome()))
  await waitFor(() => a.app.wsTopicStats('news')?.subscribers === 2, 3000, 'the subscriptions')
  await publisher.app.wsPublish('news', 'p0')
  await waitFor(() => peers.every((peer) => peer.data().length === 1), 3000, 'p0')
  await a.app.close()
  const gated = gatedReads(redis.client())
  let sockets = 0
  // The first session to arrive leaves the topic at once: B, with no other subscriber, lets the topic go.
  const b = await instance(t, { redis: gated.client, sessionStore: new RedisSessionStore(redis.client()), topics: HISTORY }, {}, (socket) => {
    if (sockets++ === 0) socket.unsubscribe('news')
  })
  gated.arm()
  const first = new Peer(b.url('/s'), resumeToken(welcomes[0].session, welcomes[0].token, 0))
  await first.welcome()
  await gated.reading
  t.equal(b.app.wsTopicStats('news'), null, 'let go')
  for (let i = 1; i <= 3; i++) await publisher.app.wsPublish('news', `p${i}`)
  const second = new Peer(b.url('/s'), resumeToken(welcomes[1].session, welcomes[1].token, 0))
  await second.welcome()
  await waitFor(() => gated.reads() === 2, 3000, 'a read of its own')
  gated.open()
  await publisher.app.wsPublish('news', 'p4')
  await waitFor(() => second.data().length === 5, 3000, 'every message')
  t.same(second.data(), ['p0', 'p1', 'p2', 'p3', 'p4'])
  t.same(first.data(), ['p0'])
  for (const peer of [first, second]) peer.ws.close()
})
