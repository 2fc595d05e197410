// The fan-out's queue under a steady backlog: sent messages are cut off its front, as a session's outbox is.
import t from 'tap'
import { setImmediate as turn } from 'node:timers/promises'
import type { FastifyBaseLogger } from 'fastify'
import type { Counters, Sessions, SessionRoute } from '../../lib/core/shapes'
import { kPlaces } from '../../lib/core/symbols'
import { Session } from '../../lib/sessions/session'
import type { SessionRegistry } from '../../lib/sessions/session-registry'
import { FanOut, SLICE } from '../../lib/topics/fan-out'
import type { Topic } from '../../lib/topics/fan-out'
import type { Delivery } from '../../lib/topics/broker'

t.test('a queue never empty (one and a half slices per message, a publish every one and a half turns) stays short', async (t) => {
  const stats = { topics: { delivered: 0, dropped: 0, queued: 0 } } as unknown as Counters
  const fanOut = new FanOut(stats, {} as Sessions, 1000, {} as FastifyBaseLogger)
  t.teardown(() => fanOut.stop())
  // Sessions that can keep nothing: each delivery is a cheap refusal (the registry is told, and does nothing).
  const route = { resume: { maxBufferedMessages: 0, maxBufferedBytes: 0 }, counters: { messagesSent: 0 } } as unknown as SessionRoute
  const registry = { reserve: () => true, overflow () {}, release () {} } as unknown as SessionRegistry
  const subscribers = new Set(Array.from({ length: SLICE * 1.5 }, (_, i) => {
    const session = new Session(String(i), route, registry, '/', null, '127.0.0.1')
    session[kPlaces] = new Map([['t', { epoch: 'e', offset: 0, held: null }]])
    return session
  }))
  const topic: Topic = { name: 't', subscribers, queue: [], head: 0, cursor: null, joined: null, payload: null, frame: null, escaped: null, pending: false, dropped: 0, arrived: 0 }
  let offset = 0
  const message = (): Delivery => ({ topic: 't', offset: ++offset, epoch: 'e', data: 'x', binary: false })
  for (let i = 0; i < 10; i++) fanOut.add(topic, message())
  let longest = 0
  for (let i = 0; i < 6000; i++) {
    await turn()
    if (i % 3 !== 2) fanOut.add(topic, message())
    longest = Math.max(longest, topic.queue.length)
  }
  t.ok(stats.topics.queued > 0 && stats.topics.queued === topic.queue.length - topic.head, `a backlog all along (${stats.topics.queued})`)
  t.ok(longest <= 2100, `the queue is compacted: at most ${longest} entries after 4,000 messages`)
})
