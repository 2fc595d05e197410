// Durable sessions (resume.durable) on a shared store (one store object shared by instances in one process, and Redis):
// the instance holding a session dies without a word, and another goes on with it from the copy the first kept in the
// store, nothing lost either way, the client's messages it may have delivered already marked `redelivered`.
import t from 'tap'
import type { Test } from 'tap'
import { once } from 'node:events'
import WebSocket from 'ws'
import type fastifyReliableWs = require('../../types/index')
import { ReliableWebSocket, SessionLostEvent } from '../../lib/client'
import { resumeToken } from '../../lib/protocol/protocol'
import { RedisSessionStore } from '../../lib/sessions/redis-session-store'
import { FaultProxy } from '../helpers/fault-proxy'
import { sleep, waitFor } from '../helpers/helpers'
import { needs, REDIS } from '../helpers/programs'
import { RedisServer } from '../helpers/redis'
import { followed } from '../helpers/topic-follower'
import { closed, Peer } from '../helpers/session-peer'
import type { Welcome } from '../helpers/session-peer'
import { instance, KINDS, Through } from '../helpers/shared-sessions'
import type { Instance, Shared } from '../helpers/shared-sessions'

type SessionStore = fastifyReliableWs.SessionStore
type Socket = WebSocket & fastifyReliableWs.SocketExtensions

const DURABLE = { durable: true, maxBufferedMessages: 5000, maxBufferedBytes: 1 << 24 }

/**
 * The store as an instance that can die sees it: once dead, every call fails, and it listens no more (an ask for its
 * sessions reaches nobody), as when its process is killed.
 */
class Mortal extends Through {
  dead = false
  private readonly stops: Array<() => unknown> = []

  constructor (base: SessionStore) {
    super(base)
    const self = this as unknown as Record<string, (...args: unknown[]) => unknown>
    for (const name of ['create', 'claim', 'write', 'release', 'end', 'read', 'keep', 'take', 'post', 'ask']) {
      const call = self[name].bind(this)
      self[name] = (...args: unknown[]) => this.dead ? Promise.reject(new Error('dead')) : call(...args)
    }
  }

  override listen (...args: Parameters<NonNullable<SessionStore['listen']>>): ReturnType<NonNullable<SessionStore['listen']>> {
    const listening = super.listen(...args)
    Promise.resolve(listening).then((stop) => this.stops.push(stop), () => {})
    return listening
  }

  async die (): Promise<void> {
    this.dead = true
    for (const stop of this.stops) await stop()
  }
}

/** An instance whose sessions are durable, noting for each message its application receives whether it was marked redelivered. */
async function durable (t: Test, store: SessionStore, resume: object = {}): Promise<Instance & { redelivered: boolean[] }> {
  const redelivered: boolean[] = []
  const one = await instance(t, store, {}, { ...DURABLE, ...resume }, (socket: Socket) => {
    socket.on('message', () => redelivered.push(socket.session!.redelivered))
  })
  return Object.assign(one, { redelivered })
}

/** What the callback of the session's send is called with (the public type leaves the callback out: sockets take it). */
async function sendWith (session: fastifyReliableWs.Session, data: string): Promise<Error | undefined> {
  return await new Promise((resolve) => (session as fastifyReliableWs.Session & { send: (data: string, options: undefined, cb: (err?: Error) => void) => boolean }).send(data, undefined, resolve))
}

/** Ends the instance's connections as its death would: no close frame, the TCP connections reset. */
function killConnections (one: Instance): void {
  for (const socket of one.app.websocketServer.clients) (socket as unknown as { _socket: { resetAndDestroy: () => void } })._socket.resetAndDestroy()
}

const TESTS: Array<[string, (t: Test, shared: Shared) => Promise<void>]> = []

function test (name: string, fn: (t: Test, shared: Shared) => Promise<void>): void {
  TESTS.push([name, fn])
}

test('a crash: the client resumes on another instance, each server message delivered once in order; its own, none lost, those delivered twice marked', async (t, shared) => {
  const TOTAL = 3000
  const mortal = new Mortal(shared.store())
  const a = await durable(t, mortal)
  const b = await durable(t, shared.store())
  const proxy = await FaultProxy.start(a.port)
  t.teardown(() => proxy.close())
  const ws = new ReliableWebSocket(proxy.url('/s'), { WebSocket, queue: { maxMessages: 5000 }, backoff: { initialDelayMs: 5, maxDelayMs: 20, slowAfter: Infinity } })
  const fromServer: string[] = []
  const lost: SessionLostEvent[] = []
  ws.addEventListener('message', (event) => fromServer.push(event.data as string))
  ws.addEventListener('sessionlost', (event) => lost.push(event))
  await once(ws as any, 'open')
  let current: Instance = a
  let clientSent = 0
  let serverSent = 0
  const pump = setInterval(() => {
    for (let i = 0; i < 20 && clientSent < TOTAL; i++) {
      if (!ws.send(`c${clientSent}`)) break
      clientSent++
    }
    const session = current.latest
    for (let i = 0; i < 20 && serverSent < TOTAL && session !== null && session.unacknowledged < 4000; i++) {
      if (!session.send(`s${serverSent}`)) break
      serverSent++
    }
  }, 2)
  t.teardown(() => clearInterval(pump))

  await waitFor(() => clientSent > TOTAL / 3 && serverSent > TOTAL / 3, 10_000, 'traffic before the crash')
  // The application on the dying instance sends nothing more; what it sent is in the store once the client has it.
  current = b
  await waitFor(() => fromServer.length === serverSent, 5000, 'what the first instance sent, received')
  await mortal.die()
  proxy.target = b.port
  killConnections(a)
  proxy.cut()
  await waitFor(() => b.latest !== null && ws.readyState === ws.OPEN, 10_000, 'the resume on the other instance')
  await waitFor(() => fromServer.length >= TOTAL && clientSent >= TOTAL && serverSent >= TOTAL, 20_000, 'every message sent and received by the client')
  // The client sends again every message after the count kept, some of which the dead instance may have delivered.
  const overlap = (): number => b.received.length === 0 ? 0 : a.received.length - Number(b.received[0].slice(1))
  await waitFor(() => a.received.length + b.received.length - overlap() >= TOTAL, 10_000, 'every message received by the instances')
  clearInterval(pump)

  t.same(b.resumed, [true], 'the other instance took the same session')
  t.ok(fromServer.every((text, i) => text === `s${i}`) && fromServer.length === TOTAL, 'server to client: each once, in order, across the crash')
  t.same(lost, [], 'the session was never lost')
  const marked = b.redelivered.filter(Boolean).length
  t.ok(overlap() >= 0 && overlap() <= marked && marked <= 64, `delivered twice: ${overlap()}, marked: ${marked}, at most receiveWindow`)
  t.ok(b.redelivered.every((flag, i) => flag === (i < marked)), 'the first ones after the crash marked, and only they')
  const seen = [...a.received, ...b.received.slice(overlap())]
  t.ok(seen.length === TOTAL && seen.every((text, i) => text === `c${i}`), `client to server: none lost, none twice unmarked (${a.received.length} before, ${b.received.length} after)`)
  t.match(b.app.wsStats.sessions, { takenOver: 1, claimedRemote: 1, resumed: 1, redelivered: marked, resumeRefused: 0 })
  ws.close()
  await once(ws as any, 'close')
})

test('receiveWindow 1: at most the one message being delivered comes again; reading waits for each count to be kept, in order', async (t, shared) => {
  const mortal = new Mortal(shared.store())
  const a = await durable(t, mortal, { receiveWindow: 1 })
  const b = await durable(t, shared.store(), { receiveWindow: 1 })
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  for (let i = 0; i < 50; i++) peer.ws.send(`c${i}`)
  await waitFor(() => a.received.length === 50, 5000, 'every message, each waiting for its count')
  t.same(a.received, Array.from({ length: 50 }, (_, i) => `c${i}`), 'in order')
  await sleep(50)
  await mortal.die()
  killConnections(a)
  // The client had no acknowledgement past what the store counted: it sends again from there.
  const elsewhere = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  const resumed = await elsewhere.welcome()
  t.match(resumed, { resumed: true })
  t.ok(resumed.n === 49 || resumed.n === 50, `the count kept: ${resumed.n}`)
  for (let i = resumed.n; i < 50; i++) elsewhere.ws.send(`c${i}`)
  elsewhere.ws.send('next')
  await waitFor(() => b.received.includes('next'), 3000, 'the message after')
  t.same(b.received, [...Array.from({ length: 50 - resumed.n }, (_, i) => `c${resumed.n + i}`), 'next'])
  // Reserved: one past the count kept, which may have reached the application had it come before the crash.
  t.same(b.redelivered, b.received.map((_, i) => i === 0), 'one marked: the first after the count kept')
  elsewhere.ws.close()
})

test('the client\'s messages wait for the store to reserve their numbers: none reaches the application before, all in order after', async (t, shared) => {
  let open: () => void = () => {}
  const gate = new Promise<void>((resolve) => { open = resolve })
  class Gated extends Through {
    override async keep (...args: Parameters<NonNullable<SessionStore['keep']>>): Promise<fastifyReliableWs.WriteResult> {
      await gate
      return await super.keep(...args)
    }
  }
  const a = await durable(t, new Gated(shared.store()), { receiveWindow: 1 })
  const peer = new Peer(a.url('/s'))
  await peer.welcome()
  for (let i = 0; i < 5; i++) peer.ws.send(`c${i}`)
  await sleep(100)
  t.same(a.received, [], 'nothing counted in the store yet: nothing delivered')
  open()
  await waitFor(() => a.received.length === 5, 3000, 'every message')
  t.same(a.received, ['c0', 'c1', 'c2', 'c3', 'c4'], 'in order')
  peer.ws.close()
})

/** A store whose keeps wait until `open()` is called. */
class GatedKeeps extends Through {
  private gate: Promise<void>
  open: () => void = () => {}
  constructor (base: SessionStore) {
    super(base)
    this.gate = new Promise<void>((resolve) => { this.open = resolve })
  }

  override async keep (...args: Parameters<NonNullable<SessionStore['keep']>>): Promise<fastifyReliableWs.WriteResult> {
    await this.gate
    return await super.keep(...args)
  }
}

test('messages that waited for their reservation pass the rate limit as they are delivered; once the application ends the session, the rest go nowhere', async (t, shared) => {
  // Its handler of `end` sends more than the session may keep: the session overflows.
  const overflowing = async (store: SessionStore, options: object): Promise<Instance> => await instance(t, store, options, { ...DURABLE, maxBufferedMessages: 1 }, (socket: Socket) => {
    socket.on('message', (data: Buffer) => {
      if (data.toString() === 'end') for (let i = 0; i < 2; i++) socket.send('too much')
    })
  })
  const store = new GatedKeeps(shared.store())
  const a = await overflowing(store, { limits: { messagesPerSecond: 1, burst: 2, onRateLimit: 'drop' } })
  const peer = new Peer(a.url('/s'))
  await peer.welcome()
  for (const text of ['c0', 'c1', 'c2']) peer.ws.send(text)
  await sleep(100)
  store.open()
  await waitFor(() => a.received.length === 2, 3000, 'what the rate limit lets through')
  await sleep(50)
  t.same(a.received, ['c0', 'c1'], 'the third dropped by the rate limit, as it would have been on arrival')
  t.equal(a.app.wsStats.limits.rateLimited, 1)

  const gated = new GatedKeeps(shared.store())
  const b = await overflowing(gated, {})
  const other = new Peer(b.url('/s'))
  await other.welcome()
  for (const text of ['end', 'c1', 'c2']) other.ws.send(text)
  await sleep(100)
  gated.open()
  t.match(await closed(other), { code: 4800 }, 'the session overflowed')
  t.same(b.received, ['end'], 'nothing after it reached the application')
})

test('a durable session handed over with messages not kept yet: their callbacks fire, and the next holder sends them', async (t, shared) => {
  const store = new GatedKeeps(shared.store())
  const a = await durable(t, store)
  const b = await durable(t, shared.store())
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  const sent = sendWith(a.latest!, 'waiting')
  await sleep(50)
  t.same(peer.data(), [], 'not sent: not kept')
  await a.app.close()
  t.equal(await sent, undefined, 'the callback fired, without an error: the message went with the handover')
  const there = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await there.welcome(), { resumed: true })
  await waitFor(() => there.data().length === 1, 3000, 'the message')
  t.same(there.data(), ['waiting'])
  there.ws.close()
})

test('a store that gives a copy back without its reserved count: the count received is taken for it, nothing marked', async (t, shared) => {
  class Forgetful extends Through {
    override async claim (...args: Parameters<SessionStore['claim']>): Promise<fastifyReliableWs.ClaimResult> {
      const result = await super.claim(...args)
      if (result.ok && result.handover !== null) delete result.handover.reserved
      return result
    }
  }
  const mortal = new Mortal(shared.store())
  const a = await durable(t, mortal)
  const b = await durable(t, new Forgetful(shared.store()))
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  peer.ws.send('c0')
  await waitFor(() => a.received.length === 1, 3000, 'c0')
  await sleep(50)
  await mortal.die()
  killConnections(a)
  const there = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await there.welcome(), { resumed: true, n: 0 })
  there.ws.send('c0')
  await waitFor(() => b.received.length === 1, 3000, 'c0 again')
  t.same(b.redelivered, [false], 'not marked: the store did not say it may have come before')
  there.ws.close()
})

test('a resume on the same instance before it saw the old connection close, the store\'s count behind: what the client sends again that the application had is dropped', async (t, shared) => {
  const a = await durable(t, shared.store())
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  for (let i = 0; i < 10; i++) peer.ws.send(`c${i}`)
  await waitFor(() => a.received.length === 10, 3000, 'the messages')
  // The client finds its connection gone before the server does (the usual order): the old one is still open here.
  const again = new Peer(a.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  const resumed = await again.welcome()
  // Reserved ahead, counted in the store only when half the window is used: none of the ten.
  t.match(resumed, { resumed: true, n: 0 }, 'told no more than the store counts')
  for (let i = 0; i < 10; i++) again.ws.send(`c${i}`)
  again.ws.send('next')
  await waitFor(() => a.received.includes('next'), 3000, 'the message after')
  t.same(a.received, [...Array.from({ length: 10 }, (_, i) => `c${i}`), 'next'], 'each once')
  t.same(a.redelivered, a.received.map(() => false), 'none marked: the same instance knows')
  again.ws.close()
})

test('a keep the store fails is tried again: what waited for it goes out then, in order, and the failure is logged', async (t, shared) => {
  class Failing extends Through {
    failures = 0
    override keep (...args: Parameters<NonNullable<SessionStore['keep']>>): ReturnType<NonNullable<SessionStore['keep']>> {
      if (this.failures > 0) {
        // One store throws, another rejects: the same either way.
        if (--this.failures % 2 === 0) throw new Error('store down')
        return Promise.reject(new Error('store down'))
      }
      return super.keep(...args)
    }
  }
  const store = new Failing(shared.store())
  const logs: string[] = []
  const a = await instance(t, store, {}, DURABLE, () => {}, { logger: { level: 'warn', stream: { write: (line: string) => { logs.push(JSON.parse(line).msg) } } } })
  const peer = new Peer(a.url('/s'))
  await peer.welcome()
  await sleep(50)
  store.failures = 3
  for (let i = 0; i < 5; i++) a.latest!.send(`s${i}`)
  await waitFor(() => peer.data().length === 5, 3000, 'the messages, once kept')
  t.same(peer.data(), ['s0', 's1', 's2', 's3', 's4'])
  t.equal(logs.filter((msg) => msg === 'session store: keep failed').length, 3, 'each failure logged')

  // The client away while its messages wait for the store: they go out on its resume, once kept.
  store.failures = 2
  const welcome = await peer.welcome()
  peer.ws.terminate()
  await waitFor(() => a.latest!.connected === false, 3000, 'away')
  a.latest!.send('s5')
  await sleep(150)
  const again = new Peer(a.url('/s'), resumeToken(welcome.session, welcome.token, 5))
  t.match(await again.welcome(), { resumed: true })
  await waitFor(() => again.data().length === 1, 3000, 's5')
  t.same(again.data(), ['s5'])
  again.ws.close()
})

test('an instance taken for dead that lives on: its next write is refused, its connection ended as replaced, its sends fail', async (t, shared) => {
  const mortal = new Mortal(shared.store())
  const a = await durable(t, mortal)
  const b = await durable(t, shared.store())
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  await waitFor(() => a.latest !== null, 2000, 'the session')
  const stale = a.latest!
  // Its listening connection down: an ask reaches nobody, so the client's resume elsewhere takes the session over.
  await mortal.die()
  mortal.dead = false
  const elsewhere = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await elsewhere.welcome(), { resumed: true })
  const failed = sendWith(stale, 'late')
  t.match(await closed(peer), { code: 1006 }, 'its connection here ended')
  t.match(await failed, { code: 'FST_RELIABLE_WS_SESSION_ENDED' }, 'the send\'s callback says it never went')
  t.equal(stale.ended, true)
  t.equal(a.app.wsStats.sessions.fenced, 1)
  t.equal(a.app.wsSessions.get(welcome.session), undefined)
  b.latest!.send('there')
  await waitFor(() => elsewhere.data().includes('there'), 2000, 'the session goes on there')
  t.notOk(elsewhere.data().includes('late'))
  elsewhere.ws.close()
})

test('an instance taken for dead that lives on, its session away there: the client coming back to it resumes the session as the other left it, nothing twice', async (t, shared) => {
  const mortal = new Mortal(shared.store())
  const a = await durable(t, mortal)
  const b = await durable(t, shared.store())
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  for (let i = 0; i < 3; i++) peer.ws.send(`c${i}`)
  await waitFor(() => a.received.length === 3, 3000, 'three messages on the first instance')
  peer.ws.terminate()
  await waitFor(() => a.latest!.connected === false, 3000, 'away there')
  await sleep(50)
  // Its listening connection down for a moment: the client's resume on the other instance takes the session over.
  await mortal.die()
  mortal.dead = false
  const there = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  const taken = await there.welcome()
  t.match(taken, { resumed: true, n: 3 })
  for (let i = 3; i < 5; i++) there.ws.send(`c${i}`)
  await waitFor(() => b.received.length === 2, 3000, 'two more on the second')
  there.ws.terminate()
  await waitFor(() => b.latest!.connected === false, 3000, 'away there too')
  // Back to the first: its copy is stale. It lets it go, asks the second for the session, and the client comes back.
  const asking = new Peer(a.url('/s'), resumeToken(welcome.session, taken.token, 0))
  t.match(await closed(asking), { code: 1013 }, 'told to come back while the holder hands it over')
  t.equal(a.app.wsStats.sessions.fenced, 1, 'the stale copy let go')
  await waitFor(() => b.app.wsStats.sessions.handedOver === 1, 3000, 'handed over by the second')
  const back = new Peer(a.url('/s'), resumeToken(welcome.session, taken.token, 0))
  t.match(await back.welcome(), { resumed: true, n: 5 }, 'the count the second instance had')
  back.ws.send('c5')
  await waitFor(() => a.received.length === 4, 3000, 'the next message')
  t.same([...a.received.slice(0, 3), ...b.received, a.received[3]], ['c0', 'c1', 'c2', 'c3', 'c4', 'c5'], 'each once')
  t.same(a.redelivered, [false, false, false, false])
  back.ws.close()
})

test('posts taken while a keep is on its way, and posts waiting, all reach the client once when the session is handed over', async (t, shared) => {
  class SlowKeepAnswer extends Through {
    slow = false
    override async keep (...args: Parameters<NonNullable<SessionStore['keep']>>): Promise<fastifyReliableWs.WriteResult> {
      const result = await super.keep(...args)
      if (this.slow) await sleep(300)
      return result
    }
  }
  const slow = new SlowKeepAnswer(shared.store())
  const a = await durable(t, slow)
  const b = await durable(t, shared.store())
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  await sleep(50)
  slow.slow = true
  t.equal(await b.app.wsSessions.send(welcome.session, 'p1'), 'posted')
  await sleep(30)
  t.equal(await b.app.wsSessions.send(welcome.session, 'p2'), 'posted')
  await sleep(10)
  peer.ws.terminate()
  await waitFor(() => a.latest!.connected === false, 3000, 'away')
  let there: Peer | null = null
  for (let attempt = 0; there === null && attempt < 30; attempt++) {
    const next = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
    const first = await Promise.race([next.welcome(), next.closed.then(() => null)])
    if (first?.t === 'welcome') there = next
    else await sleep(100)
  }
  await waitFor(() => there!.data().length >= 2, 3000, 'the posts')
  await sleep(100)
  t.same(there!.data(), ['p1', 'p2'], 'each once, in order')
  there!.ws.close()
})

test('a keep, or a take, refused for the fence of the instance\'s own claim on its way: the session goes on, and what they carried follows', async (t, shared) => {
  class SlowClaimAnswer extends Through {
    onClaim: (() => void) | null = null
    override async claim (...args: Parameters<SessionStore['claim']>): Promise<fastifyReliableWs.ClaimResult> {
      const result = await super.claim(...args)
      if (this.onClaim !== null) {
        this.onClaim()
        await sleep(100)
      }
      return result
    }
  }
  const slow = new SlowClaimAnswer(shared.store())
  const a = await durable(t, slow)
  const b = await durable(t, shared.store())
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  await sleep(50)
  const session = a.latest!
  peer.ws.terminate()
  await waitFor(() => !session.connected, 3000, 'away')
  await sleep(50)
  let posted: Promise<unknown> = Promise.resolve()
  slow.onClaim = () => {
    session.send('x')
    posted = b.app.wsSessions.send(welcome.session, 'p')
  }
  const again = new Peer(a.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await again.welcome(), { resumed: true })
  t.equal(await posted, 'posted')
  // Heard on its new connection: the write says a post waits.
  again.ws.send('hi')
  await waitFor(() => again.data().length === 2, 3000, 'what was sent and posted meanwhile')
  t.same(again.data(), ['x', 'p'])
  t.equal(a.app.wsStats.sessions.fenced, 0, 'nothing given up')
  again.ws.close()
})

test('a holder that never answers the ask (a Redis Cluster cannot tell it is gone) is taken over once its time to answer is up', async (t, shared) => {
  class AlwaysHeard extends Through {
    override async ask (): Promise<boolean> { return true }
  }
  const mortal = new Mortal(shared.store())
  const a = await durable(t, mortal)
  const b = await durable(t, new AlwaysHeard(shared.store()))
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  await sleep(50)
  mortal.dead = true
  killConnections(a)
  const began = Date.now()
  let resumed: Welcome | null = null
  while (resumed === null && Date.now() - began < 8000) {
    const next = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
    const first = await Promise.race([next.welcome(), next.closed.then(() => null)])
    if (first?.t === 'welcome') {
      resumed = first
      next.ws.close()
    } else {
      await sleep(250)
    }
  }
  t.match(resumed, { resumed: true, session: welcome.session }, `taken over after ${Date.now() - began} ms`)
  t.equal(b.app.wsStats.sessions.takenOver, 1)
})

test('a session crashed before anything happened in it is taken over all the same; one whose instance did not keep it begins anew', async (t, shared) => {
  const mortal = new Mortal(shared.store())
  const a = await durable(t, mortal)
  const b = await durable(t, shared.store())
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  await sleep(50)
  await mortal.die()
  killConnections(a)
  const elsewhere = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await elsewhere.welcome(), { resumed: true, n: 0, session: welcome.session })
  elsewhere.ws.close()

  const plainStore = new Mortal(shared.store())
  const plain = await instance(t, plainStore)
  const other = new Peer(plain.url('/s'))
  const second = await other.welcome()
  await plainStore.die()
  killConnections(plain)
  const again = new Peer(b.url('/s'), resumeToken(second.session, second.token, 0))
  t.match(await again.welcome(), { resumed: false }, 'kept by nobody: a new session')
  again.ws.close()
})

test('messages posted from any instance to a durable session reach its client once each, in order, across the crash of its holder', async (t, shared) => {
  const mortal = new Mortal(shared.store())
  const a = await durable(t, mortal)
  const b = await durable(t, shared.store())
  const c = await durable(t, shared.store())
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  for (let i = 0; i < 30; i++) t.equal(await c.app.wsSessions.send(welcome.session, `p${i}`), 'posted')
  await waitFor(() => peer.data().length === 30, 3000, 'the posts, through the holder')
  for (let i = 30; i < 40; i++) t.equal(await c.app.wsSessions.send(welcome.session, `p${i}`), 'posted')
  await sleep(50)
  await mortal.die()
  killConnections(a)
  for (let i = 40; i < 50; i++) t.equal(await c.app.wsSessions.send(welcome.session, `p${i}`), 'posted')
  const had = peer.data().length
  const elsewhere = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, had))
  t.match(await elsewhere.welcome(), { resumed: true })
  await waitFor(() => had + elsewhere.data().length >= 50, 3000, 'the rest')
  await sleep(50)
  t.same([...peer.data().slice(0, had), ...elsewhere.data()], Array.from({ length: 50 }, (_, i) => `p${i}`), 'each once, in order')
  elsewhere.ws.close()
})

t.test('a crash while a topic is published to: the session goes on with its topic on the next instance, each message once, in order', needs(REDIS), async (t) => {
  const TOTAL = 3000
  const redis = await RedisServer.start(t)
  const options = { redis: redis.url, topics: { historySize: 20_000 } }
  const onRedis = async (store: SessionStore): Promise<Instance> => await instance(t, store, options, DURABLE, (socket: Socket) => {
    // Subscribed once, when the session begins: a session taken over comes with its topics.
    if (!socket.session!.resumed) socket.subscribe('news')
  })
  const mortal = new Mortal(new RedisSessionStore(redis.client()))
  const a = await onRedis(mortal)
  const b = await onRedis(new RedisSessionStore(redis.client()))
  const publisher = await instance(t, new RedisSessionStore(redis.client()), options)
  const { proxy, published, check } = await followed(t, publisher, a, TOTAL, 10)
  await waitFor(() => published.count > TOTAL / 3, 10_000, 'messages before the crash')
  await mortal.die()
  proxy.target = b.port
  killConnections(a)
  proxy.cut()
  await check()
  t.same(b.resumed, [true])
  t.match(b.app.wsStats.sessions, { takenOver: 1, topicGaps: 0 })
  t.equal(b.app.wsTopicStats('news')?.subscribers, 1, 'subscribed there')
})

t.test('a subscription made after the session began is kept at once: a crash before any message of it loses nothing', needs(REDIS), async (t) => {
  const redis = await RedisServer.start(t)
  const options = { redis: redis.url }
  const onRedis = async (store: SessionStore): Promise<Instance> => await instance(t, store, options, DURABLE, (socket: Socket) => {
    socket.on('message', (data: Buffer) => { if (data.toString() === 'join') socket.subscribe('news') })
  })
  const mortal = new Mortal(new RedisSessionStore(redis.client()))
  const a = await onRedis(mortal)
  const b = await onRedis(new RedisSessionStore(redis.client()))
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  await sleep(50)
  peer.ws.send('join')
  await waitFor(() => a.app.wsTopicStats('news')?.subscribers === 1, 3000, 'the subscription')
  await sleep(50)
  await mortal.die()
  killConnections(a)
  const elsewhere = new Peer(b.url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await elsewhere.welcome(), { resumed: true })
  await waitFor(() => b.app.wsTopicStats('news')?.subscribers === 1, 3000, 'subscribed on the next instance')
  await b.app.wsPublish('news', 'first')
  await waitFor(() => elsewhere.data().includes('first'), 3000, 'the topic\'s first message')
  elsewhere.ws.close()
})

t.test('a client that acknowledges nothing: each keep writes to Redis only what it adds, not the whole outbox again', needs(REDIS), async (t) => {
  const MESSAGES = 200
  const SIZE = 1024
  const redis = await RedisServer.start(t)
  const a = await durable(t, new RedisSessionStore(redis.client()))
  const peer = new Peer(a.url('/s'))
  const welcome = await peer.welcome()
  await waitFor(() => a.latest !== null, 2000, 'the session')
  const admin = redis.client()
  const written = async (): Promise<number> => Number(/total_net_input_bytes:(\d+)/.exec(await admin.info('stats'))![1])
  const before = await written()
  const messages = Array.from({ length: MESSAGES }, (_, i) => `${i + 1}:`.padEnd(SIZE, 'm'))
  // One at a time, each kept before the next is sent: a keep for each, the outbox one message longer each time.
  for (let i = 1; i <= MESSAGES; i++) {
    a.latest!.send(messages[i - 1])
    await waitFor(() => peer.data().length === i, 2000, `message ${i}`)
  }
  const bytes = await written() - before
  const whole = MESSAGES * (MESSAGES + 1) / 2 * SIZE
  t.ok(bytes < 3 * MESSAGES * SIZE, `Redis took ${bytes} bytes for ${MESSAGES * SIZE} sent (written whole each time: ${whole})`)
  // As the list keeps them: a byte (0, text), then the message.
  const kept = (await admin.lrangeBuffer(`reliable-ws:{s:${welcome.session}}:m`, 0, -1)).map((element) => element.subarray(1).toString())
  t.ok(kept.length === MESSAGES && kept.every((message, i) => message === messages[i]), 'the copy holds every message the client has not acknowledged, once, in order')
  peer.ws.close()
})

for (const kind of KINDS) {
  t.test(kind.name, kind.needs, async (t) => {
    const shared = await kind.shared(t)
    for (const [name, fn] of TESTS) await t.test(name, async (t) => await fn(t, shared))
  })
}
