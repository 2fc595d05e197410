// The Redis link as a second user of it sees it (the session store to come): a channel of its own beside the broker's
// topics, on the same connections, kept subscribed across reconnections. The broker's tests cover the rest of it.
import t from 'tap'
import { RedisLink } from '../../lib/redis/redis-link'
import type { ChannelListener } from '../../lib/redis/redis-link'
import { broker, until } from '../helpers/broker'
import { sleep } from '../helpers/helpers'
import { needs, REDIS } from '../helpers/programs'
import { RedisServer } from '../helpers/redis'

t.setTimeout(60_000)
t.test('a channel of another user rides the broker\'s link: its messages reach it alone, and it is subscribed again after a reconnection', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const admin = redis.client()
  const a = await broker(t, redis.url)
  // A probe a second apart: one missed on a loaded machine would reconnect the subscriber between a publish and its receipt.
  const b = await broker(t, redis.url, { probeIntervalMs: 1000 })
  const link = b.raw.link as RedisLink
  const channel = 'reliable-ws:i:b'
  const heard: string[] = []
  let subscriptions = 0
  const listener: ChannelListener = { receive: (message) => { heard.push(message.toString()) }, subscribed: () => { subscriptions++ } }
  link.subscribe(channel, listener)
  b.broker.listen('news')
  await until('subscribed', () => subscriptions >= 1)
  t.same(await admin.pubsub('NUMSUB', channel), [channel, 1], 'Redis has the subscription')
  const clients = (await admin.call('CLIENT', 'LIST', 'TYPE', 'pubsub') as string).trim().split('\n')
  t.equal(clients.length, 2, 'on the subscriber connections the brokers have already: one each')
  await sleep(100)
  await admin.publish(channel, 'one')
  await a.broker.publish('news', 'm1', false)
  await until('both heard', () => heard.length === 1 && b.seen.deliveries.length === 1)
  t.same(heard, ['one'], 'the channel\'s message to its listener')
  t.same(b.seen.deliveries.map(({ data }) => data), ['m1'], 'the topic\'s to the broker')

  const before = subscriptions
  await admin.call('CLIENT', 'KILL', 'TYPE', 'pubsub')
  await until('subscribed again', () => subscriptions > before)
  await admin.publish(channel, 'two')
  await until('heard again', () => heard.length === 2)
  t.same(heard, ['one', 'two'])

  link.unsubscribe(channel)
  const numsub = async (): Promise<unknown> => ((await admin.pubsub('NUMSUB', channel)) as unknown[])[1]
  for (let tries = 0; tries < 100 && await numsub() !== 0; tries++) await sleep(10)
  t.equal(await numsub(), 0, 'Redis no longer has the subscription')
  await admin.publish(channel, 'three')
  await a.broker.publish('news', 'm2', false)
  await until('the topic still delivered', () => b.seen.deliveries.length === 2)
  t.same(heard, ['one', 'two'], 'nothing after unsubscribing')
})

t.test('a link closed while its first subscription is on its way keeps no probe timer', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const link = new RedisLink(redis.url, { keyPrefix: 'reliable-ws', commandTimeoutMs: 2000, probeIntervalMs: 20 })
  const inner = link as unknown as { pubsub: { subscribe: (...args: unknown[]) => Promise<unknown> }, timer: NodeJS.Timeout | null }
  const { subscribe } = inner.pubsub
  let closing: Promise<void> | null = null
  // The close lands just after the SUBSCRIBE is written, before Redis answers it.
  inner.pubsub = {
    ...inner.pubsub,
    subscribe: (...args: unknown[]) => {
      const answered = subscribe(...args)
      closing ??= link.close()
      return answered
    }
  }
  await link.start({ state: () => {}, retry: () => {} }).catch(() => {})
  await closing
  t.ok(closing !== null, 'closed during the start')
  t.equal(inner.timer, null, 'no probe timer armed after close()')
})
