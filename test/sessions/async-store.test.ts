// Sessions with a store that answers with promises (test/helpers/session-stores.ts), and with stores that fail: the
// socket waits paused for the store, a socket gone meanwhile lets its claim go, a failed store gets the client a retry.
import t from 'tap'
import { once } from 'node:events'
import { Writable } from 'node:stream'
import WebSocket from 'ws'
import type { FastifyInstance } from 'fastify'
import { ReliableWebSocket } from '../../lib/client'
import type { ReliableSocket } from '../../lib/core/shapes'
import { kSendControl } from '../../lib/core/symbols'
import { MemorySessionStore } from '../../lib/sessions/session-store'
import type { SessionStore } from '../../lib/sessions/session-store'
import { resumeToken } from '../../lib/protocol/protocol'
import { FaultProxy } from '../helpers/fault-proxy'
import { sleep, start, waitFor } from '../helpers/helpers'
import { closed, Peer } from '../helpers/session-peer'
import type { Welcome } from '../helpers/session-peer'
import { AsyncStore } from '../helpers/session-stores'

type Teardown = { teardown: (fn: () => unknown) => void }

/**
 * A route with sessions on `sessionStore` (and `resume` options); what its app received, the handler's calls, and
 * Fastify's warnings (with the message of the error each names, if any).
 */
async function storeServer (t: Teardown, sessionStore: SessionStore | undefined, options: object = {}, resume: object = {}): Promise<{ app: FastifyInstance, url: (path: string) => string, port: number, received: string[], handled: boolean[], warnings: string[], errors: Array<string | undefined> }> {
  const received: string[] = []
  const handled: boolean[] = []
  const warnings: string[] = []
  const errors: Array<string | undefined> = []
  const stream = new Writable({
    write (line, _encoding, done) {
      const entry = JSON.parse(line.toString())
      warnings.push(entry.msg)
      errors.push(entry.err?.message)
      done()
    }
  })
  const server = await start({ heartbeat: false, logging: { connections: false }, sessionStore, ...options }, (app) => {
    app.get('/s', { websocket: true, config: { reliable: { resume: { ttlMs: 60_000, ...resume } } } }, (socket) => {
      handled.push(socket.session!.resumed)
      socket.on('message', (data: Buffer) => received.push(data.toString()))
    })
  }, { logger: { level: 'warn', stream } })
  t.teardown(() => server.app.close())
  return { ...server, received, handled, warnings, errors }
}

/** The server's side of every socket upgraded from now on. */
function upgrades (app: FastifyInstance): ReliableSocket[] {
  const upgraded: ReliableSocket[] = []
  app.websocketServer.on('connection', (socket) => upgraded.push(socket as unknown as ReliableSocket))
  return upgraded
}

/** A session begun and left: its client away, one message sent to it meanwhile. */
async function away (app: FastifyInstance, url: (path: string) => string): Promise<Welcome> {
  const peer = new Peer(url('/s'))
  const welcome = await peer.welcome()
  peer.ws.terminate()
  await waitFor(() => app.wsSessions.get(welcome.session)?.connected === false, 3000, 'the client to be away')
  app.wsSessions.get(welcome.session)!.send('while away')
  return welcome
}

/**
 * A session left away, its client resuming: the server closes the new socket while the claim is on its way (a
 * paused socket reads nothing, so its peer's leaving goes unseen until then).
 */
async function cutWhileClaiming (t: Teardown, store: AsyncStore): Promise<Awaited<ReturnType<typeof storeServer>> & { old: Welcome, gone: Peer }> {
  const server = await storeServer(t, store)
  const old = await away(server.app, server.url)
  const upgraded = upgrades(server.app)
  store.delays.claim = 100
  const gone = new Peer(server.url('/s'), resumeToken(old.session, old.token, 0))
  await waitFor(() => store.calls.includes('claim'), 3000, 'the claim')
  upgraded[0].terminate()
  return { ...server, old, gone }
}

t.test("with the memory store the welcome is written in the upgrade's own tick; with a store answering later, after it", async (t) => {
  for (const [sessionStore, sameTick] of [[undefined, true], [new AsyncStore(), false]] as const) {
    const { app, url } = await storeServer(t, sessionStore)
    const welcomes: boolean[] = []
    app.websocketServer.on('connection', (ws) => {
      const socket = ws as unknown as ReliableSocket
      let upgradeTick = true
      queueMicrotask(() => { upgradeTick = false })
      const sendControl = socket[kSendControl]
      socket[kSendControl] = (frame, cb) => {
        if (frame.includes('"welcome"')) welcomes.push(upgradeTick)
        return sendControl.call(socket, frame, cb)
      }
    })
    const peer = new Peer(url('/s'))
    await peer.welcome()
    t.same(welcomes, [sameTick], sameTick ? 'the memory store: the same tick' : 'a store with promises: a later one')
    peer.ws.close()
  }
})

t.test('with a store answering with promises a client resumes after a cut: what either side sent meanwhile arrives once, in order', async (t) => {
  const store = new AsyncStore()
  store.delays.create = 10
  store.delays.claim = 20
  // An async onConnect too: the socket is already paused when the store is asked.
  const { app, port, received, handled } = await storeServer(t, store, { onConnect: async () => {} })
  const proxy = await FaultProxy.start(port)
  t.teardown(() => proxy.close())
  const ws = new ReliableWebSocket(proxy.url('/s'), { WebSocket, backoff: { initialDelayMs: 5, maxDelayMs: 20, slowAfter: Infinity } })
  const got: string[] = []
  ws.addEventListener('message', (event) => got.push(event.data as string))
  ws.addEventListener('sessionlost', () => t.fail('no session is lost'))
  await once(ws as any, 'open')
  const id = ws.session!
  app.wsSessions.get(id)!.send('first')
  ws.send('first')
  await waitFor(() => got.length === 1 && received.length === 1, 3000, 'the first messages')

  proxy.refuse = true
  proxy.cut()
  await once(ws as any, 'close')
  await waitFor(() => app.wsSessions.get(id)?.connected === false, 3000, 'the server to notice')
  t.ok(app.wsSessions.get(id)!.send('while away'))
  ws.send('queued')
  proxy.refuse = false
  await once(ws as any, 'reconnected')
  ws.send('after')
  await waitFor(() => got.length === 2 && received.length === 3, 3000, 'replay and resend')
  t.equal(ws.session, id, 'the same session')
  t.same(got, ['first', 'while away'])
  t.same(received, ['first', 'queued', 'after'])
  t.same(handled, [false, true])
  t.match(app.wsStats.sessions, { resumed: 1, resumeRefused: 0, storeUnavailable: 0, active: 1 })
  t.match(store.memory.read(id), { fence: 2, state: 'connected' }, 'the record: claimed once, its client heard')
  ws.close()
  await once(ws as any, 'close')
})

t.test('with a store answering with promises a resume the claim refuses begins a new session, the old one left as it was', async (t) => {
  const store = new AsyncStore()
  store.delays.claim = 20
  const { app, url, received } = await storeServer(t, store)
  const old = await away(app, url)
  const stranger = new Peer(url('/s'), resumeToken(old.session, 'f'.repeat(32), 0))
  // Sent before the welcome, while the store answers: read once the handler listens.
  stranger.ws.on('open', () => stranger.ws.send('early'))
  const welcome = await stranger.welcome()
  t.equal(welcome.resumed, false)
  t.not(welcome.session, old.session)
  t.match(app.wsStats.sessions, { resumeRefused: 1, resumed: 0, active: 2 })
  t.equal(app.wsSessions.get(old.session)?.connected, false, 'the old one is still away')
  const owner = new Peer(url('/s'), resumeToken(old.session, old.token, 0))
  t.match(await owner.welcome(), { session: old.session, resumed: true })
  await waitFor(() => owner.frames.length === 2, 3000, 'the replay')
  t.equal(owner.frames[1], 'while away')
  await waitFor(() => received.length === 1, 3000, 'the early message')
  t.same(received, ['early'])
  stranger.ws.close()
  owner.ws.close()
})

t.test('a socket closed while its claim is pending leaves the session as it was: away, held by its instance, resumable later', async (t) => {
  const store = new AsyncStore()
  const { app, url, handled, old, gone } = await cutWhileClaiming(t, store)
  await waitFor(() => store.memory.read(old.session)?.state === 'away', 3000, 'the session away again')
  t.same(gone.frames, [], 'no welcome')
  t.same(handled, [false], 'no handler for it')
  t.match(app.wsSessions.get(old.session), { connected: false, ended: false, unacknowledged: 1 })
  t.match(store.memory.read(old.session), { state: 'away', fence: 2 })
  t.not(store.memory.read(old.session)!.instance, '', 'held by its instance, which another may ask for it')
  t.notOk(store.calls.includes('release'))
  t.match(app.wsStats.sessions, { resumed: 0, active: 1 })
  store.delays.claim = 0
  const back = new Peer(url('/s'), resumeToken(old.session, old.token, 0))
  t.match(await back.welcome(), { session: old.session, resumed: true }, 'with the secret the client still holds')
  await waitFor(() => back.frames.length === 2, 3000, 'the replay')
  t.equal(back.frames[1], 'while away')
  back.ws.close()
})

t.test('a socket closed while an async owner is asked gets no session: the store is not asked', async (t) => {
  const store = new AsyncStore()
  const { app, url, handled } = await storeServer(t, store, {}, { owner: async () => await new Promise((resolve) => setTimeout(resolve, 100, 'alice')) })
  const upgraded = upgrades(app)
  const gone = new Peer(url('/s'))
  await waitFor(() => upgraded.length === 1, 3000, 'the upgrade')
  upgraded[0].terminate()
  await gone.closed
  await sleep(150)
  t.same(store.calls, ['listen'], 'nothing but the listening begun at ready')
  t.same(handled, [])
  t.same(gone.frames, [])
})

t.test('a new session whose socket closed while the store created it is ended', async (t) => {
  const store = new AsyncStore()
  const { app, url, handled } = await storeServer(t, store)
  const upgraded = upgrades(app)
  store.delays.create = 100
  const gone = new Peer(url('/s'))
  await waitFor(() => store.calls.includes('create'), 3000, 'the creation')
  upgraded[0].terminate()
  await waitFor(() => store.calls.includes('end'), 3000, 'the record to be ended')
  t.same(gone.frames, [])
  t.same(handled, [])
  t.match(app.wsStats.sessions, { active: 0 })
})

t.test('a session that ends while its claim is on the way begins anew; the record the claim took is ended', async (t) => {
  const store = new AsyncStore()
  const { app, url } = await storeServer(t, store)
  const old = await away(app, url)
  store.delays.claim = 100
  const peer = new Peer(url('/s'), resumeToken(old.session, old.token, 0))
  await waitFor(() => store.calls.includes('claim'), 3000, 'the claim')
  // Past maxBufferedBytes: the session ends, and its own end is refused (the claim raised the fence).
  t.notOk(app.wsSessions.get(old.session)!.send('x'.repeat((1 << 20) + 1)))
  const welcome = await peer.welcome()
  t.equal(welcome.resumed, false)
  t.not(welcome.session, old.session)
  t.equal(store.memory.read(old.session), null, 'the record is ended once the claim lands')
  t.match(app.wsStats.sessions, { overflowed: 1, resumeRefused: 1, resumed: 0, active: 1 })
  peer.ws.close()
})

t.test('a store that fails while a session begins or resumes: the client is told to retry and closed with 1013, counted', async (t) => {
  class Throwing extends MemorySessionStore {
    override create (): void {
      throw new Error('store down')
    }
  }
  const rejecting = new AsyncStore()
  rejecting.failing.add('create')
  for (const store of [new Throwing(), rejecting]) {
    const { app, url, handled, warnings } = await storeServer(t, store)
    const peer = new Peer(url('/s'))
    t.match(await peer.closed, { code: 1013, reason: 'Session store unavailable' })
    t.equal(peer.frames.length, 1, 'one frame before the close')
    t.match(peer.frames[0], { t: 'retry', ms: Number })
    const ms = (peer.frames[0] as { ms: number }).ms
    t.ok(ms >= 0 && ms < 2000, `a moment within 2 s: ${ms}`)
    t.same(handled, [], 'no handler')
    t.match(app.wsStats.sessions, { storeUnavailable: 1, active: 0, resumeRefused: 0 })
    await waitFor(() => app.wsStats.closeCauses.session === 1, 3000, 'the close, cause session')
    t.ok(warnings.includes('session store failed'))
  }
})

t.test('a claim that rejects: the client is told to retry, the session left away', async (t) => {
  const store = new AsyncStore()
  const { app, url } = await storeServer(t, store)
  const old = await away(app, url)
  store.failing.add('claim')
  const peer = new Peer(url('/s'), resumeToken(old.session, old.token, 0))
  t.match(await peer.closed, { code: 1013, reason: 'Session store unavailable' })
  t.match(peer.frames, [{ t: 'retry' }])
  t.match(app.wsSessions.get(old.session), { connected: false, ended: false, unacknowledged: 1 })
  t.match(app.wsStats.sessions, { storeUnavailable: 1, resumeRefused: 0, resumed: 0 })
  // A session this instance does not hold (another instance's, for all it knows) alike.
  const elsewhere = new Peer(url('/s'), resumeToken('f'.repeat(32), old.token, 0))
  t.match(await elsewhere.closed, { code: 1013, reason: 'Session store unavailable' })
  t.equal(app.wsStats.sessions.storeUnavailable, 2)
  store.failing.delete('claim')
  const back = new Peer(url('/s'), resumeToken(old.session, old.token, 0))
  t.match(await back.welcome(), { session: old.session, resumed: true })
  back.ws.close()
})

t.test('writes that fail are logged, and the session goes on', async (t) => {
  const store = new AsyncStore()
  for (const method of ['write', 'release', 'end'] as const) store.failing.add(method)
  const { app, url, received, warnings } = await storeServer(t, store, {}, { ttlMs: 200 })
  const peer = new Peer(url('/s'))
  const welcome = await peer.welcome()
  peer.ws.send('heard')
  await waitFor(() => received.length === 1, 3000, 'the message')
  peer.ws.terminate()
  await waitFor(() => app.wsSessions.get(welcome.session)?.connected === false, 3000, 'away')
  // The record still says connected, with no held secret: the current secret resumes it all the same.
  const back = new Peer(url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await back.welcome(), { session: welcome.session, resumed: true })
  back.ws.close()
  await back.closed
  // Its end fails too: the record is left behind, the session is gone all the same.
  await waitFor(() => app.wsStats.sessions.expired === 1, 3000, 'the session expired')
  t.equal(app.wsSessions.get(welcome.session), undefined)
  await waitFor(() => warnings.filter((line) => line.startsWith('session store:')).length >= 4, 3000, 'the warnings')
  t.same([...new Set(warnings.filter((line) => line.startsWith('session store:')))].sort(), ['session store: end failed', 'session store: write failed'])
})

t.test('a session that ends after its claim is answered, before it is opened: the client gets 1013 and no welcome, the record is ended', async (t) => {
  // The claim's answer arrives; two microtasks later, before the registry opens the session, the app's send to it
  // passes its buffer and ends it.
  class EndsAfterClaim extends AsyncStore {
    hook: (() => void) | null = null
    override async claim (request: Parameters<AsyncStore['claim']>[0]): ReturnType<AsyncStore['claim']> {
      const result = await super.claim(request)
      const hook = this.hook
      if (hook !== null) queueMicrotask(() => queueMicrotask(hook))
      return result
    }
  }
  const store = new EndsAfterClaim()
  const { app, url, handled } = await storeServer(t, store, {}, { maxBufferedMessages: 1 })
  const old = await away(app, url)
  const session = app.wsSessions.get(old.session)!
  store.hook = () => { session.send('one too many') }
  const peer = new Peer(url('/s'), resumeToken(old.session, old.token, 0))
  t.match(await peer.closed, { code: 1013, reason: 'Session ended' })
  t.same(peer.frames, [], 'no welcome for a session that has ended')
  t.equal(session.ended, true)
  t.same(handled, [false], 'no handler for it')
  await waitFor(() => store.memory.read(old.session) === null, 3000, 'the record the claim took to be ended')
  t.match(app.wsStats.sessions, { overflowed: 1, resumeRefused: 1, resumed: 0, active: 0 })
  const back = new Peer(url('/s'), resumeToken(old.session, old.token, 0))
  t.match(await back.welcome(), { resumed: false }, 'coming back, the client begins a new session')
  back.ws.close()
  await back.closed
  t.equal(app.wsStats.sessions.active, 1, 'the new session alone: the ended one is not counted twice')
})

t.test('a store that throws from a write, release or end: logged, and the session goes on', async (t) => {
  class ThrowingWrites extends MemorySessionStore {
    override write (): never { throw new Error('busy') }
    override end (): never { throw new Error('busy') }
  }
  const { app, url, received, warnings } = await storeServer(t, new ThrowingWrites(), {}, { ttlMs: 100 })
  const peer = new Peer(url('/s'))
  const welcome = await peer.welcome()
  peer.ws.send('heard')
  await waitFor(() => received.length === 1, 3000, 'the message')
  peer.ws.terminate()
  await waitFor(() => app.wsSessions.get(welcome.session) === undefined, 3000, 'the session to expire')
  t.same(warnings.filter((w) => w.startsWith('session store')), ['session store: write failed', 'session store: write failed', 'session store: end failed'])
  t.match(app.wsStats.sessions, { expired: 1, active: 0 })
})

t.test('a store that fails after the socket closed: nobody is told, nothing is counted', async (t) => {
  const store = new AsyncStore()
  store.failing.add('claim')
  const { app, warnings, gone } = await cutWhileClaiming(t, store)
  await waitFor(() => warnings.includes('session store failed'), 3000, 'the failure logged')
  t.same(gone.frames, [])
  t.match(app.wsStats.sessions, { storeUnavailable: 0 })
})

t.test('a claim given up whose write fails: logged with its error, and the session stays away here', async (t) => {
  const store = new AsyncStore()
  const { app, warnings, errors, old } = await cutWhileClaiming(t, store)
  store.failing.add('write')
  await waitFor(() => warnings.includes('session store: write failed'), 3000, 'the failure logged')
  t.equal(errors[warnings.indexOf('session store: write failed')], 'store down (write)', 'with the store\'s error')
  t.match(app.wsSessions.get(old.session), { connected: false, ended: false })
})

t.test('with a store answering with promises, a busy resume is told to retry; one whose socket closed meanwhile is not counted', async (t) => {
  const store = new AsyncStore()
  const { app, url, handled } = await storeServer(t, store)
  const old = await away(app, url)
  // Resumed, as if its welcome were lost: the client still holds the old secret while this socket lives.
  const unheard = new Peer(url('/s'), resumeToken(old.session, old.token, 0))
  t.match(await unheard.welcome(), { resumed: true })
  store.delays.claim = 20
  const busy = new Peer(url('/s'), resumeToken(old.session, old.token, 0))
  t.match(await busy.closed, { code: 1013, reason: 'Session busy' })
  t.match(busy.frames, [{ t: 'retry', ms: Number }])
  t.match(app.wsStats.sessions, { busy: 1, resumeRefused: 0 })
  const upgraded = upgrades(app)
  store.delays.claim = 100
  const claims = store.calls.filter((call) => call === 'claim').length
  const gone = new Peer(url('/s'), resumeToken(old.session, old.token, 0))
  await waitFor(() => store.calls.filter((call) => call === 'claim').length > claims, 3000, 'the claim')
  upgraded[0].terminate()
  await gone.closed
  await sleep(150)
  t.same(gone.frames, [])
  t.match(app.wsStats.sessions, { busy: 1 }, 'nobody left to tell: not counted')
  t.same(handled, [false, true], 'the handler ran for the first connection and the resume alone')
  unheard.ws.close()
})

t.test('a session that ends while a busy claim is on its way: the client begins a new session rather than waiting for it', async (t) => {
  const store = new AsyncStore()
  const { app, url } = await storeServer(t, store)
  const old = await away(app, url)
  const unheard = new Peer(url('/s'), resumeToken(old.session, old.token, 0))
  t.match(await unheard.welcome(), { resumed: true })
  store.delays.claim = 100
  const claims = store.calls.filter((call) => call === 'claim').length
  const peer = new Peer(url('/s'), resumeToken(old.session, old.token, 0))
  await waitFor(() => store.calls.filter((call) => call === 'claim').length > claims, 3000, 'the claim')
  t.notOk(app.wsSessions.get(old.session)!.send('x'.repeat((1 << 20) + 1)), 'past maxBufferedBytes: the session ends')
  t.match(await peer.welcome(), { resumed: false })
  t.match(app.wsStats.sessions, { busy: 0, resumeRefused: 1, overflowed: 1 })
  unheard.ws.close()
  peer.ws.close()
})

t.test('past limits.maxPendingSessions sessions the store is settling, a connection is told to come back and closed with 1013 `Server busy`, the store not asked', async (t) => {
  const store = new AsyncStore()
  const { app, url } = await storeServer(t, store, { limits: { maxPendingSessions: 2 } })
  const old = await away(app, url)
  store.delays.create = 300
  store.delays.claim = 300
  const asked = (): number => store.calls.filter((call) => call === 'create' || call === 'claim').length
  const before = asked()
  const resuming = new Peer(url('/s'), resumeToken(old.session, old.token, 0))
  const beginning = new Peer(url('/s'))
  await waitFor(() => asked() === before + 2, 3000, 'a claim and a create on their way')
  const crowd = [new Peer(url('/s')), new Peer(url('/s'), resumeToken(old.session, old.token, 0))]
  for (const peer of crowd) {
    t.match(await closed(peer), { code: 1013, reason: 'Server busy' })
    const retry = peer.frames[0] as { t: string, ms: number }
    t.ok(retry.t === 'retry' && retry.ms >= 250 && retry.ms < 2250, `told to come back in ${retry.ms} ms`)
  }
  t.equal(asked(), before + 2, 'the store was not asked for them')
  t.match(app.wsStats.sessions, { throttled: 2, busy: 0, storeUnavailable: 0 })
  t.match(await resuming.welcome(), { session: old.session, resumed: true }, 'those on their way are settled')
  t.match(await beginning.welcome(), { resumed: false })
  const later = new Peer(url('/s'))
  t.match(await later.welcome(), { resumed: false }, 'settled, room for more')
  for (const peer of [resuming, beginning, later]) peer.ws.close()
})

t.test('a write that finds no record because its session ended meanwhile (the end reached the store first) ends nothing more', async (t) => {
  // Its writes reach the records late: after the end sent later.
  class LateWrites extends AsyncStore {
    late = 0
    override write (...args: Parameters<AsyncStore['write']>): ReturnType<AsyncStore['write']> {
      this.late++
      return sleep(300).then(() => this.memory.write(...args))
    }
  }
  const store = new LateWrites()
  const { app, url } = await storeServer(t, store, {}, { ttlMs: 50 })
  const peer = new Peer(url('/s'))
  await peer.welcome()
  peer.ws.terminate()
  await waitFor(() => app.wsStats.sessions.expired === 1, 3000, 'the expiry')
  t.ok(store.late >= 1, 'the away write was on its way')
  await sleep(400)
  t.match(app.wsStats.sessions, { active: 0, expired: 1, storeLost: 0 })
})
