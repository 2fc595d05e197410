// The Redis broker against real redis-server processes (test/helpers/redis.ts): several brokers in this process, each
// with its own connections, as several instances of an application would have.
import t from 'tap'
import type { FastifyBaseLogger } from 'fastify'
import type { BrokerEvents, BrokerState, Delivery, GapReason } from '../../lib/topics/broker'
import { createRedisBroker } from '../../lib/topics/redis-broker'
import type { RedisBroker, RedisBrokerSettings } from '../../lib/topics/redis-broker'
import type { RedisOption } from '../../lib/topics/redis-connection'
import { topicKeys } from '../../lib/topics/redis-scripts'
import { sleep } from '../helpers/helpers'
import { needs, REDIS } from '../helpers/programs'
import { RedisServer } from '../helpers/redis'

t.setTimeout(120_000)

type Test = { teardown: (fn: () => unknown) => void }

/** What one broker told its instance. */
class Recorder implements BrokerEvents {
  readonly deliveries: Delivery[] = []
  readonly gaps: Array<[string, GapReason]> = []
  readonly states: BrokerState[] = []
  readonly warnings: string[] = []
  readonly log = {
    warn: (_: unknown, line: string) => { this.warnings.push(line) },
    info: () => {}
  } as unknown as FastifyBaseLogger

  deliver (message: Delivery): void { this.deliveries.push(message) }
  gap (topic: string, reason: GapReason): void { this.gaps.push([topic, reason]) }
  state (state: BrokerState): void { this.states.push(state) }

  of (topic: string): Delivery[] {
    return this.deliveries.filter((delivery) => delivery.topic === topic)
  }
}

async function until (what: string, condition: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(10)
  }
}

async function broker (t: Test, option: RedisOption, settings: Partial<RedisBrokerSettings> = {}): Promise<{ broker: RedisBroker, seen: Recorder }> {
  const seen = new Recorder()
  const broker = createRedisBroker(option, { probeIntervalMs: 100, ...settings }, seen.log)
  t.teardown(() => broker.close())
  await broker.start(seen)
  return { broker, seen }
}

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
  t.same(await admin.pubsub('NUMSUB', channel('three')), [channel('three'), 1])
})
