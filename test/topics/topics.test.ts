// Publish/subscribe with the in-process broker: subscriptions, delivery in order, sessions, gaps, backpressure, limits.
import t from 'tap'
import { once } from 'node:events'
import WebSocket from 'ws'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import reliableWs = require('../../index')
import { ReliableWebSocket } from '../../lib/client'
import type { SessionLostEvent } from '../../lib/client'
import { kRoute } from '../../lib/core/symbols'
import type { ReliableSocket, Route } from '../../lib/core/shapes'
import type { TopicHub } from '../../lib/topics/topic-hub'
import { SLICE } from '../../lib/topics/fan-out'
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
          else if (text.startsWith('bin:')) socket.send(Buffer.from(text.slice(4), 'hex'))
          else if (text === 'blob') {
            // ws reads a Blob asynchronously: its sender is busy meanwhile, and a publish must wait its turn.
            socket.send(new Blob(['blob first']))
            app.wsPublish('x', 'published after').catch((err: Error) => errors.push(err))
          } else if (text === 'fragments') {
            socket.send('part 1, ', { fin: false })
            app.wsPublish('x', 'published mid-message').catch((err: Error) => errors.push(err))
            socket.send('part 2', { fin: true })
          }
        } catch (err) {
          errors.push(err as Error)
          socket.send(`error:${(err as { code: string }).code}`)
        }
      })
    })
    app.get('/plain', { websocket: true, config: { reliable: false } }, (socket) => {
      sockets.push(socket as unknown as ReliableSocket)
    })
    app.get('/wide', { websocket: true, config: { reliable } }, (socket) => {
      sockets.push(socket as unknown as ReliableSocket)
      socket.subscribe('wide')
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
  // A socket closing is skipped, not counted: its subscriptions end with its close.
  const closed = closeEvent(b.ws)
  sockets[1].close()
  await app.wsPublish('news', 'after close')
  await waitFor(() => a.received.length === 2, 3000, 'delivery')
  t.equal(app.wsStats.topics.delivered, 3)
  await closed
  t.same(b.received, ['hello'])
  a.ws.close()
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

// The client in lib/client/, with fast retries, collecting what it receives and the sessions it lost.
function reliableClient (url: string): { ws: ReliableWebSocket, received: string[], lost: SessionLostEvent[] } {
  const ws = new ReliableWebSocket(url, { WebSocket, backoff: { initialDelayMs: 5, maxDelayMs: 20, slowAfter: Infinity } })
  const received: string[] = []
  const lost: SessionLostEvent[] = []
  ws.addEventListener('message', (event) => received.push(String(event.data)))
  ws.addEventListener('sessionlost', (event) => lost.push(event))
  return { ws, received, lost }
}

t.test('on a route with sessions the session subscribes: a client away within ttl gets every message published meanwhile, once, in order', async (t) => {
  const { app, port, sockets } = await pubsub(t, {}, { resume: true })
  const proxy = await FaultProxy.start(port)
  t.teardown(() => proxy.close())
  const { ws, received, lost } = reliableClient(proxy.url('/t'))
  await once(ws as any, 'open')
  ws.send('sub:room')
  await waitFor(() => received.length === 1, 3000, 'the subscription')
  received.length = 0
  const first = sockets[0]
  t.ok(first.session, 'the socket has a session')
  for (let i = 1; i <= 10; i++) await app.wsPublish('room', `m${i}`)
  await waitFor(() => received.length === 10, 3000, 'live messages')

  proxy.refuse = true
  proxy.cut()
  await once(ws as any, 'close')
  await waitFor(() => first.session?.connected === false, 3000, 'the server to notice')
  t.match(app.wsStats.topics, { topics: 1, subscriptions: 1 }, 'the subscription outlives the socket')
  for (let i = 11; i <= 300; i++) await app.wsPublish('room', `m${i}`)
  proxy.refuse = false
  await once(ws as any, 'reconnected')
  await waitFor(() => received.length >= 300, 5000, 'the replay')
  t.same(received, Array.from({ length: 300 }, (_, i) => `m${i + 1}`), 'every message exactly once, in order')
  t.same(lost, [])
  t.equal(sockets[1].isSubscribed('room'), true, 'the new connection carries the session\'s subscriptions')
  for (let i = 301; i <= 310; i++) await app.wsPublish('room', `m${i}`)
  await app.wsPublish('room', Buffer.from([1, 2]))
  await waitFor(() => received.length === 311, 3000, 'live again')
  t.same(received.slice(300, 310), Array.from({ length: 10 }, (_, i) => `m${i + 301}`))
  t.ok(received[310] !== '' && typeof received[310] === 'string', 'a binary message through the session')
  ws.close()
  await once(ws as any, 'close')
  t.equal(app.wsStats.topics.subscriptions, 1, 'closing the socket does not end the session')
})

t.test('a session whose subscriptions overflow it ends with 4800 and leaves its topics', async (t) => {
  const { app, url } = await pubsub(t, {}, { resume: { maxBufferedMessages: 5 } })
  const { ws, received, lost } = reliableClient(url('/t'))
  await once(ws as any, 'open')
  ws.send('sub:flood')
  await waitFor(() => received.length === 1, 3000, 'the subscription')
  const codes: number[] = []
  ws.addEventListener('close', (event) => codes.push((event as unknown as { code: number }).code))
  // Nothing is acknowledged before 64 messages: the sixth unacknowledged one overflows the session.
  for (let i = 0; i < 10; i++) await app.wsPublish('flood', `f${i}`)
  await waitFor(() => lost.length === 1, 3000, 'sessionlost')
  t.same(codes, [4800])
  t.match(app.wsStats.sessions, { overflowed: 1 })
  t.match(app.wsStats.topics, { topics: 0, subscriptions: 0 }, 'the session left its topics as it ended')
  ws.close()
})

t.test('a gap in a topic ends every session subscribed to it (4801, sessionlost); other subscribers only count it', async (t) => {
  const { app, url, port, sockets } = await pubsub(t, {}, { resume: true })
  const { ws, received, lost } = reliableClient(url('/t'))
  await once(ws as any, 'open')
  ws.send('sub:prices')
  await waitFor(() => received.length === 1, 3000, 'the subscription')
  const codes: number[] = []
  const reasons: string[] = []
  const order: string[] = []
  ws.addEventListener('close', (event) => {
    const { code, reason } = event as unknown as { code: number, reason: string }
    codes.push(code)
    reasons.push(reason)
    order.push('close')
  })
  ws.addEventListener('sessionlost', () => order.push('sessionlost'))
  // A plain ws client on the same route has no session.
  const plain = await subscriber(`ws://127.0.0.1:${port}/t`, ['prices'])
  const other = reliableClient(url('/t'))
  await once(other.ws as any, 'open')
  other.ws.send('sub:other')
  await waitFor(() => other.received.length === 1, 3000, 'the other subscription')
  const sessionId = ws.session
  t.match(app.wsStats.topics, { topics: 2, subscriptions: 3 })

  hubOf(sockets[0]).gap('prices', 'epoch')
  await waitFor(() => lost.length === 1, 3000, 'sessionlost')
  t.same(codes, [TOPIC_GAP_CODE])
  t.same(reasons, ['Topic history lost'])
  t.same(order, ['sessionlost', 'close'], 'the client knows its session is lost from the close code, before reconnecting')
  t.equal(app.wsSessions.get(sessionId!), undefined, 'the session has ended')
  t.match(app.wsStats.topics, { gaps: 1, topics: 2, subscriptions: 2 })
  t.match(app.wsStats.sessions, { topicGaps: 1 })
  t.equal(app.wsStats.closeCodes[String(TOPIC_GAP_CODE)], 1)
  t.equal(plain.ws.readyState, WebSocket.OPEN, 'a subscriber without a session was promised only live messages')
  t.same(other.lost, [], 'a session of another topic goes on')
  await waitFor(() => ws.session !== null && ws.session !== sessionId, 3000, 'a new session')
  hubOf(sockets[0]).gap('nobody-here', 'trimmed')
  t.equal(app.wsStats.topics.gaps, 2)
  ws.close()
  other.ws.close()
  plain.ws.close()
})

t.test("backpressure: 'drop' counts the refused deliveries per topic and per route", async (t) => {
  const { app, url } = await pubsub(t, {}, { backpressure: { highWaterMark: 16_384, lowWaterMark: 0 } })
  const slow = await subscriber(url('/t'), ['big'])
  const fast = await subscriber(url('/t'), ['big'])
  ;(slow.ws as unknown as { _socket: { pause: () => void } })._socket.pause()
  const payload = Buffer.alloc(65_536, 1)
  for (let i = 0; i < 300 && app.wsStats.topics.dropped === 0; i++) await app.wsPublish('big', payload)
  const dropped = app.wsStats.topics.dropped
  t.ok(dropped > 0, 'deliveries to the slow subscriber were dropped')
  t.same(app.wsTopicStats('big'), { subscribers: 2, dropped })
  t.equal(app.wsStats.messages.dropped, dropped, 'in the route\'s dropped counter too')
  t.equal(slow.ws.readyState, WebSocket.OPEN, 'dropping keeps the socket')
  t.equal(fast.ws.readyState, WebSocket.OPEN)
  slow.ws.terminate()
  fast.ws.close()
})

t.test("backpressure: 'close' closes a slow subscriber with 1013", async (t) => {
  const { app, url } = await pubsub(t, {}, { backpressure: { highWaterMark: 16_384, lowWaterMark: 0, onLimit: 'close' } })
  const slow = await subscriber(url('/t'), ['big'])
  ;(slow.ws as unknown as { _socket: { pause: () => void } })._socket.pause()
  const payload = Buffer.alloc(65_536, 1)
  for (let i = 0; i < 300 && app.wsStats.topics.dropped === 0; i++) await app.wsPublish('big', payload)
  t.ok(app.wsStats.topics.dropped > 0)
  t.equal(app.wsStats.backpressure.slowConsumersClosed, 1)
  const closed = closeEvent(slow.ws)
  ;(slow.ws as unknown as { _socket: { resume: () => void } })._socket.resume()
  t.equal((await closed).code, 1013)
  await waitFor(() => app.wsStats.topics.subscriptions === 0, 3000, 'its subscriptions to end')
})

/** Everything a raw peer receives, byte for byte, from now on. */
function wire (peer: RawPeer): Buffer[] {
  const chunks: Buffer[] = []
  peer.socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  return chunks
}

async function bytesOf (peer: RawPeer, chunks: Buffer[], act: () => unknown, frames: number): Promise<Buffer> {
  const before = peer.frames.length
  chunks.length = 0
  await act()
  await waitFor(() => peer.frames.length === before + frames, 3000, 'the frames')
  return Buffer.concat(chunks)
}

t.test('a published message is on the wire exactly as an ordinary send of it: text, binary, every length encoding', async (t) => {
  const { app, port } = await pubsub(t)
  const peer = await RawPeer.connect(port, '/t')
  t.teardown(() => peer.destroy())
  peer.send(OPCODE.text, 'sub:x')
  await waitFor(() => peer.frames.length === 1, 3000, 'the subscription')
  const chunks = wire(peer)
  for (const text of ['short', 'é'.repeat(100), 'long '.repeat(14_000), '']) {
    const published = await bytesOf(peer, chunks, () => app.wsPublish('x', text), 1)
    const sent = await bytesOf(peer, chunks, () => peer.send(OPCODE.text, `send:${text}`), 1)
    t.same(published, sent, `${Buffer.byteLength(text)} bytes of text`)
  }
  const binary = Buffer.from('00ff0102', 'hex')
  const published = await bytesOf(peer, chunks, () => app.wsPublish('x', binary), 1)
  t.same(published, await bytesOf(peer, chunks, () => peer.send(OPCODE.text, 'bin:00ff0102'), 1), 'binary')
  t.same(peer.frames.at(-1), { opcode: OPCODE.binary, payload: binary })
  const asText = await bytesOf(peer, chunks, () => app.wsPublish('x', Buffer.from('text'), { binary: false }), 1)
  t.same(asText, await bytesOf(peer, chunks, () => peer.send(OPCODE.text, 'send:text'), 1), 'a buffer published as text')
})

t.test('on the subprotocol, a published text starting with U+0000 is escaped as an ordinary send escapes it; other frames are not', async (t) => {
  const { app, port } = await pubsub(t)
  const framed = await RawPeer.connect(port, '/t', ['Sec-WebSocket-Protocol: reliable-ws.v1'])
  const plain = await RawPeer.connect(port, '/t')
  t.teardown(() => { framed.destroy(); plain.destroy() })
  await waitFor(() => framed.frames.length === 1, 3000, 'the welcome')
  framed.send(OPCODE.text, 'sub:x')
  plain.send(OPCODE.text, 'sub:x')
  await waitFor(() => framed.frames.length === 2 && plain.frames.length === 1, 3000, 'the subscriptions')
  const framedWire = wire(framed)
  for (const text of ['\u0000starts with the mark', 'ordinary']) {
    const published = await bytesOf(framed, framedWire, () => app.wsPublish('x', text), 1)
    t.same(published, await bytesOf(framed, framedWire, () => framed.send(OPCODE.text, `send:${text}`), 1), JSON.stringify(text))
  }
  t.same(framed.frames.slice(-4).map((frame) => frame.payload.toString()),
    ['\u0000\u0000starts with the mark', '\u0000\u0000starts with the mark', 'ordinary', 'ordinary'])
  t.same(plain.frames.slice(-2).map((frame) => frame.payload.toString()), ['\u0000starts with the mark', 'ordinary'],
    'the same publish reaches a socket without the subprotocol unescaped')
  // A binary message is never escaped.
  const published = await bytesOf(framed, framedWire, () => app.wsPublish('x', Buffer.from([0, 1])), 1)
  t.same(published, await bytesOf(framed, framedWire, () => framed.send(OPCODE.text, 'bin:0001'), 1))
})

t.test('a publish waits behind a message ws is still reading (a Blob), and never lands inside a fragmented one', async (t) => {
  const { app, url } = await pubsub(t)
  const a = await subscriber(url('/t'), ['x'])
  a.ws.send('blob')
  await waitFor(() => a.received.length === 2, 3000, 'both messages')
  t.same(a.received, [`bin:${Buffer.from('blob first').toString('hex')}`, 'published after'], 'in the order they were sent')
  a.ws.send('fragments')
  await waitFor(() => a.received.length === 3, 3000, 'the message')
  t.same(a.received.slice(2), ['part 1, part 2'])
  t.equal(app.wsStats.topics.dropped, 1, 'the delivery that would have split it is dropped, and counted')
  t.equal(app.wsStats.messages.dropped, 1)
  a.ws.close()
})

t.test('a published frame reaches each subscriber\'s connection in one write, header and payload together', async (t) => {
  const { app, url, sockets } = await pubsub(t)
  const a = await subscriber(url('/t'), ['x'])
  const b = await subscriber(url('/t'), ['x'])
  // What each server socket hands its TCP connection (ws's private `_socket`), from the publishes on.
  const writes = sockets.map((socket) => {
    const tcp = (socket as unknown as { _socket: { write: (chunk: Buffer, ...rest: unknown[]) => boolean } })._socket
    const seen: Buffer[] = []
    const write = tcp.write
    tcp.write = function (chunk, ...rest) {
      seen.push(Buffer.from(chunk))
      return write.call(this, chunk, ...rest)
    }
    return seen
  })
  const text = 'y'.repeat(300)
  await app.wsPublish('x', text)
  await app.wsPublish('x', Buffer.from([1, 2, 3]))
  await waitFor(() => a.received.length === 2 && b.received.length === 2, 3000, 'both messages')
  // A text frame of 300 B (a 16-bit extended length), then a binary frame of 3 B.
  const expected = [Buffer.concat([Buffer.from([0x81, 126, 1, 44]), Buffer.from(text)]), Buffer.from([0x82, 3, 1, 2, 3])]
  t.same(writes, [expected, expected], 'one write per frame and subscriber')
  t.same(a.received, [text, 'bin:010203'])
  a.ws.close()
  b.ws.close()
})

t.test('a socket that compresses gets the message through its ordinary, compressing send', async (t) => {
  const { app, url } = await pubsub(t, { compression: true })
  const a = await subscriber(url('/t'), ['x'])
  t.match(a.ws.extensions, /permessage-deflate/)
  const text = 'compressible '.repeat(200)
  await app.wsPublish('x', text)
  await app.wsPublish('x', 'short')
  await waitFor(() => a.received.length === 2, 3000, 'the messages')
  t.same(a.received, [text, 'short'])
  t.equal(app.wsStats.compression.sent.messages, 1, 'the long one went out compressed')
  t.equal(app.wsStats.topics.delivered, 2)
  a.ws.close()
})

t.test('wsPublish takes strings, buffers, typed arrays and ArrayBuffers as they are; wsPublishJSON takes a value', async (t) => {
  const { app, url } = await pubsub(t)
  const a = await subscriber(url('/t'), ['x'])
  const bytes = new Uint8Array([9, 1, 2, 3, 9])
  await app.wsPublish('x', bytes.subarray(1, 4))
  await app.wsPublish('x', new Uint16Array([0x0102]).buffer)
  await app.wsPublish('x', 'text')
  await app.wsPublishJSON('x', { a: [1] })
  await t.rejects(app.wsPublishJSON('x', undefined), { code: 'FST_RELIABLE_WS_NOT_JSON' })
  for (const data of [42, null, { length: 1 }]) {
    await t.rejects(app.wsPublish('x', data as unknown as string), { code: 'FST_RELIABLE_WS_NOT_PUBLISHABLE' }, String(data))
  }
  await waitFor(() => a.received.length === 4, 3000, 'the messages')
  t.same(a.received, ['bin:010203', 'bin:0201', 'text', '{"a":[1]}'])
  t.equal(app.wsStats.topics.published, 4)
  a.ws.close()
})

t.test('5,000 subscribers: the fan-out yields to the event loop between slices, and keeps each topic in order', async (t) => {
  const { app, url, sockets } = await pubsub(t)
  const SOCKETS = 5000
  const received: string[][] = []
  for (let batch = 0; batch < SOCKETS; batch += 500) {
    await Promise.all(Array.from({ length: 500 }, async () => {
      const ws = new WebSocket(url('/wide'))
      const mine: string[] = []
      received.push(mine)
      ws.on('message', (data) => mine.push(data.toString()))
      t.teardown(() => ws.terminate())
      await once(ws, 'open')
    }))
  }
  await waitFor(() => app.wsStats.topics.subscriptions === SOCKETS, 10_000, 'every subscription')
  let probe = -1
  const published = Promise.all([app.wsPublish('wide', 'one'), app.wsPublish('wide', 'two')])
  const inCall = app.wsStats.topics.delivered
  setImmediate(() => { probe = app.wsStats.topics.delivered })
  await waitFor(() => app.wsStats.topics.delivered === 2 * SOCKETS, 20_000, 'the fan-out')
  t.same(await published, [{ offset: 1 }, { offset: 2 }])
  t.ok(inCall > 0 && inCall < SOCKETS, `the publish's own turn served a slice (${inCall})`)
  t.ok(probe > inCall && probe < 2 * SOCKETS, `a setImmediate ran in the middle of the fan-out (${probe} of ${2 * SOCKETS} delivered)`)
  await waitFor(() => received.every((mine) => mine.length === 2), 20_000, 'every client')
  t.ok(received.every((mine) => mine[0] === 'one' && mine[1] === 'two'), 'each client got both, in order')
  // Closing the hub mid fan-out: what was left of it is not delivered afterwards.
  const third = app.wsPublish('wide', 'three')
  await hubOf(sockets[0]).close()
  t.same(await third, { offset: 3 }, 'the broker had it')
  await new Promise((resolve) => setTimeout(resolve, 50))
  t.equal(app.wsStats.topics.delivered, 2 * SOCKETS + SLICE, 'one slice, then nothing')
  await t.rejects(app.wsPublish('wide', 'four'), { code: 'FST_RELIABLE_WS_BROKER_UNAVAILABLE' })
})

t.test('wsPublish rejects with FST_RELIABLE_WS_BROKER_UNAVAILABLE before ready and after close', async (t) => {
  const app = Fastify()
  await app.register(reliableWs, {})
  await t.rejects(app.wsPublish('x', 'early'), { code: 'FST_RELIABLE_WS_BROKER_UNAVAILABLE', message: /not ready/ })
  await app.ready()
  t.same(await app.wsPublish('x', 'now'), { offset: 0 })
  t.match(app.wsStats.broker, { state: 'up', lagMs: 0 })
  await app.close()
  await t.rejects(app.wsPublish('x', 'late'), { code: 'FST_RELIABLE_WS_BROKER_UNAVAILABLE', message: /closed/ })
  await t.rejects(app.wsPublishJSON('x', 1), { code: 'FST_RELIABLE_WS_BROKER_UNAVAILABLE' })
})

t.test('a socket of a route that opted out has no topics: a coded error says so', async (t) => {
  const { url, sockets } = await pubsub(t)
  const ws = await connect(url('/plain'))
  await waitFor(() => sockets.length === 1, 3000, 'the socket')
  for (const method of ['subscribe', 'unsubscribe', 'isSubscribed'] as const) {
    t.throws(() => sockets[0][method]('x'), { code: 'FST_RELIABLE_WS_NO_TOPICS' }, method)
  }
  ws.close()
})

t.test("the broker's state changes are logged: a warning when it is not up", async (t) => {
  const lines: Array<{ level: number, msg: string, broker?: string }> = []
  const stream = { write: (line: string) => { lines.push(JSON.parse(line)) } }
  let socket: unknown = null
  const { app, url } = await start({ logging: { connections: false } }, (app) => {
    app.get('/t', { websocket: true }, (s) => { socket = s })
  }, { logger: { level: 'info', stream } })
  t.teardown(() => app.close())
  const ws = await connect(url('/t'))
  await waitFor(() => socket !== null, 3000, 'the socket')
  hubOf(socket).state('down')
  hubOf(socket).state('up')
  t.match(lines.filter((line) => line.broker !== undefined), [
    { level: 40, broker: 'down', msg: 'topic broker not up: publishes are refused' },
    { level: 30, broker: 'up', msg: 'topic broker up' }
  ])
  ws.close()
})
