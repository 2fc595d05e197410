// wsSessions.send from any instance sharing the session store: a session held here is sent to at once; any other's
// messages are posted to the store, taken by the instance holding it (told by a notice, or at its next write of the
// record when the notice is lost), or, handed over, by the claim that takes the handover. Never lost, never repeated,
// in the order of the calls.
import t from 'tap'
import type { Test } from 'tap'
import type fastifyReliableWs = require('../../types/index')
import { resumeToken } from '../../lib/protocol/protocol'
import { MemorySessionStore } from '../../lib/sessions/session-store'
import { sleep, waitFor } from '../helpers/helpers'
import { closed, Peer } from '../helpers/session-peer'
import { instance, KINDS, Through, until } from '../helpers/shared-sessions'
import type { Instance, Shared } from '../helpers/shared-sessions'

type SessionStore = fastifyReliableWs.SessionStore
type StoreNotices = fastifyReliableWs.StoreNotices

/** A store that never tells its instance of messages posted: as if every notice were lost. */
class Unnoticed extends Through {
  override listen (instance: string, notices: StoreNotices): ReturnType<NonNullable<SessionStore['listen']>> {
    return super.listen(instance, { asked: notices.asked, posted: () => {} })
  }
}

/**
 * A store whose takes are answered `ms` late: taken out of the store when called, as a remote store would on arrival,
 * or, `arriving` late, only then.
 */
class SlowTake extends Through {
  takes = 0
  constructor (base: SessionStore, private readonly ms: number, private readonly arriving = false) {
    super(base)
  }

  override async take (...args: Parameters<NonNullable<SessionStore['take']>>): Promise<Awaited<ReturnType<NonNullable<SessionStore['take']>>>> {
    this.takes++
    if (this.arriving) await sleep(this.ms)
    const taken = await super.take(...args)
    if (!this.arriving) await sleep(this.ms)
    return taken
  }
}

/** A client connected to `holder`, heard there (so its record says connected). */
async function connectedTo (holder: Instance): Promise<{ peer: Peer, session: string, token: string }> {
  const peer = new Peer(holder.url('/s'))
  const { session, token } = await peer.welcome()
  const heard = holder.received.length
  peer.ws.send('hello')
  await waitFor(() => holder.received.length > heard, 3000, 'heard')
  return { peer, session, token }
}

async function untilAway (shared: Shared, session: string): Promise<void> {
  await until('away in the store', async () => (await shared.store().read(session))?.state === 'away')
}

const TESTS: Array<[string, (t: Test, shared: Shared) => Promise<void>]> = []

function test (name: string, fn: (t: Test, shared: Shared) => Promise<void>): void {
  TESTS.push([name, fn])
}

test('from another instance, to a client connected to its holder: posted, taken, sent in the order of the calls, text and bytes as given', async (t, shared) => {
  const a = await instance(t, shared.store())
  const c = await instance(t, shared.store())
  const { peer, session } = await connectedTo(a)
  const binaries: boolean[] = []
  peer.ws.on('message', (_data, isBinary) => binaries.push(isBinary))

  const calls: Array<Promise<fastifyReliableWs.SessionSendResult>> = []
  for (let i = 0; i < 200; i++) calls.push(c.app.wsSessions.send(session, `r${i}`))
  calls.push(c.app.wsSessions.send(session, Buffer.from([0xff, 0x00])))
  calls.push(c.app.wsSessions.sendJSON(session, { last: true }))
  calls.push(c.app.wsSessions.send(session, new Uint8Array([0x31, 0x32]), { binary: false }))
  t.same(new Set(await Promise.all(calls)), new Set(['posted']), 'every call posted, none awaited before the next')
  await waitFor(() => peer.data().length === 203, 5000, 'every message')
  const data = peer.data()
  t.same(data.slice(0, 200), Array.from({ length: 200 }, (_, i) => `r${i}`), 'once each, in the order of the calls')
  t.same(data.slice(200), ['\ufffd\u0000', '{"last":true}', '12'])
  t.same(binaries.slice(-3), [true, false, false], 'binary as sent, or as told')
  t.match(c.app.wsStats.sessions, { posted: 203, postsTaken: 0 })
  t.match(a.app.wsStats.sessions, { posted: 0, postsTaken: 203 })

  t.equal(await a.app.wsSessions.send(session, 'here'), 'sent', 'its holder sends at once')
  await waitFor(() => peer.data().length === 204, 3000, 'the local one')
  t.equal(a.app.wsStats.sessions.posted, 0, 'not through the store')
  t.equal(await c.app.wsSessions.send('0'.repeat(32), 'nobody'), 'unknown', 'no such session')
  t.equal(c.app.wsStats.sessions.posted, 203, 'not counted')
  peer.ws.close()
})

test('to a session away on its holder: kept with the session, sent when its client resumes there', async (t, shared) => {
  const a = await instance(t, shared.store())
  const c = await instance(t, shared.store())
  const { peer, session, token } = await connectedTo(a)
  peer.ws.terminate()
  await untilAway(shared, session)
  for (const text of ['x', 'y', 'z']) t.equal(await c.app.wsSessions.send(session, text), 'posted')
  await waitFor(() => a.app.wsStats.sessions.postsTaken === 3, 3000, 'taken by the holder')
  const back = new Peer(a.url('/s'), resumeToken(session, token, 0))
  t.match(await back.welcome(), { resumed: true })
  await waitFor(() => back.data().length === 3, 3000, 'replayed')
  t.same(back.data(), ['x', 'y', 'z'])
  back.ws.close()
})

test('to a session handed over: the claim that takes the handover, on any instance, brings them after its messages', async (t, shared) => {
  const a = await instance(t, shared.store())
  const b = await instance(t, shared.store())
  const c = await instance(t, shared.store(), { resume: { maxBufferedMessages: 4 } })
  const { peer, session, token } = await connectedTo(a)
  // The client acknowledges nothing: these are handed over.
  for (const text of ['s1', 's2']) a.app.wsSessions.get(session)!.send(text)
  await a.app.close()
  t.match(await closed(peer), { code: 1001 })
  t.match(await c.app.wsSessions.lookup(session), { instance: '' }, 'held by nobody')
  for (let i = 1; i <= 4; i++) t.equal(await c.app.wsSessions.send(session, `p${i}`), 'posted')
  t.equal(await c.app.wsSessions.send(session, 'p5'), 'full', 'past the poster\'s resume.maxBufferedMessages')
  const back = new Peer(b.url('/s'), resumeToken(session, token, 0))
  t.match(await back.welcome(), { resumed: true })
  await waitFor(() => back.data().length === 6, 3000, 'replayed')
  t.same(back.data(), ['s1', 's2', 'p1', 'p2', 'p3', 'p4'], 'handed over, then posted, each once')
  t.equal(await c.app.wsSessions.send(session, 'p6'), 'posted', 'taken: room again')
  await waitFor(() => back.data().length === 7, 3000, 'to the new holder')
  t.match(b.app.wsStats.sessions, { claimedRemote: 1, postsTaken: 1 })
  back.ws.close()
})

test('a notice lost: the holder takes what was posted at its next write of the record (here, its client gone)', async (t, shared) => {
  const a = await instance(t, new Unnoticed(shared.store()))
  const c = await instance(t, shared.store())
  const { peer, session, token } = await connectedTo(a)
  t.equal(await c.app.wsSessions.send(session, 'unnoticed'), 'posted')
  await sleep(100)
  t.equal(a.app.wsStats.sessions.postsTaken, 0, 'not told')
  peer.ws.terminate()
  await waitFor(() => a.app.wsStats.sessions.postsTaken === 1, 3000, 'taken at the write of away')
  const back = new Peer(a.url('/s'), resumeToken(session, token, 0))
  await waitFor(() => back.data().length === 1, 3000, 'replayed')
  t.same(back.data(), ['unnoticed'])
  back.ws.close()
})

test('posted again while a take is on its way: taken once that one is over, in order', async (t, shared) => {
  const slow = new SlowTake(shared.store(), 150)
  const a = await instance(t, slow)
  const c = await instance(t, shared.store())
  const { peer, session } = await connectedTo(a)
  t.equal(await c.app.wsSessions.send(session, 'first'), 'posted')
  await waitFor(() => slow.takes === 1, 3000, 'the take on its way')
  t.equal(await c.app.wsSessions.send(session, 'second'), 'posted')
  t.equal(await c.app.wsSessions.send(session, 'third'), 'posted')
  // Its record is written again only after 30 s: what brings these is the take after the first.
  await waitFor(() => peer.data().length === 3, 3000, 'all three')
  t.same(peer.data(), ['first', 'second', 'third'])
  t.equal(slow.takes, 2, 'one take more for both')
  peer.ws.close()
})

test('a session handed over while a take is on its way: what that take brings goes with the handover, what is posted meanwhile waits for the claim', async (t, shared) => {
  const slow = new SlowTake(shared.store(), 200)
  const a = await instance(t, slow)
  const b = await instance(t, shared.store())
  const c = await instance(t, shared.store())
  const { peer, session, token } = await connectedTo(a)
  t.equal(await c.app.wsSessions.send(session, 'in flight'), 'posted')
  await waitFor(() => slow.takes === 1, 3000, 'the take on its way')
  t.equal(await c.app.wsSessions.send(session, 'meanwhile'), 'posted')
  await sleep(20)
  await a.app.close()
  t.match(a.app.wsStats.sessions, { handedOver: 1, postsTaken: 1 })
  t.equal(slow.takes, 1, 'no take once the handover began')
  t.match(await closed(peer), { code: 1001 })
  const back = new Peer(b.url('/s'), resumeToken(session, token, 0))
  await waitFor(() => back.data().length === 2, 3000, 'replayed')
  t.same(back.data(), ['in flight', 'meanwhile'])
  back.ws.close()
})

test('a write that finds posts, answered once the session was handed over: no take; they wait for the claim', async (t, shared) => {
  class SlowAway extends Unnoticed {
    takes = 0
    override take (...args: Parameters<NonNullable<SessionStore['take']>>): ReturnType<NonNullable<SessionStore['take']>> {
      this.takes++
      return super.take(...args)
    }

    override async write (...args: Parameters<SessionStore['write']>): Promise<fastifyReliableWs.WriteResult> {
      const result = await super.write(...args)
      if (args[2].away === true) await sleep(300)
      return result
    }
  }
  const slow = new SlowAway(shared.store())
  const a = await instance(t, slow)
  const b = await instance(t, shared.store())
  const c = await instance(t, shared.store())
  const { peer, session, token } = await connectedTo(a)
  t.equal(await c.app.wsSessions.send(session, 'waiting'), 'posted')
  peer.ws.terminate()
  await untilAway(shared, session)
  await a.app.close()
  t.match(a.app.wsStats.sessions, { handedOver: 1 })
  await sleep(400)
  t.equal(slow.takes, 0, 'the answer came after the handover: no take')
  const back = new Peer(b.url('/s'), resumeToken(session, token, 0))
  await waitFor(() => back.data().length === 1, 3000, 'replayed')
  t.same(back.data(), ['waiting'])
  back.ws.close()
})

test('asked for while a take is on its way, its client back meanwhile: the session stays, with what the take brought', async (t, shared) => {
  const a = await instance(t, new SlowTake(shared.store(), 300))
  const b = await instance(t, shared.store())
  const c = await instance(t, shared.store())
  const { peer, session, token } = await connectedTo(a)
  t.equal(await c.app.wsSessions.send(session, 'in flight'), 'posted')
  await sleep(20)
  // Its client tries the other instance, which asks for it; then comes back here before the take is in.
  const there = new Peer(b.url('/s'), resumeToken(session, token, 0))
  t.match(await closed(there), { code: 1013 })
  t.match(await closed(peer), { code: 1006 })
  await waitFor(() => a.app.wsStats.sessions.replacedRemote === 1, 3000, 'asked')
  const back = new Peer(a.url('/s'), resumeToken(session, token, 0))
  t.match(await back.welcome(), { resumed: true })
  await sleep(400)
  t.equal(a.app.wsStats.sessions.handedOver, 0, 'not handed over')
  t.not(a.app.wsSessions.get(session), undefined, 'held here still')
  t.same(back.data(), ['in flight'])
  const heard = a.received.length
  back.ws.send('still here')
  await waitFor(() => a.received.length > heard, 3000, 'its messages reach the application')
  t.equal(await c.app.wsSessions.send(session, 'later'), 'posted')
  await waitFor(() => back.data().length === 2, 3000, 'taken here')
  back.ws.close()
})

test('one caller\'s messages in the order of its calls across the session\'s arrival on the caller\'s instance', async (t, shared) => {
  class SlowClaim extends Through {
    override async claim (...args: Parameters<SessionStore['claim']>): Promise<fastifyReliableWs.ClaimResult> {
      const result = await super.claim(...args)
      await sleep(200)
      return result
    }
  }
  const a = await instance(t, shared.store())
  const c = await instance(t, new SlowClaim(shared.store()))
  const { peer, session, token } = await connectedTo(a)
  await a.app.close()
  t.match(await closed(peer), { code: 1001 })
  const back = new Peer(c.url('/s'), resumeToken(session, token, 0))
  await until('claimed by c', async () => (await c.app.wsSessions.lookup(session))?.instance === c.app.wsSessions.instance)
  t.equal(c.app.wsSessions.get(session), undefined, 'not opened yet')
  t.equal(await c.app.wsSessions.send(session, 'm1'), 'posted')
  await waitFor(() => c.app.wsSessions.get(session) !== undefined, 3000, 'opened')
  t.equal(await c.app.wsSessions.send(session, 'm2'), 'posted', 'through the store still, after m1')
  await waitFor(() => back.data().length === 2, 3000, 'both')
  t.same(back.data(), ['m1', 'm2'])
  t.equal(await c.app.wsSessions.send(session, 'm3'), 'sent', 'once taken, at once')
  await waitFor(() => back.data().length === 3, 3000, 'the third')
  back.ws.close()
})

test('a record lost while a take is on its way: the session ends with 4802', async (t, shared) => {
  const a = await instance(t, new SlowTake(shared.store(), 200, true))
  const c = await instance(t, shared.store())
  const { peer, session } = await connectedTo(a)
  t.equal(await c.app.wsSessions.send(session, 'late'), 'posted')
  await shared.forget(session)
  t.match(await closed(peer), { code: 4802 })
  t.equal(a.app.wsStats.sessions.storeLost, 1)
})

test('a take that fails is logged and leaves nothing stuck: the next post is taken', async (t, shared) => {
  class FailingOnce extends Through {
    failed = false
    override async take (...args: Parameters<NonNullable<SessionStore['take']>>): Promise<Awaited<ReturnType<NonNullable<SessionStore['take']>>>> {
      if (this.failed) return await super.take(...args)
      this.failed = true
      throw new Error('store down')
    }
  }
  const logs: string[] = []
  const a = await instance(t, new FailingOnce(shared.store()), {}, {}, () => {}, { logger: { level: 'warn', stream: { write: (line: string) => { logs.push(JSON.parse(line).msg) } } } })
  const c = await instance(t, shared.store())
  const { peer, session } = await connectedTo(a)
  t.equal(await c.app.wsSessions.send(session, 'one'), 'posted')
  await waitFor(() => logs.includes('session store: take failed'), 3000, 'the failure logged')
  t.equal(await c.app.wsSessions.send(session, 'two'), 'posted')
  await waitFor(() => peer.data().length === 2, 3000, 'both, with the next take')
  t.same(peer.data(), ['one', 'two'])
  peer.ws.close()
})

test('a session that ends while a take is on its way, its handover waiting for it: what the take brings goes nowhere, and no take follows', async (t, shared) => {
  const slow = new SlowTake(shared.store(), 300)
  const a = await instance(t, slow, {}, { maxBufferedMessages: 2 })
  const c = await instance(t, shared.store())
  const { peer, session } = await connectedTo(a)
  t.equal(await c.app.wsSessions.send(session, 'taken'), 'posted')
  await waitFor(() => slow.takes === 1, 3000, 'the take on its way')
  t.equal(await c.app.wsSessions.send(session, 'again'), 'posted')
  const closing = a.app.close()
  await sleep(50)
  const held = a.app.wsSessions.get(session)!
  for (const text of ['1', '2', '3']) held.send(text)
  await closing
  t.match(a.app.wsStats.sessions, { overflowed: 1, handedOver: 0, postsTaken: 0 })
  t.equal(slow.takes, 1, 'none for what was posted meanwhile')
  t.same(peer.data(), ['1', '2'])
  t.match(await closed(peer), { code: 4800 })
})

test('posted past the holder\'s limits for the session: it ends with 4800, as with its own sends', async (t, shared) => {
  const a = await instance(t, shared.store(), {}, { maxBufferedMessages: 2 })
  const c = await instance(t, shared.store())
  const { peer, session } = await connectedTo(a)
  const sends = ['1', '2', '3'].map(async (text) => await c.app.wsSessions.send(session, text))
  t.same(await Promise.all(sends), ['posted', 'posted', 'posted'], 'within the poster\'s limits')
  t.match(await closed(peer), { code: 4800 })
  t.same(peer.data(), ['1', '2'])
  t.match(a.app.wsStats.sessions, { overflowed: 1, active: 0 })
})

test('a session held here that one more message overflows: overflowed, and it ends', async (t, shared) => {
  const a = await instance(t, shared.store(), {}, { maxBufferedMessages: 2 })
  const { peer, session } = await connectedTo(a)
  peer.ws.pause()
  t.equal(await a.app.wsSessions.send(session, '1'), 'sent')
  t.equal(await a.app.wsSessions.send(session, '2'), 'sent')
  t.equal(await a.app.wsSessions.send(session, '3'), 'overflowed')
  t.equal(a.app.wsSessions.get(session), undefined, 'ended')
  peer.ws.resume()
  t.match(await closed(peer), { code: 4800 })
})

for (const kind of KINDS) {
  t.test(kind.name, kind.needs, async (t) => {
    const shared = await kind.shared(t)
    for (const [name, fn] of TESTS) await t.test(name, async (t) => await fn(t, shared))
  })
}

t.test('a store without post and take: only the sessions held here are reached', async (t) => {
  const store = Object.assign(new Through(new MemorySessionStore()), { post: undefined, take: undefined })
  const a = await instance(t, store)
  const { peer, session } = await connectedTo(a)
  t.equal(await a.app.wsSessions.send(session, 'here'), 'sent')
  t.equal(await a.app.wsSessions.send('0'.repeat(32), 'there'), 'unknown')
  t.equal(a.app.wsStats.sessions.posted, 0)
  peer.ws.close()
})
