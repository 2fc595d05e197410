// The Redis broker's races and stalls, each found by review and reproduced here on a real redis-server: what the
// broker does with a subscription, an epoch or a probe caught between two events.
import t from 'tap'
import { Redis } from 'ioredis'
import { createRedisBroker } from '../../lib/topics/redis-broker'
import { DEFAULTS } from '../../lib/core/options'
import type { RedisOption } from '../../lib/redis/redis-connection'
import { publishScript, topicKeys } from '../../lib/topics/redis-scripts'
import { broker, Recorder, until } from '../helpers/broker'
import { FaultProxy } from '../helpers/fault-proxy'
import { sleep } from '../helpers/helpers'
import { needs, REDIS } from '../helpers/programs'
import { RedisServer } from '../helpers/redis'

t.setTimeout(60_000)
t.test('a topic listened to while a resubscription is on its way is subscribed too', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const admin = redis.client()
  const a = await broker(t, redis.url)
  const b = await broker(t, redis.url)
  b.broker.listen('early')
  await sleep(100)
  b.raw.link.sub.once('ready', () => {
    b.broker.listen('late')
    b.broker.unlisten('early')
  })
  await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub')
  await until('b down', () => b.broker.state === 'down')
  await until('b up', () => b.broker.state === 'up')
  await sleep(300)
  for (let i = 1; i <= 5; i++) await a.broker.publish('late', `m${i}`, false)
  await sleep(1000)
  const numsub = await admin.pubsub('NUMSUB', topicKeys('reliable-ws', 'late').channel)
  t.same(numsub, [topicKeys('reliable-ws', 'late').channel, 1], 'Redis has the subscription')
  t.same(await admin.pubsub('NUMSUB', topicKeys('reliable-ws', 'early').channel), [topicKeys('reliable-ws', 'early').channel, 0],
    'and not that of a topic left meanwhile')
  t.equal(b.seen.deliveries.filter(d => d.topic === 'late').length, 5, 'late gets its 5 messages')
})

t.test('a resubscription Redis does not answer in time reconnects the subscriber: the broker comes back up', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const admin = redis.client()
  const b = await broker(t, redis.url, { publishTimeoutMs: 200 })
  b.broker.listen('x')
  await sleep(100)
  // Redis stalls (SIGSTOP) just after the subscriber's handshake, for longer than publishTimeoutMs.
  b.raw.link.sub.prependOnceListener('ready', () => {
    redis.signal('SIGSTOP')
    setTimeout(() => redis.signal('SIGCONT'), 500)
  })
  await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub')
  await until('b down', () => b.broker.state === 'down')
  await sleep(3000)
  t.comment(`state ${b.broker.state}, subscribed ${b.raw.link.subscribed}, sub status ${b.raw.link.sub.status}, states ${JSON.stringify(b.seen.states)}`)
  t.equal(b.broker.state, 'up', 'back up once Redis answers again')
})

t.test('history lost while notifications of the old epoch wait: one gap, and nothing of the old epoch after it', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const proxy = await FaultProxy.start(redis.port)
  t.teardown(() => proxy.close())
  const admin = redis.client()
  const a = await broker(t, redis.url)
  let n = 0
  // pub through the proxy, sub direct
  const split = { isCluster: false, duplicate: (s: object) => n++ === 0 ? new Redis({ host: '127.0.0.1', port: proxy.port, retryStrategy: () => 20, ...s }) : new Redis({ host: '127.0.0.1', port: redis.port, ...s }) }
  const b = await broker(t, split as unknown as RedisOption, { publishTimeoutMs: 200, probeIntervalMs: 100_000 })
  b.broker.listen('news')
  await sleep(100)
  const first = await a.broker.publish('news', 'm1', false)
  await until('m1', () => b.seen.deliveries.length === 1)
  proxy.freeze()
  const { meta, stream } = topicKeys('reliable-ws', 'news')
  await admin.eval(publishScript('publish'), 3, meta, stream, 'nowhere', 'm2', 0, Date.now(), 'unused', 1000, 60_000)
  await a.broker.publish('news', 'm3', false)
  await a.broker.publish('news', 'm4', false)
  await sleep(400) // the read times out; pending keeps (E1,3),(E1,4)
  t.comment(`pending: ${JSON.stringify(b.raw.topics.get('news').pending.map((p: any) => p.offset))}`)
  await admin.flushall()
  proxy.frozen = false
  proxy.cut()
  await until('pub ready', () => b.raw.pub.status === 'ready')
  await sleep(1000)
  const loops = b.seen.gaps.length
  t.comment(`gaps within 1 s after FLUSHALL: ${loops}`)
  t.ok(loops <= 1, `one gap, not ${loops}`)
  const second = await a.broker.publish('news', 'new1', false)
  await sleep(500)
  t.comment(`deliveries: ${JSON.stringify(b.seen.deliveries.map(d => [d.offset, d.epoch === first.epoch ? 'E1' : d.epoch === second.epoch ? 'E2' : '?', d.data]))}`)
  t.notOk(b.seen.deliveries.slice(1).some(d => d.epoch === first.epoch), 'no old-epoch message after the history was lost')
  // A notification of the lost epoch arriving late (a lagging subscriber) is dropped, and takes the epoch nowhere.
  const gaps = b.seen.gaps.length
  await admin.publish(topicKeys('reliable-ws', 'news').channel, `9:${first.epoch}:0:${Date.now()}:stale`)
  await a.broker.publish('news', 'new2', false)
  await until('new2', () => b.seen.deliveries.some((d) => d.data === 'new2'))
  t.equal(b.seen.gaps.length, gaps, 'no second gap')
  t.notOk(b.seen.deliveries.some((d) => d.data === 'stale'))
})

t.test('an event loop stalled past probeIntervalMs after a probe went out does not put a healthy broker down', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const seen = new Recorder()
  const b = createRedisBroker(redis.url, { ...DEFAULTS.topics, probeIntervalMs: 250 }, seen.log)
  t.teardown(() => b.close())
  await b.start(seen)
  const raw = b as any
  while (raw.link.probeSentAt === null) await sleep(1)
  const stop = Date.now() + 300
  while (Date.now() < stop);
  await sleep(100)
  t.same(seen.states, ['up'], `states ${JSON.stringify(seen.states)} with Redis healthy`)
})

t.test('a topic first listened to while Redis is away: once it is back, a gap says what went unseen meanwhile', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const a = await broker(t, redis.url)
  const b = await broker(t, redis.url, { publishTimeoutMs: 200 })
  // B's own connections stall: its first read of the topic's position fails, while A goes on publishing.
  b.raw.pub.disconnect(true)
  b.broker.listen('news')
  for (let i = 1; i <= 3; i++) await a.broker.publish('news', `m${i}`, false)
  await until('b up again', () => b.broker.state === 'up' && b.raw.topics.get('news').based === true)
  t.same(b.seen.gaps, [['news', 'trimmed']], 'the messages published before listening could begin are a gap, not silence')
  await a.broker.publish('news', 'm4', false)
  await until('the next one', () => b.seen.deliveries.length === 1)
  t.equal(b.seen.deliveries[0].offset, 4)
})
