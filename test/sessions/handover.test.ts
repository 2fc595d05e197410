// Sessions handed over between instances that share a store (one store object shared by instances in one process, and
// Redis): an instance closing gracefully releases each session with its counts and unacknowledged messages, and the
// client resumes it on another instance with nothing lost or repeated either way.
import t from 'tap'
import type { Test } from 'tap'
import { once } from 'node:events'
import WebSocket from 'ws'
import Fastify from 'fastify'
import type { FastifyInstance } from 'fastify'
import { Redis as RedisClient } from 'ioredis'
import type fastifyReliableWs = require('../../types/index')
import reliableWs = require('../../index')
import { ReliableWebSocket, SessionLostEvent } from '../../lib/client'
import { RedisSessionStore } from '../../lib/sessions/redis-session-store'
import { PROTOCOL, resumeToken } from '../../lib/protocol/protocol'
import { FaultProxy } from '../helpers/fault-proxy'
import { bootWith, buildFrame, OPCODE, RawPeer, sleep, start, waitFor } from '../helpers/helpers'
import { needs, REDIS } from '../helpers/programs'
import { RedisServer } from '../helpers/redis'
import { closed, moveTo, Peer } from '../helpers/session-peer'
import type { Welcome } from '../helpers/session-peer'
import { instance, KINDS, QUICK_CLOSE, Through, until } from '../helpers/shared-sessions'
import type { Instance, Shared, Teardown } from '../helpers/shared-sessions'

type SessionStore = fastifyReliableWs.SessionStore

/** A store whose releases (the handovers) reach the store underneath `ms` late. */
class SlowRelease extends Through {
  constructor (base: SessionStore, private readonly ms: number) {
    super(base)
  }

  override async release (...args: Parameters<SessionStore['release']>): Promise<fastifyReliableWs.WriteResult> {
    await sleep(this.ms)
    return await super.release(...args)
  }
}

/** A store that notes the name each instance listens under, in order, and every ask. */
class Listening extends Through {
  readonly names: string[] = []
  readonly asks: Array<[string, string, number]> = []
  override listen (...args: Parameters<NonNullable<SessionStore['listen']>>): ReturnType<NonNullable<SessionStore['listen']>> {
    this.names.push(args[0])
    return super.listen(...args)
  }

  override ask (...args: Parameters<NonNullable<SessionStore['ask']>>): ReturnType<NonNullable<SessionStore['ask']>> {
    this.asks.push(args)
    return super.ask(...args)
  }
}

interface Traffic {
  ws: ReliableWebSocket
  fromServer: string[]
  lost: SessionLostEvent[]
  clientSent: number
  serverSent: number
  stop: () => void
}

/**
 * A reliable client through `proxy`, once open sending `total` numbered messages (`c<k>`), while the session of the
 * latest connection of `current()` sends as many (`s<k>`); a session handed over refuses what is sent to it, which
 * goes to its next holder instead.
 */
async function bothWays (t: Teardown, proxy: FaultProxy, total: number, current: () => Instance): Promise<Traffic> {
  const ws = new ReliableWebSocket(proxy.url('/s'), { WebSocket, queue: { maxMessages: 5000 }, backoff: { initialDelayMs: 5, maxDelayMs: 20, slowAfter: Infinity } })
  const traffic: Traffic = { ws, fromServer: [], lost: [], clientSent: 0, serverSent: 0, stop: () => clearInterval(pump) }
  ws.addEventListener('message', (event) => traffic.fromServer.push(event.data as string))
  ws.addEventListener('sessionlost', (event) => traffic.lost.push(event))
  await once(ws as any, 'open')
  const pump = setInterval(() => {
    for (let i = 0; i < 20 && traffic.clientSent < total; i++) {
      if (!ws.send(`c${traffic.clientSent}`)) break
      traffic.clientSent++
    }
    const session = current().latest
    for (let i = 0; i < 20 && traffic.serverSent < total && session !== null && session.unacknowledged < 4000; i++) {
      if (!session.send(`s${traffic.serverSent}`)) break
      traffic.serverSent++
    }
  }, 2)
  t.teardown(traffic.stop)
  return traffic
}

const TESTS: Array<[string, (t: Test, shared: Shared) => Promise<void>]> = []

/** A test each kind of shared store runs. */
function test (name: string, fn: (t: Test, shared: Shared) => Promise<void>): void {
  TESTS.push([name, fn])
}

test('rolling restarts: every session moves to the next instance, each message delivered once, in order, both ways', async (t, shared) => {
  const TOTAL = 4000
  let current = await instance(t, shared.store(), {}, { maxBufferedMessages: 5000, maxBufferedBytes: 1 << 24 })
  const proxy = await FaultProxy.start(current.port)
  t.teardown(() => proxy.close())
  const traffic = await bothWays(t, proxy, TOTAL, () => current)
  const { ws, fromServer, lost } = traffic

  const instances = [current]
  let handedOver = 0
  for (let restart = 0; restart < 4; restart++) {
    await waitFor(() => traffic.clientSent > (restart + 1) * TOTAL / 6 && traffic.serverSent > (restart + 1) * TOTAL / 6, 10_000, `traffic before restart ${restart}`)
    const next = await instance(t, shared.store(), {}, { maxBufferedMessages: 5000, maxBufferedBytes: 1 << 24 })
    instances.push(next)
    proxy.target = next.port
    const closing = current
    await closing.app.close()
    handedOver += closing.app.wsStats.sessions.handedOver
    t.equal(closing.app.wsStats.sessions.handedOver, 1, `restart ${restart}: the session was handed over`)
    current = next
    await waitFor(() => current.latest !== null && ws.readyState === ws.OPEN, 10_000, `the resume after restart ${restart}`)
  }
  await waitFor(() => fromServer.length >= TOTAL && traffic.clientSent >= TOTAL && traffic.serverSent >= TOTAL, 20_000, 'every message sent and received by the client')
  const everyReceived = (): string[] => instances.flatMap((one) => one.received)
  await waitFor(() => everyReceived().length >= TOTAL, 10_000, 'every message received by the instances')
  traffic.stop()
  const seen = everyReceived()
  t.equal(seen.length, TOTAL, `the instances received ${TOTAL} messages between them`)
  t.ok(seen.every((text, i) => text === `c${i}`), 'client to server: each once, in order, across 4 instances')
  t.equal(fromServer.length, TOTAL)
  t.ok(fromServer.every((text, i) => text === `s${i}`), 'server to client: each once, in order')
  t.same(lost, [], 'the session was never lost')
  t.equal(handedOver, 4)
  t.same(instances.map((one) => one.resumed), [[false], [true], [true], [true], [true]], 'each new instance took the same session, resumed')
  t.match(current.app.wsStats.sessions, { claimedRemote: 1, resumed: 1, active: 1 })
  ws.close()
  await once(ws as any, 'close')
})

/** A store whose releases wait for `open()`; `released` resolves when the first is asked for. It notes every write asked for after that. */
class GatedStore extends Through {
  private readonly gate: Promise<void>
  open!: () => void
  released: Promise<void>
  private entered!: () => void
  lateWrites: Array<fastifyReliableWs.RecordChanges> | null = null

  constructor (base: SessionStore) {
    super(base)
    this.gate = new Promise((resolve) => { this.open = resolve })
    this.released = new Promise((resolve) => { this.entered = resolve })
  }

  override async write (...args: Parameters<SessionStore['write']>): Promise<fastifyReliableWs.WriteResult> {
    this.lateWrites?.push(args[2])
    return await super.write(...args)
  }

  override async release (...args: Parameters<SessionStore['release']>): Promise<fastifyReliableWs.WriteResult> {
    this.lateWrites ??= []
    this.entered()
    await this.gate
    return await super.release(...args)
  }
}

test('while an instance hands its sessions over, what the client sends is dropped unacknowledged, and sent again to the next', async (t, shared) => {
  const store = new GatedStore(shared.store())
  const a = await instance(t, store)
  const b = await instance(t, shared.store())
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  peer.ws.send('one')
  peer.ws.send('two')
  await waitFor(() => a.received.length === 2, 3000, 'the first messages')
  a.latest!.send('reply')
  await waitFor(() => peer.data().length === 1, 3000, 'the reply')
  // A client not heard yet on its connection when its session is handed over.
  const silent = new Peer(a.url('/s'))
  await silent.welcome()

  const closed = a.app.close()
  await store.released
  t.equal(a.app.wsSessions.get(welcome.session), undefined, 'no longer held by the instance closing')
  t.notOk(a.latest!.send('too late'), 'a session handed over refuses what the application sends it')
  const [refused] = await new Promise<unknown[]>((resolve) => a.socket!.send('too late', (...args: unknown[]) => resolve(args)))
  t.match(refused, { code: 'FST_RELIABLE_WS_SESSION_ENDED' }, 'and says so to a callback')
  t.throws(() => a.socket!.subscribe('news'), { code: 'FST_RELIABLE_WS_SESSION_ENDED' }, 'nor does it take a subscription it could never leave')
  peer.ws.send('three')
  // More than the session ever sent: on a live session, a protocol error.
  peer.ws.send('\u0000{"t":"ack","n":99}')
  silent.ws.send('\u0000{"t":"ping"}')
  await waitFor(() => silent.frames.length === 2, 3000, 'the pong')
  t.match(silent.frames[1], { t: 'pong', n: 0 }, 'a ping answered as ever')
  await sleep(50)
  t.same(store.lateWrites, [], 'nothing written to a record once handed over: hearing its client would mark it connected again')
  store.open()
  t.match(await peer.closed, { code: 1001 }, 'closed as any client of an instance restarting, not for its acknowledgement')
  await closed
  t.same(a.received, ['one', 'two'], 'what came after the handover did not reach the application')
  t.match(peer.frames.at(-1), { t: 'retry' })
  t.match(a.app.wsStats.sessions, { handedOver: 2, handoverFailed: 0, active: 0 })

  const back = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await back.welcome(), { session: welcome.session, resumed: true, n: 2 }, 'the next instance counts what the first received')
  await waitFor(() => back.data().length === 1, 3000, 'the replay')
  t.same(back.data(), ['reply'], 'what the client had not acknowledged, sent again')
  back.ws.send('three')
  await waitFor(() => b.received.length === 1, 3000, 'the message sent again')
  t.same(b.received, ['three'])
  t.equal(b.latest!.received, 3, 'numbered after the first instance\'s')
  t.ok(b.latest!.send('four'))
  await waitFor(() => back.data().length === 2, 3000, 'a new message')
  t.match(b.app.wsStats.sessions, { claimedRemote: 1, resumed: 1, replayed: 1, resumeRefused: 0, active: 1 })
  back.ws.close()
  await back.closed
})

test('a connection whose session would be settled once the handover has begun waits for it, then is told to come back with the others', async (t, shared) => {
  const store = new GatedStore(shared.store())
  let letIn: () => void = () => {}
  let owners = 0
  const a = await instance(t, store, {}, {
    // The second connection's owner is known only once the instance has begun handing its sessions over.
    owner: async () => {
      if (owners++ === 1) await new Promise<void>((resolve) => { letIn = resolve })
      return 'alice'
    }
  })
  const peer = new Peer(a.url('/s'))
  await peer.welcome()
  const late = new Peer(a.url('/s'))
  await waitFor(() => owners === 2, 3000, 'the second owner asked for')
  const closed = a.app.close()
  await store.released
  letIn()
  await sleep(50)
  t.same(late.frames, [], 'nothing yet: sooner, its client could find its session still held here')
  store.open()
  t.match(await late.closed, { code: 1001 })
  t.match(late.frames, [{ t: 'retry' }], 'a retry hint, and no welcome')
  await closed
  t.match(a.app.wsStats.sessions, { handedOver: 1, busy: 0, active: 0 })
})

test('a session away when its instance closes is handed over too, with what it keeps for its client', async (t, shared) => {
  const a = await instance(t, shared.store())
  const b = await instance(t, shared.store())
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  peer.ws.terminate()
  await waitFor(() => a.latest!.connected === false, 3000, 'away')
  const binary = Buffer.from([0xff, 0x00, 0xfe])
  a.latest!.send('text')
  a.latest!.send(binary)
  a.latest!.send(new Uint8Array([1, 2, 3]).subarray(1))
  a.latest!.send(new Uint8Array([4, 5]).buffer)
  await a.app.close()
  t.equal(a.app.wsStats.sessions.handedOver, 1)

  const back = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  const frames: Array<[Buffer, boolean]> = []
  back.ws.on('message', (data: Buffer, isBinary: boolean) => frames.push([data, isBinary]))
  await back.welcome()
  await waitFor(() => frames.length === 5, 3000, 'the replay')
  t.same(frames.slice(1).map(([data, isBinary]) => [[...data], isBinary]), [[[...Buffer.from('text')], false], [[0xff, 0x00, 0xfe], true], [[2, 3], true], [[4, 5], true]],
    'text as text, bytes as bytes, a view of a larger buffer as its own bytes, an ArrayBuffer as its bytes')
  back.ws.close()
  await back.closed
})

test('a session subscribed to a topic is handed over with where it stands; the in-process broker keeps no history, so the next instance ends it with 4801, never a silent gap', async (t, shared) => {
  const a = await instance(t, shared.store(), {}, {}, (socket) => socket.subscribe('news'))
  const b = await instance(t, shared.store(), {}, {}, (socket) => socket.subscribe('news'))
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  await a.app.wsPublish('news', 'one')
  await a.app.close()
  t.match(a.app.wsStats.sessions, { handedOver: 1, handoverFailed: 0 })
  t.equal(a.app.wsTopicStats('news'), null, 'its topic left with it')
  const back = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await back.welcome(), { resumed: true })
  t.match(await closed(back), { code: 4801, reason: 'Topic history lost' }, 'where it stood is another instance\'s numbering')
  t.match(b.app.wsStats.sessions, { claimedRemote: 1, topicGaps: 1, active: 0 })
  t.equal(b.app.wsStats.topics.gaps, 1)
  t.equal(b.app.wsTopicStats('news'), null, 'and it has left the topic there')
})

test('a handover the store refuses or fails is counted and logged; the instance still closes and tells its clients', async (t, shared) => {
  class FailingStore extends Through {
    calls = 0
    override async release (): Promise<fastifyReliableWs.WriteResult> {
      // The first refused (another claim took it meanwhile), the second failed.
      if (this.calls++ === 0) return 'fenced'
      throw new Error('store down')
    }
  }
  const store = new FailingStore(shared.store())
  const logs: string[] = []
  const a = await instance(t, store, {}, {}, () => {}, { logger: { level: 'warn', stream: { write: (line: string) => logs.push(line) } } })
  const peers = [new Peer(a.url('/s')), new Peer(a.url('/s'))]
  for (const peer of peers) await peer.welcome()
  await a.app.close()
  t.match(a.app.wsStats.sessions, { handedOver: 0, handoverFailed: 2 })
  for (const peer of peers) t.match(await peer.closed, { code: 1001 })
  t.ok(logs.some((line) => line.includes('handover refused') && line.includes('fenced')), 'the refusal logged with its result')
  t.ok(logs.some((line) => line.includes('handover failed') && line.includes('store down')), 'the failure logged with its error')
})

test('a store that never answers holds the close for half of shutdown.timeoutMs at most, and the clients are still told', async (t, shared) => {
  class HungStore extends Through {
    override async release (): Promise<fastifyReliableWs.WriteResult> {
      return await new Promise(() => {})
    }
  }
  const a = await instance(t, new HungStore(shared.store()), { shutdown: { ...QUICK_CLOSE, timeoutMs: 600 } })
  const peer = new Peer(a.url('/s'))
  await peer.welcome()
  const began = Date.now()
  await a.app.close()
  const took = Date.now() - began
  t.ok(took >= 250 && took < 3000, `closed after ${took} ms`)
  t.match(await peer.closed, { code: 1001 }, 'closed, not cut off')
  t.match(peer.frames.at(-1), { t: 'retry' })
})

test('a client that resumes on another instance while its session is held by a live one: asked, that one hands it over and ends its old socket `replaced`', async (t, shared) => {
  const store = new Listening(shared.store())
  const causes: string[] = []
  const a = await instance(t, store, { onDisconnect: (_socket: unknown, info: { cause: string }) => { causes.push(info.cause) } })
  const b = await instance(t, store)
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  peer.ws.send('hello')
  await waitFor(() => a.received.length === 1, 3000, 'heard')
  const session = a.latest!
  t.ok(session.send('one') && session.send('two'))
  await waitFor(() => peer.data().length === 2, 3000, 'two messages on the first connection')

  // A thief with the id alone asks nothing of anyone.
  const thief = new Peer(b.url('/s'), resumeToken(welcome.session, 'f'.repeat(32), 0))
  t.match(await thief.welcome(), { resumed: false })
  t.same(store.asks, [], 'a wrong secret asks nothing')
  t.equal(session.connected, true)

  // The client's first connection still looks open to A: the client found out first.
  const elsewhere = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await closed(elsewhere), { code: 1013, reason: 'Session busy' })
  const retry = elsewhere.frames[0] as { t: string, ms: number }
  t.ok(retry.t === 'retry' && retry.ms >= 250 && retry.ms < 2250, `told to come back once A has had a moment (${retry.ms} ms)`)
  t.same(store.asks, [[store.names[0], welcome.session, 1]], 'A asked, under its name, for the claim it holds')
  t.match(await closed(peer), { code: 1006 }, 'the old socket ended')
  await waitFor(() => causes.length === 1, 3000, 'the old socket\'s disconnect')
  t.same(causes, ['replaced'])
  // The store's release may answer after the socket's disconnect.
  await waitFor(() => a.app.wsStats.sessions.handedOver === 1, 3000, 'the handover')
  t.match(a.app.wsStats.sessions, { replacedRemote: 1, handedOver: 1, active: 0 })
  t.equal(session.send('too late'), false, 'what A holds no longer takes messages')
  t.equal(a.app.wsSessions.get(welcome.session), undefined)

  const back = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await back.welcome(), { session: welcome.session, resumed: true, n: 1 }, 'the message A received is counted')
  await waitFor(() => back.data().length === 2, 3000, 'the replay')
  t.same(back.data(), ['one', 'two'], 'what the client had not acknowledged, in order')
  t.match(b.app.wsStats.sessions, { claimedRemote: 1, resumed: 1, busy: 1, resumeRefused: 1 })
  t.ok(b.latest!.send('three'))
  await waitFor(() => back.data().length === 3, 3000, 'a message from B')
  for (const one of [thief, back]) one.ws.close()
})

test('a client moving between two live instances at every dropped connection keeps its session: each message once, in order, both ways', async (t, shared) => {
  const TOTAL = 2000
  const resume = { maxBufferedMessages: 5000, maxBufferedBytes: 1 << 24 }
  // What both instances received, in the order they received it.
  const everything: string[] = []
  const onSocket = (socket: WebSocket): void => { socket.on('message', (data: Buffer) => everything.push(data.toString())) }
  const a = await instance(t, shared.store(), {}, resume, onSocket)
  const b = await instance(t, shared.store(), {}, resume, onSocket)
  const proxy = await FaultProxy.start(a.port)
  t.teardown(() => proxy.close())
  let current = a
  const traffic = await bothWays(t, proxy, TOTAL, () => current)
  const { ws, fromServer, lost } = traffic

  for (let move = 0; move < 4; move++) {
    await waitFor(() => traffic.clientSent > (move + 1) * TOTAL / 6 && traffic.serverSent > (move + 1) * TOTAL / 6, 10_000, `traffic before move ${move}`)
    current = current === a ? b : a
    await moveTo(proxy, ws, current, `the resume after move ${move}`)
  }
  await waitFor(() => fromServer.length >= TOTAL && traffic.clientSent >= TOTAL && traffic.serverSent >= TOTAL, 20_000, 'every message sent and received by the client')
  await waitFor(() => everything.length >= TOTAL, 10_000, 'every message received by the instances')
  traffic.stop()
  t.same(lost, [], 'the session was never lost')
  t.same([...a.resumed, ...b.resumed].length, 5)
  t.same(b.resumed, [true, true])
  t.same(a.resumed, [false, true, true])
  for (const one of [a, b]) t.match(one.app.wsStats.sessions, { replacedRemote: 2, handedOver: 2, claimedRemote: 2, handoverFailed: 0 })
  t.equal(fromServer.length, TOTAL)
  t.ok(fromServer.every((text, i) => text === `s${i}`), 'server to client: each once, in order')
  t.equal(everything.length, TOTAL)
  t.ok(everything.every((text, i) => text === `c${i}`), 'client to server: each once, in order, across both instances')
  t.ok(a.received.length > 0 && b.received.length > 0)
  ws.close()
  await once(ws as any, 'close')
})

test('with a store that cannot ask (no listen, no ask), a session held by a live instance stays there: the client begins anew elsewhere', async (t, shared) => {
  const unasked = (): SessionStore => Object.assign(new Through(shared.store()), { listen: undefined, ask: undefined })
  const a = await instance(t, unasked())
  const b = await instance(t, unasked())
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  const elsewhere = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await elsewhere.welcome(), { resumed: false })
  t.match(b.app.wsStats.sessions, { resumeRefused: 1, busy: 0 })
  t.equal(a.latest!.connected, true, 'the session stays where it is')
  t.equal(a.app.wsStats.sessions.replacedRemote, 0)
  elsewhere.ws.close()
})

test('asked for a session with an older claim, an instance keeps it: the client came back to it since', async (t, shared) => {
  const store = new Listening(shared.store())
  const a = await instance(t, store)
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  await store.ask(store.names[0], welcome.session, 2)
  await store.ask(store.names[0], 'f'.repeat(32), 1)
  await sleep(50)
  t.equal(a.latest!.connected, true)
  t.equal(a.app.wsStats.sessions.replacedRemote, 0)
  await store.ask(store.names[0], welcome.session, 1)
  await waitFor(() => a.app.wsStats.sessions.replacedRemote === 1, 3000, 'the session given up')
  t.match(await closed(peer), { code: 1006 })
})

test('a holder slow to hand over, within its time: the client comes back as often as told, and resumes once the handover is in', async (t, shared) => {
  const a = await instance(t, new SlowRelease(shared.store(), 1200))
  const b = await instance(t, shared.store())
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  t.ok(a.latest!.send('kept'))
  let tries = 0
  for (;;) {
    tries++
    const next = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
    const welcomed = (): Welcome | undefined => next.frames.find((frame) => (frame as Welcome).t === 'welcome') as Welcome | undefined
    await waitFor(() => welcomed() !== undefined || next.ws.readyState === WebSocket.CLOSED, 3000, 'a welcome or a close')
    if (welcomed() !== undefined) {
      t.match(welcomed(), { session: welcome.session, resumed: true, n: 0 })
      await waitFor(() => next.data().length === 1, 3000, 'the replay')
      next.ws.close()
      break
    }
    t.match(await closed(next), { code: 1013, reason: 'Session busy' })
    t.ok(tries < 20, 'comes back within the holder\'s time')
    await sleep(100)
  }
  t.ok(tries > 1, `came back ${tries - 1} times before the handover was in`)
  t.match(b.app.wsStats.sessions, { claimedRemote: 1, resumeRefused: 0 })
})

test('a message ws parses on the old socket after the session was given up is dropped: the client sends it again where it resumes', async (t, shared) => {
  const store = new Listening(shared.store())
  const a = await instance(t, store, {}, {}, (socket) => {
    socket.on('message', (data: Buffer) => {
      // The ask arriving between two messages ws parses from one read.
      if (data.toString() === 'one') (a.app.wsSessions as unknown as { surrender: (id: string, fence: number) => void }).surrender(socket.session!.id, 1)
    })
  })
  const b = await instance(t, shared.store())
  const raw = await RawPeer.connect(a.port, '/s', [`Sec-WebSocket-Protocol: ${PROTOCOL}`])
  t.teardown(() => raw.destroy())
  await waitFor(() => raw.frames.length > 0, 3000, 'the welcome')
  const welcome = JSON.parse(raw.frames[0].payload.subarray(1).toString()) as Welcome
  raw.socket.write(Buffer.concat([buildFrame({ opcode: OPCODE.text, payload: 'one' }), buildFrame({ opcode: OPCODE.text, payload: 'two' })]))
  await waitFor(() => a.app.wsStats.sessions.replacedRemote === 1, 3000, 'the session given up')
  await sleep(50)
  t.same(a.received, ['one'], 'the second never reached the application here')
  const id = welcome.session
  const back = new Peer(b.url('/s'), resumeToken(id, welcome.token, 0))
  t.match(await back.welcome(), { session: id, resumed: true, n: 1 }, 'counted: one')
  back.ws.close()
})

test('an ask made before the holder\'s own claim of the session, answered while that claim is on its way, changes nothing', async (t, shared) => {
  const slow = new SlowClaim(shared.store())
  const store = new Listening(slow)
  const a = await instance(t, store)
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  peer.ws.close()
  await waitFor(() => a.latest!.connected === false, 3000, 'away')
  const back = new Peer(a.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  await slow.claimed
  // Another instance read fence 1 before this claim raised it to 2.
  await store.ask(store.names[0], welcome.session, 1)
  await sleep(20)
  t.equal(a.app.wsStats.sessions.replacedRemote, 0)
  t.match(await back.welcome(), { session: welcome.session, resumed: true })
  t.match(a.app.wsStats.sessions, { resumed: 1, handoverFailed: 0, active: 1 })
  back.ws.close()
})

test('an ask that fails (rejects or throws) is logged and taken as heard: the client is told to come back', async (t, shared) => {
  for (const how of ['rejects', 'throws'] as const) {
    class Failing extends Through {
      override ask (): ReturnType<NonNullable<SessionStore['ask']>> {
        if (how === 'throws') throw new Error('store down')
        return Promise.reject(new Error('store down'))
      }
    }
    const logs: string[] = []
    const a = await instance(t, shared.store())
    const b = await instance(t, new Failing(shared.store()), {}, {}, () => {}, { logger: { level: 'warn', stream: { write: (line: string) => { logs.push(JSON.parse(line).msg) } } } })
    const peer = new Peer(a.url('/s'))
    const welcome = await peer.welcome()
    const elsewhere = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
    t.match(await closed(elsewhere), { code: 1013, reason: 'Session busy' }, how)
    t.ok(logs.includes('session store: ask failed'), `${how}: logged`)
    peer.ws.close()
  }
})

test('when the holder does not answer, the client is told to come back, then begins anew once the holder\'s time is up', async (t, shared) => {
  // Asks that are lost (the holder's subscription is down, or it is stalled).
  class Deaf extends Listening {
    override ask (...args: Parameters<NonNullable<SessionStore['ask']>>): ReturnType<NonNullable<SessionStore['ask']>> {
      this.asks.push(args)
    }
  }
  const store = new Deaf(shared.store())
  const a = await instance(t, store)
  const b = await instance(t, store)
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  const startedAt = Date.now()
  for (let i = 1; i <= 2; i++) {
    const early = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
    t.match(await closed(early), { code: 1013, reason: 'Session busy' }, `try ${i}: to come back`)
    t.equal(store.asks.length, i, `try ${i}: the holder asked again`)
  }
  // The holder's 3 s, counted from the first ask.
  await sleep(3050 - (Date.now() - startedAt))
  const second = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  const again = await second.welcome()
  t.match(again, { resumed: false }, 'a new session')
  t.not(again.session, welcome.session)
  t.equal(store.asks.length, 2, 'not asked once its time was up')
  t.match(b.app.wsStats.sessions, { busy: 2, resumeRefused: 1, claimedRemote: 0 })
  t.equal(a.latest!.connected, true, 'the session stays with its holder')
  second.ws.close()
})

test('a holder nobody hears any more (it died; here, it stopped listening): a client resuming elsewhere begins anew at once, not after its time to answer', async (t, shared) => {
  class Unheard extends Through {
    stop: (() => unknown) | null = null
    override async listen (...args: Parameters<NonNullable<SessionStore['listen']>>): Promise<() => void> {
      const stop = await super.listen(...args)
      this.stop = stop
      return () => {}
    }
  }
  const unheard = new Unheard(shared.store())
  const a = await instance(t, unheard)
  const b = await instance(t, shared.store())
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  await unheard.stop!()
  const elsewhere = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await elsewhere.welcome(), { resumed: false }, 'a new session, without a retry')
  t.match(b.app.wsStats.sessions, { resumeRefused: 1, busy: 0 })
  t.equal(a.app.wsStats.sessions.replacedRemote, 0, 'nobody heard')
  for (const one of [peer, elsewhere]) one.ws.close()
})

test('a connected session\'s record is written again while it lasts; once its holder dies, it goes 2 s (or ttlMs, if longer) later, and a client resuming elsewhere begins anew at once', async (t, shared) => {
  // Every call of the holder's fails once it has died, as its process would have.
  class Dying extends Through {
    dead = false
    writes = 0
    override write (...args: Parameters<SessionStore['write']>): ReturnType<SessionStore['write']> {
      if (this.dead) return Promise.reject(new Error('dead'))
      this.writes++
      return super.write(...args)
    }
  }
  const dying = new Dying(shared.store())
  const survivor = new Listening(shared.store())
  // A ttlMs this short: the record lives 2 s after each write all the same, written again every second.
  const a = await instance(t, dying, {}, { ttlMs: 100 })
  const b = await instance(t, survivor, {}, { ttlMs: 100 })
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  await sleep(2500)
  t.ok(dying.writes >= 2 && dying.writes <= 3, `written again every second while connected (${dying.writes} writes in 2.5 s)`)
  t.not(await shared.store().read(welcome.session), null, 'connected 25 times ttlMs: the record is still there')

  dying.dead = true
  // Past its expiresAt: Redis keeps the key a grace longer, which no claim takes for a session.
  await until('the record gone', async () => (await shared.store().read(welcome.session)) === null)
  const began = Date.now()
  const elsewhere = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  const fresh = await elsewhere.welcome()
  t.match(fresh, { resumed: false }, 'a new session, at once')
  t.ok(Date.now() - began < 1000, `welcomed after ${Date.now() - began} ms, not after the holder's time to answer`)
  t.same(survivor.asks, [], 'nobody asked')
  t.match(b.app.wsStats.sessions, { busy: 0, resumeRefused: 1 })
  elsewhere.ws.close()
})

test('wsSessions.lookup says where a session is, from any instance: held by which, in what state; never its secrets', async (t, shared) => {
  const a = await instance(t, shared.store())
  const b = await instance(t, shared.store())
  t.match(a.app.wsSessions.instance, /^[0-9a-f]{32}$/)
  t.not(a.app.wsSessions.instance, b.app.wsSessions.instance, 'each instance its own name')
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  peer.ws.send('hello')
  await waitFor(() => a.received.length === 1, 3000, 'heard')
  const where = { id: welcome.session, instance: a.app.wsSessions.instance, route: '/s', url: '/s', owner: null }
  await until('connected in the store', async () => (await b.app.wsSessions.lookup(welcome.session))?.state === 'connected')
  const there = await b.app.wsSessions.lookup(welcome.session)
  t.strictSame(there, { ...where, here: false, state: 'connected', expiresAt: there!.expiresAt }, 'from another instance')
  t.ok(there!.expiresAt > Date.now() + 50_000, 'held: ttlMs on')
  t.match(await a.app.wsSessions.lookup(welcome.session), { ...where, here: true, state: 'connected' }, 'from its holder')

  peer.ws.terminate()
  await until('away in the store', async () => (await b.app.wsSessions.lookup(welcome.session))?.state === 'away')
  t.match(await b.app.wsSessions.lookup(welcome.session), { ...where, here: false, state: 'away' })
  await a.app.close()
  t.match(await b.app.wsSessions.lookup(welcome.session), { ...where, instance: '', here: false, state: 'away' }, 'handed over: held by nobody')
  const back = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await back.welcome(), { resumed: true })
  t.match(await b.app.wsSessions.lookup(welcome.session), { ...where, instance: b.app.wsSessions.instance, here: true, state: 'claimed' }, 'resumed elsewhere')
  t.equal(await b.app.wsSessions.lookup('0'.repeat(32)), null, 'no such session')
  back.ws.close()
})

test('wsSessions.lookup on the instance handing a session over, its release on its way: named holder still, not here any more', async (t, shared) => {
  const a = await instance(t, new SlowRelease(shared.store(), 300))
  const b = await instance(t, shared.store())
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  const elsewhere = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await closed(elsewhere), { code: 1013, reason: 'Session busy' })
  await waitFor(() => a.app.wsStats.sessions.replacedRemote === 1, 3000, 'the handover begun')
  t.equal(a.app.wsSessions.get(welcome.session), undefined)
  t.match(await a.app.wsSessions.lookup(welcome.session), { instance: a.app.wsSessions.instance, here: false })
  await waitFor(() => a.app.wsStats.sessions.handedOver === 1, 3000, 'the handover in')
  t.match(await a.app.wsSessions.lookup(welcome.session), { instance: '', here: false })
})

test('a session whose record the store lost ends at its holder\'s next write, its client told with 4802: sessionlost now, not at its next resume', async (t, shared) => {
  const a = await instance(t, shared.store(), {}, { ttlMs: 1000 })
  const ws = new ReliableWebSocket(a.url('/s'), { WebSocket, backoff: { initialDelayMs: 5, maxDelayMs: 20 } })
  t.teardown(() => ws.close())
  const lost: SessionLostEvent[] = []
  const codes: number[] = []
  ws.addEventListener('sessionlost', (event) => lost.push(event))
  ws.addEventListener('close', (event) => codes.push(event.code))
  await once(ws as any, 'open')
  const first = ws.session!
  // Listened for now: the client is back a few ms after it is told.
  const reconnected = once(ws as any, 'reconnected')
  await shared.forget(first)
  // The next write is the record's renewal, a second after the welcome.
  await waitFor(() => lost.length === 1, 3000, 'sessionlost')
  t.same(codes, [4802], 'closed with 4802')
  t.match(a.app.wsStats.sessions, { storeLost: 1, resumeRefused: 0 })
  t.equal(a.app.wsSessions.get(first), undefined, 'ended')
  await reconnected
  t.not(ws.session, first, 'a new session')
  t.match(a.app.wsStats.sessions, { storeLost: 1, active: 1 })
})

test('asked for a session with topics, the holder hands it over with where it stands in them, and leaves them', async (t, shared) => {
  const a = await instance(t, shared.store(), {}, {}, (socket) => socket.subscribe('news'))
  const b = await instance(t, shared.store())
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  const first = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await closed(first), { code: 1013, reason: 'Session busy' })
  await waitFor(() => a.app.wsStats.sessions.handedOver === 1, 3000, 'the handover')
  t.match(a.app.wsStats.sessions, { replacedRemote: 1, active: 0 })
  t.equal(a.app.wsTopicStats('news'), null, 'its topic left')
  t.match(await closed(peer), { code: 1006 })
  const second = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await second.welcome(), { resumed: true })
  // The in-process broker: what came after where it stood cannot be told on another instance.
  t.match(await closed(second), { code: 4801 })
})

test('an instance listens while it runs: a store that cannot listen fails ready; close stops it', async (t, shared) => {
  const stopped: string[] = []
  class Stopping extends Through {
    override async listen (...args: Parameters<NonNullable<SessionStore['listen']>>): Promise<() => Promise<void>> {
      const stop = await super.listen(...args)
      return async () => {
        stopped.push(args[0])
        await stop()
      }
    }
  }
  const a = await instance(t, new Stopping(shared.store()))
  t.same(stopped, [])
  await a.app.close()
  t.equal(stopped.length, 1)
  class Failing extends Through {
    override async listen (): Promise<() => void> {
      throw new Error('no subscription')
    }
  }
  await t.rejects(bootWith({ sessionStore: new Failing(shared.store()) }), { message: 'no subscription' }, 'and the instance closes all the same')
})

/** A store whose claims answer 200 ms after they took effect, while `slow`; `claimed` resolves as the first takes effect. */
class SlowClaim extends Through {
  slow = true
  claimed: Promise<void>
  private took!: () => void

  constructor (base: SessionStore) {
    super(base)
    this.claimed = new Promise((resolve) => { this.took = resolve })
  }

  override async claim (...args: Parameters<SessionStore['claim']>): Promise<fastifyReliableWs.ClaimResult> {
    const result = await super.claim(...args)
    this.took()
    if (this.slow) await sleep(200)
    return result
  }
}

test('a client that leaves while its handed-over session is claimed leaves it in the store for its next resume', async (t, shared) => {
  const store = new SlowClaim(shared.store())
  const a = await instance(t, shared.store())
  const b = await instance(t, store)
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  peer.ws.terminate()
  await waitFor(() => a.latest!.connected === false, 3000, 'away')
  a.latest!.send('kept')
  await a.app.close()

  const leaving = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  await once(leaving.ws, 'open')
  leaving.ws.terminate()
  await sleep(400)
  t.equal(b.app.wsStats.sessions.claimedRemote, 0, 'never attached')
  store.slow = false
  // The claim raised the fence and took the secret the client resumed with as the held one.
  const back = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await back.welcome(), { session: welcome.session, resumed: true })
  await waitFor(() => back.data().length === 1, 3000, 'the replay')
  t.same(back.data(), ['kept'])
  t.equal(b.app.wsStats.sessions.claimedRemote, 1)
  back.ws.close()
})

for (const [what, handedOverFirst] of [['a session it holds', false], ['a session handed over by another instance', true]] as const) {
  test(`an instance closing while it claims ${what} opens it first, then hands it over with the rest`, async (t, shared) => {
    const store = new SlowClaim(shared.store())
    const first = await instance(t, handedOverFirst ? shared.store() : store)
    const a = handedOverFirst ? await instance(t, store) : first
    const b = await instance(t, shared.store())
    const peer = new Peer(first.url('/s'))
    const welcome = await peer.welcome()
    peer.ws.terminate()
    await waitFor(() => first.latest!.connected === false, 3000, 'away')
    first.latest!.send('kept')
    if (handedOverFirst) await first.app.close()
    // The resume on `a`, its claim on the way while `a` closes.
    const resuming = new Peer(a.url('/s'), resumeToken(welcome.session, welcome.token, 0))
    await store.claimed
    const closing = a.app
    await closing.close()
    t.match(closing.wsStats.sessions, { handedOver: 1, handoverFailed: 0, active: 0 })
    t.match(await resuming.closed, { code: 1001 })
    const back = new Peer(b.url('/s'), resumeToken(welcome.session, (resuming.frames[0] as { token: string }).token, 0))
    t.match(await back.welcome(), { session: welcome.session, resumed: true })
    await waitFor(() => back.data().length === 1, 3000, 'the replay')
    t.same(back.data(), ['kept'], 'the message kept for the client, once more')
    back.ws.close()
  })
}

test('a store call that never answers holds back no other session\'s handover', async (t, shared) => {
  class HungClaim extends Through {
    override async claim (): Promise<fastifyReliableWs.ClaimResult> {
      return await new Promise(() => {})
    }
  }
  const a = await instance(t, new HungClaim(shared.store()), { shutdown: { ...QUICK_CLOSE, timeoutMs: 1200 } })
  const peer = new Peer(a.url('/s'))
  await peer.welcome()
  const stuck = new Peer(a.url('/s'), resumeToken('a'.repeat(32), 'b'.repeat(32), 0))
  await once(stuck.ws, 'open')
  const began = Date.now()
  await a.app.close()
  // The stuck connection itself is cut off at shutdown.timeoutMs, as any.
  t.ok(Date.now() - began < 1200 + 1500, `closed after ${Date.now() - began} ms`)
  t.match(a.app.wsStats.sessions, { handedOver: 1, handoverFailed: 0 }, 'the session whose client was connected, handed over')
  t.match(await peer.closed, { code: 1001 })
})

test('a handed-over session that finds no room ends: the instance is full, or its messages exceed the route\'s limits', async (t, shared) => {
  const a = await instance(t, shared.store())
  const full = await instance(t, shared.store(), { limits: { maxSessions: 1 } })
  const narrow = await instance(t, shared.store(), {}, { maxBufferedMessages: 2 })
  const occupant = new Peer(full.url('/s'))
  await occupant.welcome()
  const peers = [new Peer(a.url('/s')), new Peer(a.url('/s'))]
  const welcomes = [await peers[0]!.welcome(), await peers[1]!.welcome()]
  const sessions = welcomes.map(({ session }) => a.app.wsSessions.get(session)!)
  for (const peer of peers) peer.ws.terminate()
  await waitFor(() => sessions.every((session) => !session.connected), 3000, 'away')
  for (const session of sessions) for (const text of ['1', '2', '3']) session.send(text)
  await a.app.close()
  t.equal(a.app.wsStats.sessions.handedOver, 2)

  const first = new Peer(full.url('/s'), resumeToken(welcomes[0]!.session, welcomes[0]!.token, 0))
  t.match(await first.closed, { code: 1013, reason: 'Too many sessions' })
  t.match(full.app.wsStats.sessions, { rejected: 1, claimedRemote: 0, active: 1 })
  const second = new Peer(narrow.url('/s'), resumeToken(welcomes[1]!.session, welcomes[1]!.token, 0))
  t.match(await second.closed, { code: 4800, reason: 'Session buffer full' })
  t.match(narrow.app.wsStats.sessions, { overflowed: 1, claimedRemote: 0, active: 0, bufferedBytes: 0 })
  for (const { session } of welcomes) await shared.untilEnded(session)
  occupant.ws.close()
})

t.test('with the default store in memory, nothing is handed over: sessions end with their instance', async (t) => {
  const server = await start({ heartbeat: false, shutdown: QUICK_CLOSE }, (app) => {
    app.get('/s', { websocket: true, config: { reliable: { resume: true } } }, () => {})
  })
  const peer = new Peer(server.url('/s'))
  await peer.welcome()
  await server.app.close()
  t.match(server.app.wsStats.sessions, { handedOver: 0, handoverFailed: 0, active: 0 })
  t.match(await peer.closed, { code: 1001 })
})

t.test('the redis option alone keeps sessions in Redis, named by topics.keyPrefix: handed over at close and resumed on another instance, durable; sessionStore null keeps them in memory', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const admin = redis.client()
  const connections = async (): Promise<number> => (await admin.client('LIST') as string).trim().split('\n').length
  const before = await connections()
  // The application's client, with a key prefix of its own: the plugin names its keys by topics.keyPrefix alone.
  const given = new RedisClient(redis.url, { keyPrefix: 'app:' })
  t.teardown(() => given.disconnect())
  const options = { heartbeat: false as const, shutdown: QUICK_CLOSE, topics: { keyPrefix: 'chat' } }
  const route = (app: FastifyInstance): void => {
    app.get('/s', { websocket: true, config: { reliable: { resume: { durable: true, ttlMs: 60_000 } } } }, () => {})
  }
  // A call to the store before the instance is ready (a queue consumer starting early) leaves it able to start,
  // whether its connection is still on its way or up already.
  for (const wait of [0, 300]) {
    const early = Fastify()
    await early.register(reliableWs, { ...options, redis: redis.url })
    await early.wsSessions.send('e'.repeat(32), 'early').catch(() => 'refused: not connected yet')
    await sleep(wait)
    await early.ready()
    t.equal(await early.wsSessions.send('e'.repeat(32), 'ready'), 'unknown', `started all the same, ${wait} ms later: its store answers`)
    await early.close()
  }
  const a = await start({ ...options, redis: given }, route)
  const b = await start({ ...options, redis: redis.url }, route)
  t.teardown(() => b.app.close())
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  await waitFor(() => a.app.wsStats.sessions.active === 1, 2000, 'the session')
  t.equal(await admin.exists(`chat:{s:${welcome.session}}`), 1, 'its record, in Redis')
  await a.app.close()
  t.match(await closed(peer), { code: 1001 })
  t.equal(a.app.wsStats.sessions.handedOver, 1, 'handed over: the store outlives the instance')
  const elsewhere = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await elsewhere.welcome(), { session: welcome.session, resumed: true }, 'resumed on the other instance')
  elsewhere.ws.close()
  await b.app.close()
  // sessionStore null: in the process's memory, the redis option or not.
  const c = await start({ ...options, redis: redis.url, sessionStore: null }, (app) => {
    app.get('/s', { websocket: true, config: { reliable: { resume: true } } }, () => {})
  })
  const local = new Peer(c.url('/s'))
  const session = (await local.welcome()).session
  await waitFor(() => c.app.wsStats.sessions.active === 1, 2000, 'the session in memory')
  t.equal(await admin.exists(`chat:{s:${session}}`), 0, 'with sessionStore null, nothing of it in Redis')
  local.ws.close()
  await c.app.close()
  // The admin's connection and the application's own stay: every connection of the plugins went with them.
  for (let tries = 0; await connections() !== before + 1 && tries < 100; tries++) await sleep(20)
  t.equal(await connections(), before + 1, 'the plugins\' connections closed with their instances')
})

t.test('Redis flushed: a session whose record or handover is gone ends at its client\'s next resume, on its own instance or another: sessionlost, never a silent gap', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const a = await instance(t, new RedisSessionStore(redis.client()))
  const b = await instance(t, new RedisSessionStore(redis.client()))
  const proxy = await FaultProxy.start(a.port)
  t.teardown(() => proxy.close())
  const ws = new ReliableWebSocket(proxy.url('/s'), { WebSocket, backoff: { initialDelayMs: 5, maxDelayMs: 20, slowAfter: Infinity } })
  const lost: SessionLostEvent[] = []
  ws.addEventListener('sessionlost', (event) => lost.push(event))
  await once(ws as any, 'open')
  const first = a.latest!.id

  // Its record gone while it is connected: the session goes on where it is, and ends at the next resume.
  await redis.client().flushall()
  t.ok(a.latest!.send('still here'))
  proxy.cut()
  await waitFor(() => lost.length === 1 && a.latest!.id !== first, 5000, 'a new session on the same instance')
  t.equal(a.app.wsStats.sessions.resumeRefused, 1)

  // Its handover gone: the instance closed gracefully, then Redis lost what it kept.
  const second = a.latest!.id
  // The client comes back only once Redis has lost the handover.
  proxy.refuse = true
  await a.app.close()
  t.equal(a.app.wsStats.sessions.handedOver, 1)
  await redis.client().flushall()
  proxy.target = b.port
  proxy.refuse = false
  await waitFor(() => lost.length === 2 && b.latest !== null, 5000, 'a new session on the other instance')
  t.not(b.latest!.id, second)
  t.match(b.app.wsStats.sessions, { resumeRefused: 1, claimedRemote: 0, resumed: 0 })
  ws.close()
  await once(ws as any, 'close')
})

for (const kind of KINDS) {
  t.test(kind.name, kind.needs, async (t) => {
    const shared = await kind.shared(t)
    for (const [name, fn] of TESTS) await t.test(name, async (t) => await fn(t, shared))
  })
}
