// A reliable client following the topic `news` through a proxy while numbered messages are published to it: for the
// tests of sessions that move, or survive, with their topics.
import { once } from 'node:events'
import WebSocket from 'ws'
import type { Test } from 'tap'
import type { FastifyInstance } from 'fastify'
import { ReliableWebSocket } from '../../lib/client'
import type { SessionLostEvent } from '../../lib/client'
import { FaultProxy } from './fault-proxy'
import { sleep, waitFor } from './helpers'

/** An instance, as far as following a topic on it goes. */
interface Publisher { app: FastifyInstance, port: number }

/** Publishes `p0`… `p<total - 1>` to `news`, one after the other, `each` between pauses of a few ms; resolves when all are in. */
async function publishAll (app: FastifyInstance, total: number, published: { count: number }, each: number): Promise<void> {
  while (published.count < total) {
    await app.wsPublish('news', `p${published.count}`)
    if (++published.count % each === 0) await sleep(2)
  }
}

/**
 * A reliable client of `first` through a proxy, its session subscribed; then `total` messages published from
 * `publisher` (`each` between pauses). `check()`, once the test has moved the client about, waits for the last one
 * and checks that each arrived once, in order, and the session was never lost.
 */
export async function followed (t: Test, publisher: Publisher, first: Publisher, total: number, each: number): Promise<{ proxy: FaultProxy, ws: ReliableWebSocket, published: { count: number }, check: () => Promise<void> }> {
  const proxy = await FaultProxy.start(first.port)
  t.teardown(() => proxy.close())
  const ws = new ReliableWebSocket(proxy.url('/s'), { WebSocket, backoff: { initialDelayMs: 5, maxDelayMs: 20, slowAfter: Infinity } })
  const received: string[] = []
  const lost: SessionLostEvent[] = []
  ws.addEventListener('message', (event) => received.push(event.data as string))
  ws.addEventListener('sessionlost', (event) => lost.push(event))
  t.teardown(() => ws.close())
  await once(ws as any, 'open')
  await waitFor(() => first.app.wsTopicStats('news')?.subscribers === 1, 3000, 'the subscription')
  const published = { count: 0 }
  const publishing = publishAll(publisher.app, total, published, each)
  const check = async (): Promise<void> => {
    await publishing
    await waitFor(() => received.length >= total, 20_000, 'every message')
    await sleep(50)
    t.ok(received.length === total && received.every((text, i) => text === `p${i}`), `each of ${total} once, in order (${received.length} received)`)
    t.same(lost, [], 'the session was never lost')
  }
  return { proxy, ws, published, check }
}
