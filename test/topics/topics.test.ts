// Publish/subscribe with the in-process broker: subscriptions, delivery in order, sessions, gaps, backpressure, limits.
import t from 'tap'
import { once } from 'node:events'
import WebSocket from 'ws'
import type { FastifyInstance } from 'fastify'
import { ReliableWebSocket } from '../../lib/client'
import type { SessionLostEvent } from '../../lib/client'
import { kRoute } from '../../lib/core/symbols'
import type { ReliableSocket, Route } from '../../lib/core/shapes'
import type { TopicHub } from '../../lib/topics/topic-hub'
import { TOPIC_GAP_CODE } from '../../lib/protocol/protocol'
import { FaultProxy } from '../helpers/fault-proxy'
import { closeEvent, connect, OPCODE, RawPeer, start, waitFor } from '../helpers/helpers'
import type { Options } from '../helpers/helpers'

type Teardown = { teardown: (fn: () => unknown) => void }

/** The hub of the socket's instance: the broker's events are its methods. */
function hubOf (socket: unknown): TopicHub {
  return ((socket as ReliableSocket)[kRoute] as Route).ctx.topics as TopicHub
}

/**
 * A server whose clients subscribe by sending `sub:<topic>` and unsubscribe with `unsub:<topic>`; `send:<text>`
 * is sent back with the ordinary send. Every server-side socket is kept, in order of arrival.
 */
async function pubsub (t: Teardown, options: Options = {}, reliable: object = {}): Promise<{ app: FastifyInstance, url: (path: string) => string, port: number, sockets: ReliableSocket[], errors: Error[] }> {
  const sockets: ReliableSocket[] = []
  const errors: Error[] = []
  const server = await start({ logging: { connections: false }, ...options }, (app) => {
    app.get('/t', { websocket: true, config: { reliable } }, (socket) => {
      sockets.push(socket as unknown as ReliableSocket)
      socket.on('message', (data: Buffer) => {
        const text = data.toString()
        try {
          if (text.startsWith('sub:')) socket.send(`subscribed:${String(socket.subscribe(text.slice(4)))}`)
          else if (text.startsWith('unsub:')) socket.send(`unsubscribed:${String(socket.unsubscribe(text.slice(6)))}`)
          else if (text.startsWith('send:')) socket.send(text.slice(5))
        } catch (err) {
          errors.push(err as Error)
          socket.send(`error:${(err as { code: string }).code}`)
        }
      })
    })
    app.get('/plain', { websocket: true, config: { reliable: false } }, (socket) => {
      sockets.push(socket as unknown as ReliableSocket)
    })
  })
  t.teardown(() => server.app.close())
  return { ...server, sockets, errors }
}

/** A ws client that has subscribed to `topics` (the server confirmed each). */
async function subscriber (url: string, topics: string[], protocols?: string[]): Promise<{ ws: WebSocket, received: string[] }> {
  const ws = new WebSocket(url, protocols)
  const received: string[] = []
  ws.on('message', (data, isBinary) => received.push(isBinary ? `bin:${(data as Buffer).toString('hex')}` : data.toString()))
  await once(ws, 'open')
  for (const topic of topics) ws.send(`sub:${topic}`)
  await waitFor(() => received.filter((m) => m.startsWith('subscribed:')).length === topics.length, 3000, 'subscriptions')
  received.length = 0
  return { ws, received }
}

t.test('subscribe, unsubscribe and isSubscribed; wsStats counts topics and subscriptions', async (t) => {
  const { app, url, sockets } = await pubsub(t)
  const a = await subscriber(url('/t'), ['news', 'sport'])
  const socket = sockets[0]
  t.equal(socket.isSubscribed('news'), true)
  t.equal(socket.isSubscribed('weather'), false)
  t.equal(socket.subscribe('news'), false, 'subscribing twice says so')
  t.match(app.wsStats.topics, { topics: 2, subscriptions: 2 })
  const b = await subscriber(url('/t'), ['news'])
  t.match(app.wsStats.topics, { topics: 2, subscriptions: 3 })
  t.same(app.wsTopicStats('news'), { subscribers: 2, dropped: 0 })
  t.equal(sockets[0].unsubscribe('sport'), true)
  t.equal(sockets[0].unsubscribe('sport'), false, 'not subscribed any more')
  t.equal(sockets[0].isSubscribed('sport'), false)
  t.match(app.wsStats.topics, { topics: 1, subscriptions: 2 })
  t.equal(app.wsTopicStats('sport'), null, 'a topic nobody here subscribes to is not held')
  t.same(await app.wsPublish('sport', 'goal'), { offset: 0 }, 'nobody listens: no offset')
  await app.wsPublish('news', 'hello')
  await waitFor(() => a.received.length === 1 && b.received.length === 1, 3000, 'delivery')
  t.same([a.received, b.received], [['hello'], ['hello']])
  t.match(app.wsStats.topics, { published: 2, delivered: 2 })
  a.ws.close()
  b.ws.close()
})

t.test('1,000 numbered messages on 2 topics reach their 50 subscribers, each in order, and no one else', async (t) => {
  const { app, url } = await pubsub(t)
  const clients = await Promise.all(Array.from({ length: 50 }, (_, i) => subscriber(url('/t'), i % 5 === 4 ? ['a', 'b'] : [i % 2 === 0 ? 'a' : 'b'])))
  const bystander = await subscriber(url('/t'), ['c'])
  const offsets: number[] = []
  for (let i = 1; i <= 1000; i++) {
    const topic = i % 2 === 0 ? 'a' : 'b'
    offsets.push((await app.wsPublish(topic, `${topic}${i}`)).offset)
  }
  t.same(offsets.slice(0, 4), [1, 1, 2, 2], 'offsets count per topic')
  const expected = (topics: string[]): string[] => Array.from({ length: 1000 }, (_, k) => k + 1)
    .filter((i) => topics.includes(i % 2 === 0 ? 'a' : 'b')).map((i) => `${i % 2 === 0 ? 'a' : 'b'}${i}`)
  await waitFor(() => clients.every((c, i) => c.received.length === (i % 5 === 4 ? 1000 : 500)), 10_000, 'every message')
  clients.forEach((c, i) => {
    const topics = i % 5 === 4 ? ['a', 'b'] : [i % 2 === 0 ? 'a' : 'b']
    if (JSON.stringify(c.received) !== JSON.stringify(expected(topics))) t.fail(`client ${i} (${topics.join()}) got them out of order or wrong`)
  })
  t.same(bystander.received, [], 'a socket subscribed elsewhere gets nothing')
  const perSocket = clients.reduce((n, c) => n + c.received.length, 0)
  t.equal(app.wsStats.topics.delivered, perSocket)
  t.equal(app.wsStats.messages.sent >= perSocket, true, 'counted as messages sent')
  for (const c of [...clients, bystander]) c.ws.close()
})

t.test("a socket's subscriptions end with it: the topic is let go, and numbered afresh when subscribed again", async (t) => {
  const { app, url } = await pubsub(t)
  const a = await subscriber(url('/t'), ['x', 'y'])
  t.same(await app.wsPublish('x', '1'), { offset: 1 })
  t.same(await app.wsPublish('x', '2'), { offset: 2 })
  a.ws.close()
  await waitFor(() => app.wsStats.topics.subscriptions === 0, 3000, 'the close')
  t.match(app.wsStats.topics, { topics: 0, subscriptions: 0 })
  t.same(await app.wsPublish('x', 'nobody'), { offset: 0 }, 'the broker let the topic go')
  const b = await subscriber(url('/t'), ['x'])
  t.same(await app.wsPublish('x', 'again'), { offset: 1 }, 'a new history')
  await waitFor(() => b.received.length === 1, 3000, 'delivery')
  b.ws.close()
})

t.test('topic names are checked: invalid ones and subscriptions over maxSubscriptions throw coded errors, counted', async (t) => {
  const { app, url, sockets, errors } = await pubsub(t, { limits: { maxSubscriptions: 2 }, topics: { maxTopicLength: 8 } })
  const a = await subscriber(url('/t'), ['one', 'two'])
  const socket = sockets[0]
  for (const topic of ['', 'has space', 'é', 'tab\t', '123456789', 'new\nline']) {
    t.throws(() => socket.subscribe(topic), { code: 'FST_RELIABLE_WS_INVALID_TOPIC' }, JSON.stringify(topic))
  }
  t.throws(() => socket.subscribe(42 as unknown as string), { code: 'FST_RELIABLE_WS_INVALID_TOPIC', message: /a number, not a string/ })
  t.throws(() => socket.subscribe('three'), { code: 'FST_RELIABLE_WS_TOO_MANY_SUBSCRIPTIONS', message: /\(2\)/ })
  t.equal(socket.subscribe('one'), false, 'full, but subscribing again is not one more')
  a.ws.send('sub:three')
  await waitFor(() => a.received.length === 1, 3000, 'the answer')
  t.same(a.received, ['error:FST_RELIABLE_WS_TOO_MANY_SUBSCRIPTIONS'])
  t.equal(errors.length, 1)
  t.match(app.wsStats.topics, { invalid: 7, refused: 2, subscriptions: 2 })
  await t.rejects(app.wsPublish('bad topic', 'x'), { code: 'FST_RELIABLE_WS_INVALID_TOPIC' })
  t.equal(socket.isSubscribed('bad topic'), false)
  socket.unsubscribe('one')
  t.equal(socket.subscribe('~!#$%&()*'.slice(0, 8)), true, 'printable ASCII, up to maxTopicLength')
  a.ws.close()
  await once(a.ws, 'close')
  await waitFor(() => socket.readyState === WebSocket.CLOSED, 3000, 'the server side to close')
  t.throws(() => socket.subscribe('late'), { code: 'FST_RELIABLE_WS_NOT_OPEN' }, 'a closed socket subscribes to nothing')
  t.equal(app.wsStats.topics.subscriptions, 0)
})
