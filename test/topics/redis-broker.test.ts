// The Redis broker against real redis-server processes (test/helpers/redis.ts): several brokers in this process, each
// with its own connections, as several instances of an application would have.
import t from 'tap'
import { Cluster, Redis } from 'ioredis'
import type { ClusterOptions } from 'ioredis'
import { createRedisBroker } from '../../lib/topics/redis-broker'
import type { RedisBroker } from '../../lib/topics/redis-broker'
import { DEFAULTS } from '../../lib/core/options'
import type { TopicSettings } from '../../lib/core/options'
import { loadIoredis, stopRefreshing } from '../../lib/redis/redis-connection'
import { publishScript, topicKeys } from '../../lib/topics/redis-scripts'
import { hashSlot } from '../../lib/redis/hash-slot'
import { shardProbeChannels } from '../../lib/redis/redis-pubsub'
import { broker, Recorder, until } from '../helpers/broker'
import type { Test } from '../helpers/broker'
import { FaultProxy } from '../helpers/fault-proxy'
import { sleep } from '../helpers/helpers'
import { needs, REDIS } from '../helpers/programs'
import { freePort, joinCluster, RedisServer, startCluster } from '../helpers/redis'

t.setTimeout(240_000)

/** The offsets delivered of `topic`, in the order delivered. */
function offsets (seen: Recorder, topic: string): number[] {
  return seen.of(topic).map((delivery) => delivery.offset)
}

function range (from: number, to: number): number[] {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i)
}

t.test('3 instances: each listening one gets every message of its topics once, in order; the others get none', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const admin = redis.client()
  const a = await broker(t, redis.url)
  const b = await broker(t, redis.url)
  const c = await broker(t, redis.url)
  t.same([a, b, c].map(({ broker }) => broker.state), ['up', 'up', 'up'])
  t.same(a.seen.states, ['up'], 'connecting, then up, told once')
  a.broker.listen('one')
  a.broker.listen('two')
  b.broker.listen('one')
  b.broker.listen('two')
  b.broker.listen('three')
  c.broker.listen('three')
  const channel = (topic: string): string => topicKeys('reliable-ws', topic).channel
  const numsub = async (): Promise<unknown[]> => (await admin.pubsub('NUMSUB', channel('one'), channel('two'), channel('three'), channel('four')) as unknown[]).filter((_, i) => i % 2 === 1)
  for (let tries = 0; JSON.stringify(await numsub()) !== '[2,2,2,0]' && tries < 100; tries++) await sleep(10)
  t.same(await numsub(), [2, 2, 2, 0], 'two instances on each channel, none on a topic nobody listens to')
  const channels = (await admin.pubsub('CHANNELS', 'reliable-ws:{*') as string[]).sort()
  t.same(channels, [channel('one'), channel('three'), channel('two')], 'only the channels of listened topics')

  const topics = ['one', 'two', 'three']
  const published: Array<Promise<{ offset: number, epoch: string }>> = []
  for (let i = 0; i < 2000; i++) published.push(a.broker.publish(topics[i % 3], `m${i}`, false))
  const results = await Promise.all(published)
  t.same(results.filter((_, i) => i % 3 === 0).map(({ offset }) => offset), range(1, 667), 'offsets are contiguous per topic')
  const binary = Buffer.from([0, 0x3a, 0xff, 0x31, 0x3a, 10])
  await a.broker.publish('three', binary, true)

  await until('every delivery', () => a.seen.deliveries.length === 1334 && b.seen.deliveries.length === 2001 && c.seen.deliveries.length === 667)
  for (const [name, seen, listened] of [['a', a.seen, ['one', 'two']], ['b', b.seen, topics], ['c', c.seen, ['three']]] as const) {
    for (const topic of topics) {
      t.same(offsets(seen, topic), (listened as readonly string[]).includes(topic) ? range(1, 667) : [], `${name}: ${topic}`)
    }
  }
  t.same(b.seen.of('one').slice(0, 3).map(({ data }) => data), ['m0', 'm3', 'm6'], 'the data as published')
  const last = c.seen.of('three').at(-1)!
  t.ok(Buffer.isBuffer(last.data) && last.binary && (last.data as Buffer).equals(binary), 'binary data arrives byte for byte')
  t.equal(c.seen.of('three')[0].binary, false)
  t.equal(new Set(b.seen.deliveries.map(({ epoch }) => epoch)).size, 3, 'one epoch per topic')
  t.same([a, b, c].map(({ seen }) => seen.gaps.length), [0, 0, 0], 'no gap')
  t.ok(b.broker.lagMs >= 0 && b.broker.lagMs < 5000, `lagMs ${b.broker.lagMs}`)

  c.broker.unlisten('three')
  c.broker.unlisten('never')
  await a.broker.publish('three', 'after', false)
  await until('b gets it', () => b.seen.of('three').length === 668)
  await sleep(50)
  t.equal(c.seen.of('three').length, 667, 'an instance that stopped listening gets no more')
  for (let tries = 0; (await admin.pubsub('NUMSUB', channel('three')) as unknown[])[1] !== 1 && tries < 100; tries++) await sleep(10)
  t.same(await admin.pubsub('NUMSUB', channel('three')), [channel('three'), 1], 'and its subscription is gone')
})

t.test('a subscriber connection killed while publishing: after it reconnects, nothing lost, nothing twice', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const admin = redis.client()
  const a = await broker(t, redis.url)
  const b = await broker(t, redis.url)
  b.broker.listen('news')
  for (let tries = 0; (await admin.pubsub('NUMSUB', topicKeys('reliable-ws', 'news').channel) as unknown[])[1] !== 1 && tries < 100; tries++) await sleep(10)
  const published: Array<Promise<unknown>> = []
  for (let i = 1; i <= 1000; i++) {
    published.push(a.broker.publish('news', `m${i}`, false))
    if (i % 100 === 0) await sleep(5)
    if (i === 300) t.equal(await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub'), 2, 'both subscriber connections killed')
  }
  await Promise.all(published)
  await until('every message', () => b.seen.deliveries.length >= 1000)
  await sleep(100)
  t.same(offsets(b.seen, 'news'), range(1, 1000), 'each once, in order')
  t.same(b.seen.of('news').map(({ data }) => data), range(1, 1000).map((i) => `m${i}`))
  t.same(b.seen.gaps, [])
  t.ok(b.seen.downsWhenUp() >= 1, `down while its subscriber was away, then up: ${b.seen.states.join(', ')}`)
})

/** Broker `a` straight on `redis`; broker `b` through a proxy the test can cut, reconnecting every 20 ms. */
async function behindProxy (t: Test, redis: RedisServer, settings: Partial<TopicSettings> = {}): Promise<{ proxy: FaultProxy, a: Awaited<ReturnType<typeof broker>>, b: Awaited<ReturnType<typeof broker>> }> {
  const proxy = await FaultProxy.start(redis.port)
  t.teardown(() => proxy.close())
  const a = await broker(t, redis.url, settings)
  const b = await broker(t, { port: proxy.port, host: '127.0.0.1', retryStrategy: () => 20 }, settings)
  return { proxy, a, b }
}

t.test('history trimmed past an instance\'s position: gap(trimmed), then on from the oldest message kept', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const { proxy, a, b } = await behindProxy(t, redis, { historySize: 5 })
  b.broker.listen('news')
  await sleep(100)
  for (let i = 1; i <= 3; i++) await a.broker.publish('news', `m${i}`, false)
  await until('the first three', () => b.seen.deliveries.length === 3)
  // B's connections cut and kept away while 20 more are published: only the last 5 stay in the stream.
  proxy.refuse = true
  proxy.cut()
  await until('b down', () => b.broker.state === 'down')
  for (let i = 4; i <= 23; i++) await a.broker.publish('news', `m${i}`, false)
  await sleep(300)
  proxy.refuse = false
  await until('b up', () => b.broker.state === 'up')
  await until('the five kept', () => b.seen.deliveries.length === 8)
  t.same(b.seen.gaps, [['news', 'trimmed']])
  t.same(offsets(b.seen, 'news'), [1, 2, 3, 19, 20, 21, 22, 23], 'on from the oldest message the stream keeps')
  t.ok(b.broker.lagMs > 50, `lagMs (${b.broker.lagMs}) shows messages delivered late`)
  await a.broker.publish('news', 'm24', false)
  await until('the next one', () => b.seen.deliveries.length === 9)
  t.equal(b.seen.deliveries[8].offset, 24)
  t.same(b.seen.warnings.length, 1, 'one warning for the time it was down')
})

t.test('history lost (FLUSHALL live, FLUSHALL while away, a restart): gap(epoch), offsets start again', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const admin = redis.client()
  const { proxy, a, b } = await behindProxy(t, redis)
  b.broker.listen('news')
  b.broker.listen('quiet')
  await sleep(100)
  const first = await a.broker.publish('news', 'm1', false)
  await a.broker.publish('news', 'm2', false)
  await until('two', () => b.seen.deliveries.length === 2)
  await sleep(50)

  // Live: the next notification comes in a new epoch.
  await admin.flushall()
  const second = await a.broker.publish('news', 'after', false)
  t.equal(second.offset, 1, 'offsets start again')
  t.not(second.epoch, first.epoch, 'in a new epoch')
  await until('the one after', () => b.seen.deliveries.length === 3)
  t.same(b.seen.gaps, [['news', 'epoch']])
  t.same(b.seen.deliveries[2], { topic: 'news', offset: 1, epoch: second.epoch, data: 'after', binary: false })

  // While away: the stream it comes back to is of another epoch; it goes on from there.
  proxy.refuse = true
  proxy.cut()
  await until('b down', () => b.broker.state === 'down')
  await admin.flushall()
  await a.broker.publish('news', 'x1', false)
  await a.broker.publish('news', 'x2', false)
  proxy.refuse = false
  await until('b up', () => b.broker.state === 'up')
  await until('the second gap', () => b.seen.gaps.length === 2)
  t.same(b.seen.gaps[1], ['news', 'epoch'])
  const third = await a.broker.publish('news', 'x3', false)
  await until('the next one', () => b.seen.deliveries.length === 4)
  t.same(b.seen.deliveries[3], { topic: 'news', offset: 3, epoch: third.epoch, data: 'x3', binary: false }, 'on from the position it found')

  // A restart without persistence: nothing at all is left.
  await redis.stop()
  await until('b down', () => b.broker.state === 'down')
  await redis.restart()
  await until('both up', () => a.broker.state === 'up' && b.broker.state === 'up')
  await until('the third gap', () => b.seen.gaps.length === 3)
  t.same(b.seen.gaps[2], ['news', 'epoch'], 'its history is gone with the restart; a topic with none had nothing to lose')
  const fourth = await a.broker.publish('news', 'restarted', false)
  await until('the one after the restart', () => b.seen.deliveries.length === 5)
  t.same(b.seen.deliveries[4], { topic: 'news', offset: 1, epoch: fourth.epoch, data: 'restarted', binary: false })
  t.equal(b.seen.gaps.length, 3, 'a new epoch after a gap is taken as it comes')
})

/** As if the channel lost it: numbered and kept, announced on a channel nobody hears. */
async function publishUnannounced (admin: Redis, topic: string, data: Buffer, historySize: number): Promise<void> {
  const { meta, stream } = topicKeys('reliable-ws', topic)
  await admin.eval(publishScript('publish'), 3, meta, stream, 'nowhere', data, 1, Date.now(), 'unused', historySize, 60_000)
}

t.test('a message missing on the channel is read from the stream before the next one is delivered', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const admin = redis.client()
  const a = await broker(t, redis.url)
  const b = await broker(t, redis.url)
  b.broker.listen('news')
  await sleep(100)
  await a.broker.publish('news', 'm1', false)
  await until('the first', () => b.seen.deliveries.length === 1)
  await publishUnannounced(admin, 'news', Buffer.from([1, 2]), 1000)
  await a.broker.publish('news', 'm3', false)
  await until('the third', () => b.seen.deliveries.length === 3)
  t.same(offsets(b.seen, 'news'), [1, 2, 3])
  t.ok(Buffer.isBuffer(b.seen.deliveries[1].data) && (b.seen.deliveries[1].data as Buffer).equals(Buffer.from([1, 2])), 'binary, from the stream')
  t.same(b.seen.gaps, [])
})

t.test('notifications arriving while the stream is read wait up to historySize, then are read again from it', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const admin = redis.client()
  const a = await broker(t, redis.url, { historySize: 2 })
  const b = await broker(t, redis.url, { historySize: 2 })
  b.broker.listen('news')
  await sleep(100)
  await a.broker.publish('news', 'm1', false)
  await until('the first', () => b.seen.deliveries.length === 1)
  await publishUnannounced(admin, 'news', Buffer.from('m2'), 2)
  // 100 at once, and this process kept busy meanwhile: they reach B together, and all but the first arrive while the
  // missing one is read, far more than historySize.
  const published = Promise.all(range(3, 102).map((i) => a.broker.publish('news', `m${i}`, false)))
  const busy = Date.now() + 100
  while (Date.now() < busy);
  await published
  await until('the last', () => b.seen.deliveries.at(-1)!.offset === 102)
  await sleep(50)
  const got = offsets(b.seen, 'news')
  t.ok(got.every((offset, i) => i === 0 || offset > got[i - 1]), 'in order, none twice')
  t.ok(b.seen.gaps.every(([, reason]) => reason === 'trimmed'), 'what was not delivered is told as trimmed')
  t.ok(got.length === 102 || b.seen.gaps.length > 0, `${got.length} delivered, ${b.seen.gaps.length} gaps`)
})

t.test('a stream gone without its position (evicted, deleted): gap(trimmed), then on from the position', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const admin = redis.client()
  const { proxy, a, b } = await behindProxy(t, redis)
  b.broker.listen('news')
  await sleep(100)
  await a.broker.publish('news', 'm1', false)
  await until('the first', () => b.seen.deliveries.length === 1)
  proxy.refuse = true
  proxy.cut()
  await until('b down', () => b.broker.state === 'down')
  await a.broker.publish('news', 'm2', false)
  await a.broker.publish('news', 'm3', false)
  await admin.del(topicKeys('reliable-ws', 'news').stream)
  proxy.refuse = false
  await until('the gap', () => b.seen.gaps.length === 1)
  t.same(b.seen.gaps, [['news', 'trimmed']])
  await a.broker.publish('news', 'm4', false)
  await until('the next', () => b.seen.deliveries.length === 2)
  t.same(offsets(b.seen, 'news'), [1, 4])
})

t.test('what is not a notification is ignored; a topic left while its stream is read is left', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const admin = redis.client()
  const a = await broker(t, redis.url)
  a.broker.listen('news')
  a.broker.listen('left')
  a.broker.unlisten('left')
  await sleep(100)
  await a.broker.publish('news', 'm1', false)
  await a.broker.publish('left', 'm1', false)
  await until('delivered', () => a.seen.deliveries.length === 1)
  await admin.publish(topicKeys('reliable-ws', 'news').channel, 'not a notification')
  // Four colons, but no offset: taken for one, it would open a gap no read could close.
  await admin.publish(topicKeys('reliable-ws', 'news').channel, 'x:epoch:0:1:data')
  await a.broker.publish('news', 'm2', false)
  await until('the next', () => a.seen.deliveries.length === 2)
  await sleep(50)
  t.same(a.seen.deliveries.map(({ topic, offset }) => [topic, offset]), [['news', 1], ['news', 2]])
  t.same(a.seen.gaps, [], 'nothing taken for a message of another epoch')
})

t.test('Redis killed during publishes: they are refused with the coded error within the bound; down, then up', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const a = await broker(t, redis.url, { publishTimeoutMs: 300 })
  // Stopped, Redis takes the command and never answers: the timeout bounds the wait.
  redis.signal('SIGSTOP')
  await until('lagMs counts the probe overdue', () => a.broker.lagMs >= 50, 3000)
  let started = Date.now()
  await t.rejects(a.broker.publish('news', 'm', false), { code: 'FST_RELIABLE_WS_BROKER_UNAVAILABLE', statusCode: 503, message: /cannot take the message: Command timed out/ })
  const waited = Date.now() - started
  t.ok(waited >= 250 && waited <= 300 + 500, `refused after ${waited} ms (publishTimeoutMs 300)`)
  await until('down: the probe did not come back', () => a.broker.state === 'down', 3000)
  redis.signal('SIGCONT')
  await until('up again', () => a.broker.state === 'up')
  t.ok(a.seen.downsWhenUp() >= 1, `down, then up: ${a.seen.states.join(', ')}`)
  const downs = a.seen.downsWhenUp()

  // Killed with publishes in flight; stopped first, so that Redis has carried out none of them.
  redis.signal('SIGSTOP')
  const inFlight = Array.from({ length: 50 }, (_, i) => a.broker.publish('news', `m${i}`, false).then(() => null, (err) => err))
  await sleep(20)
  started = Date.now()
  await redis.stop()
  const results = await Promise.all(inFlight)
  t.ok(results.every((err) => err?.code === 'FST_RELIABLE_WS_BROKER_UNAVAILABLE'), 'every one refused, with the coded error')
  t.ok(Date.now() - started <= 300 + 500, 'within the bound')
  await until('down', () => a.broker.state === 'down')
  started = Date.now()
  await t.rejects(a.broker.publish('news', 'm', false), { code: 'FST_RELIABLE_WS_BROKER_UNAVAILABLE' })
  t.ok(Date.now() - started < 100, 'while down, refused at once: nothing waits in a queue')
  // Listening while Redis is away: its position is read once Redis is back.
  a.broker.listen('later')
  await redis.restart()
  await until('up', () => a.broker.state === 'up')
  t.ok(a.seen.downsWhenUp() >= downs + 1, `down again, then up: ${a.seen.states.join(', ')}`)
  t.match(await a.broker.publish('news', 'back', false), { offset: 1 }, 'a refused publish is not sent again after the reconnect')
  await sleep(150)
  await a.broker.publish('later', 'm1', false)
  await until('delivered', () => a.seen.deliveries.length === 1)
  t.same(a.seen.deliveries.map(({ topic, offset }) => [topic, offset]), [['later', 1]])
})

t.test('the liveness probe finds a subscription that delivers nothing on a healthy connection, and repairs it', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const a = await broker(t, redis.url)
  const b = await broker(t, redis.url)
  b.broker.listen('news')
  await sleep(100)
  await a.broker.publish('news', 'm1', false)
  await until('the first', () => b.seen.deliveries.length === 1)
  // Behind the broker's back: its connection stays up, its subscriptions are gone (as after a failover to a node
  // that no longer gets the publishes).
  await (b.broker as unknown as { link: { sub: { unsubscribe: () => Promise<unknown> } } }).link.sub.unsubscribe()
  await a.broker.publish('news', 'm2', false)
  await until('down', () => b.broker.state === 'down', 3000)
  t.match(b.seen.warnings, [/not delivering/])
  await until('up again', () => b.broker.state === 'up', 3000)
  await until('the one published meanwhile', () => b.seen.deliveries.length === 2)
  t.same(offsets(b.seen, 'news'), [1, 2])
  t.ok(b.seen.downsWhenUp() >= 1, `down, then up: ${b.seen.states.join(', ')}`)
})

t.test('the option: the application\'s client is duplicated and left open; ioredis options; a URL that cannot connect', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const app = new Redis(redis.port, '127.0.0.1', { keyPrefix: 'app:' })
  t.teardown(() => app.disconnect())
  const a = await broker(t, app)
  const b = await broker(t, { port: redis.port, host: '127.0.0.1' })
  b.broker.listen('news')
  await sleep(100)
  await a.broker.publish('news', 'm1', false)
  await until('delivered', () => b.seen.deliveries.length === 1)
  const admin = redis.client()
  t.same((await admin.keys('*')).sort(), ['reliable-ws:{news}:meta', 'reliable-ws:{news}:stream'], 'the application\'s keyPrefix is not the broker\'s: every instance names the keys alike')
  await a.broker.close()
  t.equal(app.status, 'ready', 'the application\'s client is not closed')
  t.equal(await app.ping(), 'PONG')

  const closed = createRedisBroker(`redis://127.0.0.1:${await freePort()}`, DEFAULTS.topics, new Recorder().log)
  await t.rejects(closed.start(new Recorder()), { code: 'ECONNREFUSED' })
  t.equal(closed.state, 'connecting')
})

t.test('loadIoredis: a missing ioredis is a coded error; any other failure is passed on as it is', async (t) => {
  const missing = Object.assign(new Error("Cannot find module 'ioredis'"), { code: 'MODULE_NOT_FOUND' })
  t.throws(() => loadIoredis(() => { throw missing }), { code: 'FST_RELIABLE_WS_REDIS_MISSING', message: /needs ioredis.*npm install ioredis/, cause: missing })
  const broken = new SyntaxError('Unexpected token')
  t.throws(() => loadIoredis(() => { throw broken }), broken)
  t.equal(loadIoredis(), require('ioredis'))
})

t.test('topic names: braces and % keep each topic\'s keys under one hash tag of its own', async (t) => {
  t.same(topicKeys('p', 'a}b{%'), { meta: 'p:{a%7db%7b%25}:meta', stream: 'p:{a%7db%7b%25}:stream', channel: 'p:{a%7db%7b%25}:channel' })
})

t.test('listening begins: what the instance itself publishes right after listen() arrives, each once', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const a = await broker(t, redis.url)
  for (let round = 0; round < 20; round++) {
    const topic = `fresh-${round}`
    a.broker.listen(topic)
    await Promise.all(range(1, 50).map((i) => a.broker.publish(topic, `m${i}`, false)))
  }
  await until('every message', () => a.seen.deliveries.length === 20 * 50)
  await sleep(50)
  for (let round = 0; round < 20; round++) t.same(offsets(a.seen, `fresh-${round}`), range(1, 50), `fresh-${round}`)
})

t.test('Redis Cluster, 3 masters: each listening instance gets every message of its topics once, in order', needs(REDIS), async (t) => {
  const servers = await startCluster(t)
  const nodes = servers.map(({ port }) => ({ host: '127.0.0.1', port }))
  const app = new Cluster(nodes)
  t.teardown(() => app.disconnect())
  const a = await broker(t, app)
  const b = await broker(t, app)
  const c = await broker(t, app)
  const topics = ['one', 'two', 'three', 'four', 'five', 'six']
  for (const topic of topics) {
    a.broker.listen(topic)
    if (topic !== 'six') b.broker.listen(topic)
  }
  c.broker.listen('six')
  await sleep(300)
  const published = []
  for (let i = 0; i < 1200; i++) published.push(a.broker.publish(topics[i % 6], `m${i}`, false))
  await Promise.all(published)
  await until('every delivery', () => a.seen.deliveries.length === 1200 && b.seen.deliveries.length === 1000 && c.seen.deliveries.length === 200)
  await sleep(50)
  for (const topic of topics) {
    t.same(offsets(a.seen, topic), range(1, 200), `a: ${topic}`)
    t.same(offsets(b.seen, topic), topic === 'six' ? [] : range(1, 200), `b: ${topic}`)
  }
  t.same(offsets(c.seen, 'six'), range(1, 200))
  t.same([a, b, c].map(({ seen }) => seen.gaps.length), [0, 0, 0])
  const holding = (await Promise.all(servers.map((server) => server.client().dbsize()))).filter((keys) => keys > 0)
  t.ok(holding.length >= 2, `the topics' keys are on ${holding.length} of the 3 masters`)
  await a.broker.close()
  t.equal(app.status, 'ready', 'the application\'s Cluster client is left open')
})

t.test('hashSlot is Redis Cluster\'s slot; one probe channel per master, even beside slots no node serves', async (t) => {
  t.equal(hashSlot('123456789'), 0x31c3, 'CRC16 (XMODEM) of the whole name without a tag')
  t.equal(hashSlot('{user1000}.following'), hashSlot('user1000'), 'the hash tag alone')
  t.equal(hashSlot('foo{{bar}}zap'), hashSlot('{bar'), 'the tag ends at the first } after the first {')
  const slots: string[][] = new Array(16384)
  for (let slot = 0; slot < 8192; slot++) slots[slot] = ['a:1']
  for (let slot = 12000; slot < 16384; slot++) slots[slot] = ['b:1', 'b-replica:1']
  const probes = shardProbeChannels('p', slots)
  t.equal(probes.length, 2)
  t.same(probes.map((channel) => slots[hashSlot(channel)][0]).sort(), ['a:1', 'b:1'], 'each master has one, on a slot it serves')
  t.same(shardProbeChannels('p', slots), probes, 'the same map, the same channels')
})

/** The index in `servers` of the master serving `name`'s slot, as the application's Cluster client sees it. */
function ownerOf (app: Cluster, servers: RedisServer[], name: string): number {
  return servers.findIndex(({ port }) => app.slots[hashSlot(name)][0] === `127.0.0.1:${port}`)
}

async function cluster (t: Test, options: ClusterOptions = {}): Promise<{ servers: RedisServer[], app: Cluster }> {
  const servers = await startCluster(t)
  const app = new Cluster(servers.map(({ port }) => ({ host: '127.0.0.1', port })), options)
  // As the broker closes its own: disconnect() alone may leave the slotsRefreshInterval timer running for good.
  t.teardown(() => stopRefreshing(app))
  await until('the application\'s client', () => app.status === 'ready')
  return { servers, app }
}

/** Until the broker has read where each topic stands: what is published from then on is delivered. */
async function listening (broker: RedisBroker, topics: string[]): Promise<void> {
  const listened = (broker as unknown as { topics: Map<string, { based: boolean }> }).topics
  await until('listening begun', () => topics.every((topic) => listened.get(topic)?.based === true))
}

const TOPICS = ['one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight']

/** A cluster and the application's client, a broker `a` to publish with, and a broker `b` listening to every one of TOPICS. */
async function listeningCluster (t: Test): Promise<{ servers: RedisServer[], app: Cluster, a: Awaited<ReturnType<typeof broker>>, b: Awaited<ReturnType<typeof broker>> }> {
  const { servers, app } = await cluster(t)
  const a = await broker(t, app)
  const b = await broker(t, app)
  for (const topic of TOPICS) b.broker.listen(topic)
  await listening(b.broker, TOPICS)
  return { servers, app, a, b }
}

t.test('Redis Cluster: sharded pub/sub — a topic\'s notifications stay on its master, and only its shard subscribers get them', needs(REDIS), async (t) => {
  const { servers, app, a, b } = await listeningCluster(t)
  const channels = TOPICS.map((topic) => topicKeys('reliable-ws', topic).channel)
  const admins = servers.map((server) => server.client())
  for (const name of ['123456789', '{user1000}.following', 'foo{}{bar}', 'foo{{bar}}zap', 'foo{bar}{zap}', 'ü{é}', '{}', ...channels]) {
    t.equal(hashSlot(name), await admins[0].cluster('KEYSLOT', name), `hashSlot(${name}) as Redis has it`)
  }
  const shardChannels = async (i: number, pattern: string): Promise<string[]> => ((await admins[i].call('PUBSUB', 'SHARDCHANNELS', pattern)) as string[]).sort()
  const expected = servers.map((_, i) => channels.filter((channel) => ownerOf(app, servers, channel) === i).sort())
  t.ok(expected.filter((owned) => owned.length > 0).length >= 2, 'the topics spread over the masters')
  for (let tries = 0; tries < 200; tries++) {
    const now = await Promise.all(servers.map((_, i) => shardChannels(i, 'reliable-ws:{*')))
    if (JSON.stringify(now) === JSON.stringify(expected)) break
    await sleep(10)
  }
  for (let i = 0; i < servers.length; i++) {
    t.same(await shardChannels(i, 'reliable-ws:{*'), expected[i], `master ${i}: the shard channels of the topics in its slots`)
    t.same(await admins[i].call('PUBSUB', 'CHANNELS', '*'), [], `master ${i}: no plain subscription at all`)
    t.equal((await shardChannels(i, 'reliable-ws:probe:*')).length, 2, `master ${i}: a probe channel of each instance`)
  }
  // A plain subscriber on every node hears a PUBLISH (the cluster bus carries it to every node), never an SPUBLISH.
  const spies = servers.map((server) => new Redis(server.port, '127.0.0.1'))
  t.teardown(() => { for (const spy of spies) spy.disconnect() })
  const overheard: string[] = []
  for (const spy of spies) {
    spy.on('message', (channel: string) => overheard.push(channel))
    await spy.subscribe(...channels)
  }
  for (const topic of TOPICS) await a.broker.publish(topic, `m-${topic}`, false)
  await until('every delivery', () => b.seen.deliveries.length === TOPICS.length)
  await sleep(100)
  t.same(overheard, [], 'no node sent a notification to plain subscribers')
  t.same(b.seen.deliveries.map(({ topic }) => topic).sort(), [...TOPICS].sort())
  b.broker.unlisten('one')
  const owner = ownerOf(app, servers, channels[0])
  for (let tries = 0; (await shardChannels(owner, channels[0])).length > 0 && tries < 100; tries++) await sleep(10)
  t.same(await shardChannels(owner, channels[0]), [], 'a topic left: its shard channel is unsubscribed')
})

/** The broker's own subscriber connection to one master, out of ioredis's sharded subscribers. */
function shardConnection (broker: RedisBroker, port: number): Redis {
  const group = (broker as unknown as { link: { sub: { shardedSubscribers: { shardedSubscribers: Map<string, { getInstance: () => Redis }> } } } }).link.sub.shardedSubscribers
  return group.shardedSubscribers.get(`127.0.0.1:${port}`)!.getInstance()
}

t.test('Redis Cluster: a subscription silently dead on any one master is found by that master\'s probe, and repaired', needs(REDIS), async (t) => {
  const { servers, app, a, b } = await listeningCluster(t)
  t.equal((b.broker as unknown as { link: { probes: Set<string> } }).link.probes.size, 3, 'a probe channel per master')
  for (let i = 0; i < servers.length; i++) {
    const topic = TOPICS.find((topic) => ownerOf(app, servers, topicKeys('reliable-ws', topic).channel) === i) ?? 'none'
    // Behind the broker's back, its connection to this master stays up but delivers nothing more.
    await shardConnection(b.broker, servers[i].port).sunsubscribe()
    const delivered = b.seen.deliveries.length
    if (topic !== 'none') await a.broker.publish(topic, `while dead on ${i}`, false)
    await until(`down (master ${i})`, () => b.broker.state === 'down', 5000)
    t.match(b.seen.warnings.at(-1), /not delivering/)
    await until(`up again (master ${i})`, () => b.broker.state === 'up', 5000)
    if (topic !== 'none') {
      await until('the message published meanwhile', () => b.seen.deliveries.length === delivered + 1)
      t.equal(b.seen.deliveries.at(-1)!.data, `while dead on ${i}`, `master ${i}: delivered once back`)
    }
  }
  t.same(b.seen.states, ['up', 'down', 'up', 'down', 'up', 'down', 'up'], 'each master\'s silence found')
  t.same(b.seen.gaps, [])
  // ioredis subscribes its own list of shard channels again after a reconnect: the broker keeps it to one of each.
  const listed = [...(b.broker as unknown as { link: { sub: { shardedSubscribers: { channels: Map<number, string[]> } } } }).link.sub.shardedSubscribers.channels.values()].flat()
  t.equal(listed.length, new Set(listed).size, `ioredis lists each channel once after 3 reconnections (${listed.length})`)
  // A topic left while the subscriber reconnects: the Cluster client would subscribe it again by itself.
  const left = TOPICS[0]
  const owner = servers[ownerOf(app, servers, topicKeys('reliable-ws', left).channel)].client()
  ;(b.broker as unknown as { link: { sub: Redis } }).link.sub.once('close', () => b.broker.unlisten(left))
  await shardConnection(b.broker, servers[0].port).sunsubscribe()
  await until('down', () => b.broker.state === 'down', 5000)
  await until('up', () => b.broker.state === 'up', 5000)
  for (let tries = 0; tries < 100 && ((await owner.call('PUBSUB', 'SHARDCHANNELS', topicKeys('reliable-ws', left).channel)) as string[]).length > 0; tries++) await sleep(10)
  t.same(await owner.call('PUBSUB', 'SHARDCHANNELS', topicKeys('reliable-ws', left).channel), [], 'not subscribed once back')
})

t.test('Redis Cluster: the subscriber connection to one master killed while publishing: nothing lost, nothing twice', needs(REDIS), async (t) => {
  const { servers, app } = await cluster(t)
  const a = await broker(t, app)
  const b = await broker(t, app)
  b.broker.listen('news')
  await listening(b.broker, ['news'])
  const owner = servers[ownerOf(app, servers, topicKeys('reliable-ws', 'news').channel)]
  const published: Array<Promise<unknown>> = []
  for (let i = 1; i <= 600; i++) {
    published.push(a.broker.publish('news', `m${i}`, false))
    if (i % 100 === 0) await sleep(5)
    if (i === 200) t.equal(await owner.client().call('CLIENT', 'KILL', 'TYPE', 'pubsub'), 2, 'both instances\' connections to that master killed')
  }
  await Promise.all(published)
  await until('every message', () => b.seen.deliveries.length >= 600)
  await sleep(100)
  t.same(offsets(b.seen, 'news'), range(1, 600), 'each once, in order')
  t.same(b.seen.gaps, [])
  t.ok(b.seen.downsWhenUp() >= 1, `down while that connection was away, then up: ${b.seen.states.join(', ')}`)
})

t.test('Redis Cluster: a probe channel\'s slot moved to another master: the probes follow the masters', needs(REDIS), async (t) => {
  const { servers, app } = await cluster(t)
  const a = await broker(t, app)
  const b = await broker(t, app)
  b.broker.listen('news')
  await listening(b.broker, ['news'])
  const raw = (b.broker as unknown as { link: { probes: Set<string> } }).link
  const before = [...raw.probes]
  const moved = before[0]
  const slot = hashSlot(moved)
  const to = (ownerOf(app, servers, moved) + 1) % servers.length
  const admins = servers.map((server) => server.client())
  const target = await admins[to].cluster('MYID')
  for (const admin of admins) await admin.cluster('SETSLOT', slot, 'NODE', target)
  await until('other probe channels', () => raw.probes.size === 3 && before.some((channel) => !raw.probes.has(channel)), 5000)
  const probes = [...raw.probes]
  const dropped = before.filter((channel) => !raw.probes.has(channel))
  const base = moved.slice(0, moved.lastIndexOf(':'))
  const holding = async (): Promise<string[][]> => await Promise.all(admins.map(async (admin) => (await admin.call('PUBSUB', 'SHARDCHANNELS', `${base}:*`)) as string[]))
  for (let tries = 0; tries < 100 && (await holding()).flat().some((channel) => dropped.includes(channel)); tries++) await sleep(10)
  const now = await holding()
  for (let i = 0; i < servers.length; i++) {
    const held = now[i]
    t.equal(held.filter((channel) => probes.includes(channel)).length, 1, `master ${i}: one of the instance's probe channels`)
    t.notOk(held.some((channel) => dropped.includes(channel)), `master ${i}: a probe channel given up is not subscribed any more`)
  }
  await until('up', () => b.broker.state === 'up')
  await a.broker.publish('news', 'after the move', false)
  await until('delivered', () => b.seen.deliveries.length === 1)
  t.same(b.seen.gaps, [])
})

t.test('Redis Cluster: a new master takes a listened topic\'s slot: it gets a probe channel, and what the move lost is read from the stream', needs(REDIS), async (t) => {
  // The application's client, and so the broker's connections, read the slots every second, besides on MOVED.
  const { servers, app } = await cluster(t, { slotsRefreshInterval: 1000 })
  const a = await broker(t, app)
  // A probe a second apart: on a loaded machine a 250 ms one may miss its time by itself, and this test asks that
  // the broker never goes down.
  const b = await broker(t, app, { probeIntervalMs: 1000 })
  b.broker.listen('news')
  await listening(b.broker, ['news'])
  for (let i = 1; i <= 5; i++) await a.broker.publish('news', `m${i}`, false)
  await until('the first five', () => b.seen.deliveries.length === 5)
  const raw = (b.broker as unknown as { link: { probes: Set<string> } }).link
  t.equal(raw.probes.size, 3)

  // A fourth node joins, then takes the topic's slot from its master as redis-cli --cluster reshard does it.
  const added = await joinCluster(t, servers)
  const keys = topicKeys('reliable-ws', 'news')
  const slot = hashSlot(keys.channel)
  const from = ownerOf(app, servers, keys.channel)
  const source = servers[from].client()
  const target = added.client()
  const others = servers.filter((_, i) => i !== from).map((server) => server.client())
  const [sourceId, targetId] = [await source.cluster('MYID'), await target.cluster('MYID')]
  await target.cluster('SETSLOT', slot, 'IMPORTING', sourceId)
  await source.cluster('SETSLOT', slot, 'MIGRATING', targetId)
  const moving = (await source.cluster('GETKEYSINSLOT', slot, 10) as string[]).sort()
  t.same(moving, [keys.meta, keys.stream], 'the topic\'s keys are all its slot holds')
  await source.migrate('127.0.0.1', added.port, '', 0, 5000, 'KEYS', ...moving)
  // The new master takes the slot first, and three messages are published on it before the others hear of it. Each
  // command holds this process until it is answered: a broker refreshing its slots from the new master in between
  // would subscribe there, and hear them.
  const { historySize, historyTtlMs } = DEFAULTS.topics
  t.equal(added.commandSync('CLUSTER', 'SETSLOT', slot, 'NODE', targetId), 'OK')
  const replies = [6, 7, 8].map((i) => added.commandSync('EVAL', publishScript('spublish'), 3, keys.meta, keys.stream, keys.channel, `m${i}`, 0, Date.now(), 'unused', historySize, historyTtlMs))
  t.same(replies.map((reply) => reply.split('\n')[0]), ['6', '7', '8'], 'published there as offsets 6 to 8')
  t.equal(added.commandSync('PUBSUB', 'SHARDNUMSUB', keys.channel), `${keys.channel}\n0`, 'three messages nobody heard')
  for (const admin of [source, ...others]) await admin.cluster('SETSLOT', slot, 'NODE', targetId)

  await until('a fourth probe channel', () => raw.probes.size === 4, 5000)
  const probe = [...raw.probes].find((channel) => hashSlot(channel) === slot)
  t.ok(probe, 'on the one slot the new master serves')
  const numsub = async (admin: Redis, channel: string): Promise<unknown> => ((await admin.call('PUBSUB', 'SHARDNUMSUB', channel)) as unknown[])[1]
  for (let tries = 0; tries < 100 && await numsub(target, probe!) !== 1; tries++) await sleep(10)
  t.equal(await numsub(target, probe!), 1, 'the new master has the instance\'s probe channel')
  await until('the three the move lost, from the stream', () => b.seen.deliveries.length === 8, 5000)
  t.equal(await numsub(target, keys.channel), 1, 'the topic\'s channel is subscribed on the new master')
  t.equal(await numsub(source, keys.channel), 0, 'and no longer on the old one')

  // One after the other: concurrent ones may be sent on by MOVED in another order than they were sent.
  for (let i = 9; i <= 58; i++) await a.broker.publish('news', `m${i}`, false)
  await until('every message', () => b.seen.deliveries.length === 58)
  await sleep(100)
  t.same(offsets(b.seen, 'news'), range(1, 58), 'each once, in order')
  t.same(b.seen.of('news').map(({ data }) => data), range(1, 58).map((i) => `m${i}`))
  t.same(b.seen.gaps, [], 'nothing lost')
  t.equal(new Set(b.seen.deliveries.map(({ epoch }) => epoch)).size, 1, 'the history moved with the slot: one epoch')
  // A probe sent to the new master before its channel there is subscribed would not come back: the broker would go
  // down and reconnect, refusing publishes meanwhile.
  t.same(b.seen.states, ['up'], 'a change of masters is no outage: never down')
  t.same(b.seen.warnings, [])
})

t.test('Redis Cluster: a broker started while the cluster is failing comes up once it recovers', needs(REDIS), async (t) => {
  const { servers, app } = await cluster(t)
  const admin = servers[0].client()
  // A master stopped until the others say the cluster fails: the client's ready check fails, and it reconnects.
  servers[2].signal('SIGSTOP')
  for (let tries = 0; !(await admin.cluster('INFO')).includes('cluster_state:fail'); tries++) {
    if (tries > 200) throw new Error('the cluster did not fail')
    await sleep(50)
  }
  const seen = new Recorder()
  const b = createRedisBroker(app, { ...DEFAULTS.topics, probeIntervalMs: 250 }, seen.log)
  t.teardown(() => b.close())
  let started = false
  const starting = b.start(seen).then(() => { started = true })
  await sleep(1000)
  t.notOk(started, 'not up while the cluster fails')
  servers[2].signal('SIGCONT')
  await until('started', () => started, 15_000)
  await starting
  t.equal(b.state, 'up')
})

t.test('Redis Cluster: a broker closed while its connections refresh the slots leaves no refresh timer behind', needs(REDIS), async (t) => {
  const { servers, app } = await cluster(t, { slotsRefreshInterval: 100 })
  const b = await broker(t, app, { publishTimeoutMs: 200 })
  // Stopped, every node takes CLUSTER SLOTS and never answers: each connection's refresh is under way, until its
  // slotsRefreshTimeout (1 s), when the broker has long closed.
  for (const server of servers) server.signal('SIGSTOP')
  await sleep(300)
  await b.broker.close()
  await sleep(1500)
  const { pub, sub } = (b.raw as { link: { pub: unknown, sub: unknown } }).link
  for (const [name, connection] of [['command', pub], ['subscriber', sub]] as const) {
    t.equal((connection as { slotsTimer: unknown }).slotsTimer, null, `the ${name} connection refreshes no more`)
  }
  for (const server of servers) server.signal('SIGCONT')
})
