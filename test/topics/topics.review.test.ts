// Topics at their edges: subscriptions that change mid fan-out, throws during delivery, the subprotocol's escaping,
// published buffers reused by the application, sockets that have closed, the fan-out queue's bound.
import t from 'tap'
import type { Test } from 'tap'
import { once } from 'node:events'
import WebSocket from 'ws'
import type { FastifyInstance } from 'fastify'
import { ReliableWebSocket } from '../../lib/client'
import type { ReliableSocket, Route } from '../../lib/core/shapes'
import { kPublished, kRoute } from '../../lib/core/symbols'
import { TOPIC_GAP_CODE } from '../../lib/protocol/protocol'
import { SLICE } from '../../lib/topics/fan-out'
import type { TopicHub } from '../../lib/topics/topic-hub'
import { RawPeer, start, waitFor } from '../helpers/helpers'
import type { Options } from '../helpers/helpers'

type Teardown = { teardown: (fn: () => unknown) => void }

const SUBPROTOCOL = ['Sec-WebSocket-Protocol: reliable-ws.v1']

/** `/first` (with `reliable`) and `/wide` subscribe every socket to `wide`; the sockets of `/first` are kept. */
async function wide (t: Teardown, reliable: object, options: Options = {}): Promise<{ app: FastifyInstance, url: (path: string) => string, port: number, sockets: ReliableSocket[] }> {
  const sockets: ReliableSocket[] = []
  const server = await start({ logging: { connections: false }, ...options }, (app) => {
    app.get('/first', { websocket: true, config: { reliable } }, (socket) => {
      sockets.push(socket as unknown as ReliableSocket)
      socket.subscribe('wide')
    })
    app.get('/wide', { websocket: true, config: { reliable: {} } }, (socket) => {
      socket.subscribe('wide')
    })
  })
  t.teardown(() => server.app.close())
  return { ...server, sockets }
}

/** `n` plain ws clients, each subscribed to `wide` by its route. */
async function crowd (t: Teardown, url: string, n: number): Promise<void> {
  for (let batch = 0; batch < n; batch += 250) {
    await Promise.all(Array.from({ length: Math.min(250, n - batch) }, async () => {
      const ws = new WebSocket(url)
      t.teardown(() => ws.terminate())
      await once(ws, 'open')
    }))
  }
}

const settle = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Publishes `one` to `wide` and, while it is still going out, unsubscribes `socket` and subscribes it again; then
 * publishes `two` and waits until `got` holds two messages, and a little longer for any third.
 */
async function resubscribeDuringDelivery (t: Test, app: FastifyInstance, socket: ReliableSocket, got: string[]): Promise<void> {
  const published = app.wsPublish('wide', 'one')
  // The first slice, this socket's delivery in it, ran inside wsPublish; the rest waits for the next turn.
  t.equal(app.wsStats.topics.queued, 1, 'the message is still going out')
  socket.unsubscribe('wide')
  socket.subscribe('wide')
  await published
  await waitFor(() => app.wsStats.topics.queued === 0, 3000, 'the fan-out')
  await app.wsPublish('wide', 'two')
  await waitFor(() => got.length >= 2, 3000, 'the next message')
  await settle(100)
}

t.test('a socket that unsubscribes and subscribes again while a message is going out does not get it twice', async (t) => {
  const { app, url, sockets } = await wide(t, {})
  const target = new WebSocket(url('/first'))
  const got: string[] = []
  target.on('message', (data) => got.push(data.toString()))
  await once(target, 'open')
  await crowd(t, url('/wide'), SLICE)
  await waitFor(() => app.wsStats.topics.subscriptions === SLICE + 1, 10_000, 'the subscriptions')
  await resubscribeDuringDelivery(t, app, sockets[0], got)
  t.same(got, ['one', 'two'], 'each message once')
  t.equal(app.wsStats.topics.delivered, 2 * SLICE + 2)
  target.close()
})

t.test('a session that subscribes again while a message is going out gets it once in its exactly-once stream', async (t) => {
  const { app, url, sockets } = await wide(t, { resume: true })
  const client = new ReliableWebSocket(url('/first'), { WebSocket })
  const got: string[] = []
  client.addEventListener('message', (event) => got.push(String(event.data)))
  await once(client as any, 'open')
  t.ok(sockets[0].session)
  await crowd(t, url('/wide'), SLICE)
  await waitFor(() => app.wsStats.topics.subscriptions === SLICE + 1, 10_000, 'the subscriptions')
  await resubscribeDuringDelivery(t, app, sockets[0], got)
  t.same(got, ['one', 'two'], 'exactly once')
  t.equal(sockets[0].session!.unacknowledged, 2, 'the session holds each message once')
  client.close()
})

t.test('a published Buffer is copied: changing it after wsPublish changes nothing a later slice sends', async (t) => {
  const { app, url } = await wide(t, {})
  await crowd(t, url('/wide'), SLICE)
  const last = new WebSocket(url('/first'))
  const got: Buffer[] = []
  last.on('message', (data: Buffer) => got.push(data))
  await once(last, 'open')
  await waitFor(() => app.wsStats.topics.subscriptions === SLICE + 1, 10_000, 'the subscriptions')
  const data = Buffer.from('original')
  const published = app.wsPublish('wide', data)
  // The last subscriber is served in the next slice.
  data.write('MUTATED!')
  await published
  await waitFor(() => got.length === 1, 3000, 'the message')
  t.equal(got[0].toString(), 'original')
  last.close()
})

t.test('a throw while delivering to one subscriber fails only its connection: the others still get the message', async (t) => {
  const { app, port } = await wide(t, { resume: { maxBufferedMessages: 1 } })
  const session = await RawPeer.connect(port, '/first', SUBPROTOCOL)
  t.teardown(() => session.destroy())
  await waitFor(() => app.wsStats.topics.subscriptions === 1, 3000, 'the session')
  // And one whose client is away: its throw has no connection to fail, and is logged.
  const away = await RawPeer.connect(port, '/first', SUBPROTOCOL)
  await waitFor(() => app.wsStats.topics.subscriptions === 2, 3000, 'the second session')
  away.destroy()
  await waitFor(() => app.wsStats.sessions.active === 2 && app.wsStats.connections.active === 1, 3000, 'the client to be away')
  // Nothing of the plugin's own throws there; what an application or a dependency might (a log serializer, a
  // store) is stood in for by the first delivery to each session throwing.
  for (const peer of [session, away]) {
    const { session: id } = JSON.parse(peer.frames[0].payload.toString().slice(1)) as { session: string }
    const live = app.wsSessions.get(id)! as unknown as Record<symbol, (...args: unknown[]) => boolean>
    const published = live[kPublished].bind(live)
    let throws = true
    live[kPublished] = (...args: unknown[]) => {
      if (throws) {
        throws = false
        throw new Error('delivery failed')
      }
      return published(...args)
    }
  }
  const plain = new WebSocket(`ws://127.0.0.1:${port}/wide`)
  const got: string[] = []
  plain.on('message', (data) => got.push(data.toString()))
  await once(plain, 'open')
  await waitFor(() => app.wsStats.topics.subscriptions === 3, 3000, 'the socket')
  await app.wsPublish('wide', 'one')
  await app.wsPublish('wide', 'two')
  await waitFor(() => got.length === 2, 3000, 'both messages')
  t.same(got, ['one', 'two'])
  t.equal(app.wsStats.topics.queued, 0, 'nothing left waiting')
  await waitFor(() => session.closeCode() !== null, 3000, 'the failed connection to close')
  t.ok([1011, 4800].includes(session.closeCode()!), 'the session\'s connection is closed')
  plain.close()
})

t.test('on the subprotocol a string sent as binary goes as it is, even starting with U+0000: published, or sent by a socket or a session', async (t) => {
  const server = await start({ logging: { connections: false } }, (app) => {
    const route = (socket: ReliableSocket): void => {
      socket.subscribe('x')
      socket.on('message', () => socket.send('\u0000sent', { binary: true }))
    }
    app.get('/live', { websocket: true, config: { reliable: {} } }, route as any)
    app.get('/sess', { websocket: true, config: { reliable: { resume: true } } }, route as any)
  })
  t.teardown(() => server.app.close())
  const live = await RawPeer.connect(server.port, '/live', SUBPROTOCOL)
  const sess = await RawPeer.connect(server.port, '/sess', SUBPROTOCOL)
  t.teardown(() => { live.destroy(); sess.destroy() })
  await waitFor(() => live.frames.length === 1 && sess.frames.length === 1, 3000, 'the welcomes')
  await waitFor(() => server.app.wsStats.topics.subscriptions === 2, 3000, 'the subscriptions')
  await server.app.wsPublish('x', '\u0000ab', { binary: true })
  live.send(0x1, 'go')
  sess.send(0x1, 'go')
  await waitFor(() => live.frames.length === 3 && sess.frames.length === 3, 3000, 'the messages')
  for (const peer of [live, sess]) {
    t.same(peer.frames.slice(1).map((frame) => [frame.opcode, frame.payload.toString('hex')]), [
      [0x2, Buffer.from('\u0000ab').toString('hex')],
      [0x2, Buffer.from('\u0000sent').toString('hex')]
    ])
  }
})

t.test("a socket that has closed no longer acts on its session's subscriptions: unsubscribe is false and changes nothing", async (t) => {
  const seen: boolean[] = []
  const sockets: ReliableSocket[] = []
  const server = await start({ logging: { connections: false } }, (app) => {
    app.get('/t', { websocket: true, config: { reliable: { resume: true } } }, (socket) => {
      sockets.push(socket as unknown as ReliableSocket)
      socket.subscribe('room')
      socket.on('close', () => seen.push(socket.isSubscribed('room'), socket.unsubscribe('room')))
    })
  })
  t.teardown(() => server.app.close())
  const peer = await RawPeer.connect(server.port, '/t', SUBPROTOCOL)
  t.teardown(() => peer.destroy())
  await waitFor(() => server.app.wsStats.topics.subscriptions === 1, 3000, 'the subscription')
  t.equal(sockets[0].isSubscribed('room'), true)
  const session = sockets[0].session!
  peer.destroy()
  await waitFor(() => seen.length === 2, 3000, 'the close')
  t.same(seen, [false, false])
  t.equal(session.connected, false, 'the session waits for its client')
  t.equal(server.app.wsStats.topics.subscriptions, 1, 'and keeps its subscription')
})

t.test('a topic with topics.maxQueuedMessages waiting: wsPublish rejects; a message from another instance is a gap for sessions and a drop for sockets', async (t) => {
  const { app, url, port, sockets } = await wide(t, { resume: true }, { topics: { maxQueuedMessages: 2 } } as Options)
  const session = await RawPeer.connect(port, '/first', SUBPROTOCOL)
  t.teardown(() => session.destroy())
  await crowd(t, url('/wide'), SLICE)
  await waitFor(() => app.wsStats.topics.subscriptions === SLICE + 1, 10_000, 'the subscriptions')
  // Each message goes out over two slices: the second publish waits behind the first.
  const first = app.wsPublish('wide', 'one')
  const second = app.wsPublish('wide', 'two')
  t.equal(app.wsStats.topics.queued, 2)
  await t.rejects(app.wsPublish('wide', 'three'), { code: 'FST_RELIABLE_WS_PUBLISH_BACKLOG', statusCode: 503 })
  const hub = (sockets[0][kRoute] as Route).ctx.topics as TopicHub
  hub.deliver({ topic: 'wide', offset: 99, epoch: 'remote', data: 'from afar', binary: false })
  t.equal(app.wsStats.topics.queued, 2, 'not queued')
  t.match(app.wsStats.topics, { gaps: 1, dropped: SLICE }, 'a gap, and a drop for each socket')
  hub.deliver({ topic: 'nobody-here', offset: 1, epoch: 'remote', data: 'x', binary: false })
  t.match(app.wsStats.topics, { queued: 2, gaps: 1 }, 'a message of a topic nobody here subscribes to is let go')
  await waitFor(() => session.closeCode() === TOPIC_GAP_CODE, 3000, 'the session to end')
  await Promise.all([first, second])
  await waitFor(() => app.wsStats.topics.queued === 0, 3000, 'the fan-out')
  await t.resolves(app.wsPublish('wide', 'four'), 'taken again once the fan-out caught up')
})

t.test('an instance holds at most topics.maxTopics topics: a subscription to one more throws, counted in refused', async (t) => {
  const errors: string[] = []
  const server = await start({ logging: { connections: false }, topics: { maxTopics: 2 } } as Options, (app) => {
    app.get('/t', { websocket: true, config: { reliable: {} } }, (socket) => {
      for (const topic of ['a', 'b', 'a', 'c']) {
        try {
          socket.subscribe(topic)
        } catch (err) {
          errors.push((err as { code: string }).code)
        }
      }
    })
  })
  t.teardown(() => server.app.close())
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}/t`)
  await once(ws, 'open')
  await waitFor(() => errors.length === 1, 3000, 'the refusal')
  t.same(errors, ['FST_RELIABLE_WS_TOO_MANY_TOPICS'])
  t.match(server.app.wsStats.topics, { topics: 2, subscriptions: 2, refused: 1 })
  ws.close()
})

t.test("on a session route a publish is framed once for all the sessions, on the wire as the session's own send", async (t) => {
  const server = await start({ logging: { connections: false } }, (app) => {
    app.get('/s', { websocket: true, config: { reliable: { resume: true } } }, (socket) => {
      socket.subscribe('x')
      socket.on('message', (data: Buffer) => socket.send(data.toString().slice(5)))
    })
  })
  t.teardown(() => server.app.close())
  const peers = await Promise.all([0, 1, 2].map(async () => await RawPeer.connect(server.port, '/s', SUBPROTOCOL)))
  t.teardown(() => { for (const peer of peers) peer.destroy() })
  await waitFor(() => server.app.wsStats.topics.subscriptions === 3, 3000, 'the subscriptions')
  const chunks: Buffer[] = []
  peers[0].socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  // ws's Sender.frame builds every frame ws writes, and the topic's: counted, not replaced.
  const Sender = (WebSocket as unknown as { Sender: { frame: (...args: unknown[]) => Buffer[] } }).Sender
  const frame = Sender.frame
  let framed = 0
  t.teardown(() => { Sender.frame = frame })
  for (const text of ['to every session', '\u0000starts with the mark']) {
    const counts = peers.map((peer) => peer.frames.length)
    const before = counts[0]
    chunks.length = framed = 0
    Sender.frame = (...args: unknown[]) => { framed++; return frame(...args) }
    await server.app.wsPublish('x', text)
    await waitFor(() => peers.every((peer, i) => peer.frames.length === counts[i] + 1), 3000, 'the message')
    Sender.frame = frame
    t.equal(framed, 1, `framed once for three sessions: ${JSON.stringify(text)}`)
    const published = Buffer.concat(chunks)
    chunks.length = 0
    peers[0].send(0x1, `send:${text}`)
    await waitFor(() => peers[0].frames.length === before + 2, 3000, 'the send')
    t.same(Buffer.concat(chunks), published, 'the same bytes as the session\'s own send')
    t.equal(peers[0].frames[before].payload.toString(), text.startsWith('\u0000') ? `\u0000${text}` : text)
  }
})

t.test('a throw while refusing a slow subscriber (the logger) closes it with 1011; the others get every message', async (t) => {
  // The slow consumer's warning throws, as a logger's hook or serializer may.
  const logger = {
    level: 'warn',
    stream: { write () {} },
    hooks: {
      logMethod (this: unknown, args: unknown[], method: (...args: unknown[]) => void) {
        if (String(args.at(-1)).includes('slow consumer')) throw new Error('logger down')
        method.apply(this, args)
      }
    }
  }
  const server = await start({ logging: { connections: false } }, (app) => {
    app.get('/slow', { websocket: true, config: { reliable: { backpressure: { highWaterMark: 16_384, lowWaterMark: 0, onLimit: 'close' } } } }, (socket) => {
      socket.subscribe('big')
    })
    app.get('/fast', { websocket: true, config: { reliable: { backpressure: { highWaterMark: 64 * 1024 * 1024 } } } }, (socket) => {
      socket.subscribe('big')
    })
  }, { logger })
  t.teardown(() => server.app.close())
  const slow = new WebSocket(server.url('/slow'))
  await once(slow, 'open')
  const fast = new WebSocket(server.url('/fast'))
  let received = 0
  fast.on('message', () => { received++ })
  await once(fast, 'open')
  await waitFor(() => server.app.wsStats.topics.subscriptions === 2, 3000, 'the subscriptions')
  ;(slow as unknown as { _socket: { pause: () => void } })._socket.pause()
  const closed = once(slow, 'close')
  const payload = Buffer.alloc(65_536, 1)
  let published = 0
  for (; published < 300 && server.app.wsStats.backpressure.slowConsumersClosed === 0; published++) await server.app.wsPublish('big', payload)
  t.equal(server.app.wsStats.backpressure.slowConsumersClosed, 1, 'refused, and the warning threw')
  await server.app.wsPublish('big', payload)
  await waitFor(() => received === published + 1, 5000, 'every message to the other subscriber')
  ;(slow as unknown as { _socket: { resume: () => void } })._socket.resume()
  const [code] = await closed
  t.equal(code, 1011)
  t.ok(server.app.wsStats.errors >= 1, 'counted as an error')
  fast.close()
})
