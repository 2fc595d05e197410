// What every session store must do (docs/sessions.md, "The session store"): run against a store by runStoreContract.
// Every answer is awaited, so one contract holds for stores that answer at once and with promises alike.
import type { Test } from 'tap'
import type fastifyReliableWs = require('../../types/index')
import { sleep, waitFor } from './helpers'

type SessionStore = fastifyReliableWs.SessionStore
type SessionRecord = fastifyReliableWs.SessionRecord
type ClaimRequest = fastifyReliableWs.ClaimRequest
type SessionHandover = fastifyReliableWs.SessionHandover
type SessionMessage = fastifyReliableWs.SessionMessage
type Awaitable<T> = fastifyReliableWs.Awaitable<T>

// Windows long enough that a loaded machine stays inside them, and waits twice as long as the ones they outlast.
const CONFIRM_MS = 200
const ASK_MS = 300
const TTL_MS = 60_000

let ids = 0

function newRecord (overrides: Partial<SessionRecord> = {}): SessionRecord {
  const now = Date.now()
  return {
    id: (++ids).toString(16).padStart(32, '0'),
    route: '/rooms/:room',
    url: '/rooms/a',
    owner: 'alice',
    secret: 's0',
    heldSecret: '',
    fence: 1,
    instance: 'A',
    state: 'claimed',
    claimedUntil: now + CONFIRM_MS,
    expiresAt: now + TTL_MS,
    createdAt: now,
    ...overrides
  }
}

function request (record: SessionRecord, overrides: Partial<ClaimRequest> = {}): ClaimRequest {
  return {
    id: record.id,
    instance: 'B',
    route: record.route,
    url: record.url,
    owner: record.owner,
    secret: record.secret,
    received: 0,
    sent: 0,
    newSecret: 's1',
    confirmMs: CONFIRM_MS,
    askMs: ASK_MS,
    ttlMs: TTL_MS,
    ...overrides
  }
}

/** A record created, then claimed once by instance B with its current secret: fence 2, secret s1, held secret s0. */
async function claimed (store: SessionStore): Promise<SessionRecord> {
  const record = newRecord()
  await store.create(record)
  const result = await store.claim(request(record))
  if (!result.ok) throw new Error(`the first claim was refused: ${result.refusal}`)
  return result.record
}

/**
 * What an instance closing hands over: message 4 (text, non-ASCII), 5 (bytes that are no UTF-8), 6 (empty text) and 7
 * (empty bytes) sent and not acknowledged, 3 acknowledged before them.
 */
function handover (): SessionHandover {
  return {
    received: 9,
    acknowledged: 3,
    messages: [
      { data: 'héllo ✓', binary: false },
      { data: Buffer.from([0xff, 0x00, 0xc3, 0x28, 0x80, 0xfe]), binary: true },
      { data: '', binary: false },
      { data: Buffer.alloc(0), binary: true }
    ],
    topics: [{ topic: 'news', epoch: 'e1', offset: 41 }, { topic: 'fresh', epoch: '', offset: 0 }]
  }
}

/** A session claimed (fence 2, secret s1), then released by its holder with `handedOver`: away, held by nobody. */
async function released (store: SessionStore, handedOver?: SessionHandover): Promise<SessionRecord> {
  const first = await claimed(store)
  const result = await store.release(first.id, 2, TTL_MS, handedOver)
  if (result !== 'ok') throw new Error(`the release was refused: ${result}`)
  return first
}

/**
 * `clock`: the store's clock, read before and after a call to bound the moments the store sets (a store in Redis takes
 * them from Redis's clock, not this process's). Default: this process's.
 */
export function runStoreContract (t: Test, makeStore: () => SessionStore, clock: () => Awaitable<number> = Date.now): void {
  t.test('create keeps a copy; read gives one and changes nothing; an id taken is refused', async (t) => {
    const store = makeStore()
    const record = newRecord()
    await store.create(record)
    const after = await clock()
    record.secret = 'changed after create'
    const { createdAt, claimedUntil, expiresAt, ...read } = (await store.read(record.id))!
    const { createdAt: made, claimedUntil: until, expiresAt: expires, ...given } = record
    t.same(read, { ...given, secret: 's0' })
    // A store may put the record's beginning on its own clock (Redis's), its moments as far from it as they were.
    t.ok(createdAt >= made && createdAt <= after, 'begun when it was created')
    t.same([claimedUntil - createdAt, expiresAt - createdAt], [until - made, expires - made], 'its moments as far from its beginning')
    read!.state = 'away'
    t.equal((await store.read(record.id))!.state, 'claimed', 'a copy read out is not the record')
    t.equal(await store.read('f'.repeat(32)), null, 'no such record')
    await t.rejects(async () => { await store.create(newRecord({ id: record.id })) }, 'the id is taken')
  })

  t.test('a claim with the current secret takes the session: the fence goes up, the claimer holds it, the secret is new', async (t) => {
    const store = makeStore()
    const record = newRecord({ state: 'connected' })
    await store.create(record)
    const { createdAt } = (await store.read(record.id))!
    const before = await clock()
    const result = await store.claim(request(record, { received: 3, sent: 3 }))
    const after = await clock()
    t.ok(result.ok)
    if (!result.ok) return
    t.equal(result.previous, 'A')
    t.match(result.record, { id: record.id, fence: 2, instance: 'B', state: 'claimed', secret: 's1', heldSecret: 's0', route: record.route, url: record.url, owner: 'alice', createdAt })
    t.ok(result.record.claimedUntil >= before + CONFIRM_MS && result.record.claimedUntil <= after + CONFIRM_MS, 'awaits the client confirmMs')
    t.same(await store.read(record.id), result.record, 'as kept')
    result.record.fence = 99
    t.equal((await store.read(record.id))!.fence, 2, 'the result is a copy')
  })

  t.test('claims that do not fit are refused, each with its reason, and change nothing', async (t) => {
    const store = makeStore()
    const record = newRecord({ owner: null })
    await store.create(record)
    const kept = await store.read(record.id)
    const refusals: Array<[Partial<ClaimRequest>, string]> = [
      [{ id: 'e'.repeat(32) }, 'unknown'],
      [{ route: '/other' }, 'mismatch'],
      [{ url: '/rooms/b' }, 'mismatch'],
      [{ owner: 'bob' }, 'mismatch'],
      [{ secret: 's9' }, 'secret'],
      [{ secret: '' }, 'secret'],
      [{ received: 5, sent: 4 }, 'count']
    ]
    for (const [change, refusal] of refusals) {
      t.same(await store.claim(request(record, change)), { ok: false, refusal }, `${JSON.stringify(change)}: ${refusal}`)
    }
    t.same(await store.read(record.id), kept, 'the record is as it was')
    t.ok((await store.claim(request(record, { received: 4, sent: 4 }))).ok, 'a count of every message sent fits')
  })

  t.test('the held secret takes the session only once its claim stopped waiting: busy, with how long, until then', async (t) => {
    const store = makeStore()
    const first = await claimed(store)
    const early = await store.claim(request(first, { secret: 's0', newSecret: 's2' }))
    t.equal(early.ok, false)
    if (early.ok) return
    t.equal(early.refusal, 'busy')
    t.ok(early.retryMs! > 0 && early.retryMs! <= CONFIRM_MS, `retryMs ${early.retryMs} within the window`)
    t.same(await store.read(first.id), first, 'a busy claim changes nothing')
    t.match(await store.claim(request(first, { secret: 's0', newSecret: 's2', instance: 'C' })), { ok: false, refusal: 'busy' },
      'within it, on another instance too')
    await sleep(2 * CONFIRM_MS)
    t.match(await store.claim(request(first, { secret: 's0', newSecret: 's2' })), { ok: false, refusal: 'busy' },
      'past it, not on the claiming instance itself: its connection lives until it writes away')
    const late = await store.claim(request(first, { secret: 's0', newSecret: 's2', instance: 'C' }))
    t.match(late, { ok: true, previous: 'B', record: { fence: 3, instance: 'C', secret: 's2', heldSecret: 's0' } }, 'past it, the held secret claims on another instance')
  })

  t.test('once the client is heard, only the current secret claims; writes are fenced by the latest claim', async (t) => {
    const store = makeStore()
    const first = await claimed(store)
    t.equal(await store.write(first.id, 2, { heard: true }, TTL_MS), 'ok')
    t.match(await store.read(first.id), { state: 'connected', heldSecret: '' })
    t.same(await store.claim(request(first, { secret: 's0' })), { ok: false, refusal: 'secret' }, 'the held secret is forgotten')
    const second = await store.claim(request(first, { secret: 's1', newSecret: 's2', instance: 'C' }))
    t.match(second, { ok: true, previous: 'B', record: { fence: 3, instance: 'C' } }, 'the current one takes it over, connected as it is')
    for (const [what, write] of [
      ['write', () => store.write(first.id, 2, { away: true }, TTL_MS)],
      ['release', () => store.release(first.id, 2, TTL_MS)],
      ['end', () => store.end(first.id, 2)]
    ] as const) {
      t.equal(await write(), 'fenced', `${what} under the older claim`)
    }
    t.match(await store.read(first.id), { fence: 3, state: 'claimed', instance: 'C' }, 'untouched by them')
    t.equal(await store.end(first.id, 3), 'ok', 'the latest claim ends it')
    t.equal(await store.read(first.id), null)
    for (const [what, write] of [
      ['write', () => store.write(first.id, 3, { heard: true }, TTL_MS)],
      ['release', () => store.release(first.id, 3, TTL_MS)],
      ['end', () => store.end(first.id, 3)]
    ] as const) {
      t.equal(await write(), 'lost', `${what} without a record`)
    }
    t.same(await store.claim(request(first, { secret: 's2' })), { ok: false, refusal: 'unknown' })
  })

  t.test('away, a session expires ttlMs later: read gives null, a claim unknown', async (t) => {
    const store = makeStore()
    const first = await claimed(store)
    const before = await clock()
    t.equal(await store.write(first.id, 2, { away: true }, TTL_MS), 'ok')
    const after = await clock()
    const away = (await store.read(first.id))!
    t.match(away, { state: 'away', instance: 'B' })
    t.ok(away.expiresAt >= before + TTL_MS && away.expiresAt <= after + TTL_MS, 'ttlMs from the write')
    t.equal(await store.write(first.id, 2, { away: true }, 1), 'ok')
    await sleep(20)
    t.equal(await store.read(first.id), null)
    t.same(await store.claim(request(first, { secret: 's1' })), { ok: false, refusal: 'unknown' })
    t.equal(await store.end(first.id, 2), 'lost', 'the claim let it go')
  })

  t.test('held, a session lives ttlMs from its holder\'s last write: a claim and every write keep it; past that (its holder died), it is gone', async (t) => {
    const store = makeStore()
    const first = await claimed(store)
    for (const [what, write] of [
      ['a claim', async () => { await store.claim(request(first, { secret: 's1', newSecret: 's2', instance: 'C', ttlMs: 30_000 })) }],
      ['heard', async () => { await store.write(first.id, 3, { heard: true }, 40_000) }],
      ['no change', async () => { await store.write(first.id, 3, {}, 50_000) }]
    ] as const) {
      const before = await clock()
      await write()
      const after = await clock()
      const { expiresAt } = (await store.read(first.id))!
      const ttlMs = { 'a claim': 30_000, heard: 40_000, 'no change': 50_000 }[what]
      t.ok(expiresAt >= before + ttlMs && expiresAt <= after + ttlMs, `${what}: ttlMs from it`)
    }
    t.equal(await store.write(first.id, 3, {}, 1), 'ok')
    await sleep(20)
    t.equal(await store.read(first.id), null, 'not written for ttlMs: read gives null')
    t.same(await store.claim(request(first, { secret: 'wrong', sent: null, instance: 'D' })), { ok: false, refusal: 'secret' }, 'a wrong secret is refused as ever, and ends nothing')
    t.match(await store.claim(request(first, { secret: 's2', newSecret: 's3', sent: 0, instance: 'C' })), { ok: true, record: { fence: 4 } }, 'its holder, late but alive, claims it still')
    t.equal(await store.write(first.id, 4, {}, 1), 'ok')
    await sleep(20)
    t.same(await store.claim(request(first, { secret: 's3', sent: null, instance: 'D' })), { ok: false, refusal: 'unknown' }, 'another instance, with the secret: unknown, its holder taken for dead')
    t.equal(await store.write(first.id, 4, {}, TTL_MS), 'lost', 'and the record is gone')

    const away = await claimed(store)
    t.equal(await store.write(away.id, 2, { away: true }, 1000), 'ok')
    const { expiresAt } = (await store.read(away.id))!
    t.equal(await store.write(away.id, 2, {}, TTL_MS), 'ok')
    t.equal((await store.read(away.id))!.expiresAt, expiresAt, 'away, a write of no change keeps the moment it left by')
  })

  t.test('a claim released is held by nobody, away, and claimable with the secret the client resumed with', async (t) => {
    const store = makeStore()
    const first = await claimed(store)
    t.equal(await store.release(first.id, 2, TTL_MS), 'ok')
    t.match(await store.read(first.id), { state: 'away', instance: '', fence: 2, heldSecret: 's0' })
    t.match(await store.claim(request(first, { secret: 's0', newSecret: 's2' })), { ok: true, previous: '', record: { fence: 3, state: 'claimed', secret: 's2' } })
  })

  t.test('a release with a handover: a claim from an instance that does not hold the session takes it out, exactly as it was handed over', async (t) => {
    const store = makeStore()
    const first = await released(store, handover())
    const away = await store.read(first.id)
    t.strictSame(away, { ...first, instance: '', state: 'away', expiresAt: away!.expiresAt }, 'read gives the record alone')
    const result = await store.claim(request(first, { instance: 'C', secret: 's1', newSecret: 's2', received: 5, sent: null }))
    t.match(result, { ok: true, previous: '', record: { fence: 3, instance: 'C', state: 'claimed', secret: 's2', heldSecret: 's1' } })
    if (!result.ok) return
    t.strictSame(result.handover, { ...handover(), reserved: 9 }, 'its counts (reserved: received, when it says none), and its messages in order: text as strings, bytes as Buffers, the empty ones too')
    t.ok(Buffer.isBuffer(result.handover!.messages[1].data) && typeof result.handover!.messages[0].data === 'string')
    t.strictSame(await store.read(first.id), result.record, 'the record as claimed, and no more')
    const again = await store.claim(request(first, { instance: 'C', secret: 's2', newSecret: 's3', received: 5, sent: 7 }))
    t.match(again, { ok: true, handover: null, record: { fence: 4 } }, 'taken out: the next claim gets none')
    t.same(await store.claim(request(first, { instance: 'D', secret: 's3', newSecret: 's4', received: 5, sent: null })), { ok: false, refusal: 'held', holder: 'C', fence: 4, retryMs: ASK_MS },
      'nor may another instance claim it without one')
  })

  t.test('a handover of no messages: the client has every message it was sent', async (t) => {
    const store = makeStore()
    const first = await released(store, { received: 2, acknowledged: 4, messages: [], topics: [] })
    t.same(await store.claim(request(first, { secret: 's1', received: 5, sent: null })), { ok: false, refusal: 'count' }, 'one more than was sent')
    t.same(await store.claim(request(first, { secret: 's1', received: 3, sent: null })), { ok: false, refusal: 'count' }, 'one fewer than was acknowledged')
    t.match(await store.claim(request(first, { secret: 's1', received: 4, sent: null })), { ok: true, handover: { received: 2, acknowledged: 4, messages: [], topics: [] } })
  })

  t.test('an instance that does not hold the session claims only one handed over: held, and nothing changes', async (t) => {
    const store = makeStore()
    const first = await claimed(store)
    t.match(await store.claim(request(first, { instance: 'C', secret: 's0', sent: null })), { ok: false, refusal: 'busy' }, 'a busy claim is busy first')
    t.same(await store.claim(request(first, { instance: 'C', secret: 's1', sent: null })), { ok: false, refusal: 'held', holder: 'B', fence: 2, retryMs: ASK_MS }, 'held by another instance')
    t.same(await store.read(first.id), first, 'the record is as it was')
    t.same(await store.claim(request(first, { instance: 'C', secret: 's9', sent: null })), { ok: false, refusal: 'secret' }, 'a wrong secret is refused as such')
    t.same(await store.claim(request(first, { instance: 'C', url: '/rooms/b', sent: null })), { ok: false, refusal: 'mismatch' })
    t.same(await store.claim(request(first, { instance: 'C', id: 'd'.repeat(32), sent: null })), { ok: false, refusal: 'unknown' })
    t.equal(await store.release(first.id, 2, TTL_MS), 'ok')
    t.same(await store.claim(request(first, { instance: 'C', secret: 's1', sent: null })), { ok: false, refusal: 'held', holder: '', fence: 2 }, 'released with no handover: nobody to ask')
    t.match(await store.claim(request(first, { instance: 'B', secret: 's1', newSecret: 's2', received: 2, sent: 2 })), { ok: true, handover: null, record: { fence: 3 } },
      'the instance holding its messages still claims it')
  })

  t.test('asked for by an instance that does not hold it, the holder has askMs to hand the session over; after that, it cannot move', async (t) => {
    const store = makeStore()
    const first = await claimed(store)
    const asking = request(first, { instance: 'C', secret: 's1', sent: null })
    t.same(await store.claim(asking), { ok: false, refusal: 'held', holder: 'B', fence: 2, retryMs: ASK_MS }, 'the holder is to be asked, and the client to come back')
    const again = await store.claim({ ...asking, instance: 'D' })
    t.ok(!again.ok && again.refusal === 'held' && again.holder === 'B' && again.retryMs! > 0 && again.retryMs! <= ASK_MS, 'asked once: the time left')
    t.same(await store.claim({ ...asking, instance: 'B' }), { ok: false, refusal: 'held', holder: 'B', fence: 2 }, 'the holder itself is not told to ask itself')
    t.same(await store.claim({ ...asking, secret: 's9' }), { ok: false, refusal: 'secret' }, 'the secret is judged first')
    t.same(await store.read(first.id), first, 'the record is as it was')
    await sleep(ASK_MS + 20)
    t.same(await store.claim(asking), { ok: false, refusal: 'held', holder: 'B', fence: 2 }, 'past askMs: not handed over, the session cannot move')
    t.equal(await store.release(first.id, 2, TTL_MS, handover()), 'ok', 'handed over late')
    t.match(await store.claim({ ...asking, received: 5 }), { ok: true, record: { fence: 3, instance: 'C' }, handover: { acknowledged: 3 } }, 'what was handed over is claimed all the same')
  })

  t.test('a claim that wins ends the asking: the next holder has askMs of its own', async (t) => {
    const store = makeStore()
    const first = await claimed(store)
    t.match(await store.claim(request(first, { instance: 'C', secret: 's1', sent: null })), { refusal: 'held', retryMs: ASK_MS })
    t.match(await store.claim(request(first, { secret: 's1', newSecret: 's2' })), { ok: true, record: { fence: 3, instance: 'B' } }, 'the holder claims it again')
    t.same(await store.claim(request(first, { instance: 'C', secret: 's2', sent: null })), { ok: false, refusal: 'held', holder: 'B', fence: 3, retryMs: ASK_MS }, 'asked anew')
    t.equal(await store.release(first.id, 3, TTL_MS, handover()), 'ok')
    t.match(await store.claim(request(first, { instance: 'C', secret: 's2', newSecret: 's3', received: 5, sent: null })), { ok: true, record: { fence: 4, instance: 'C' } })
    t.same(await store.claim(request(first, { instance: 'D', secret: 's3', sent: null })), { ok: false, refusal: 'held', holder: 'C', fence: 4, retryMs: ASK_MS }, 'the new holder is asked in its turn')
  })

  t.test('ask reaches the instance listening under that name, once, with the id and the fence; stopped, it hears no more', async (t) => {
    const store = makeStore()
    const heard: Array<[string, string, number]> = []
    const stopB = await store.listen!('B', { asked: (id, fence) => heard.push(['B', id, fence]), posted: unexpected(t) })
    const stopC = await store.listen!('C', { asked: (id, fence) => heard.push(['C', id, fence]), posted: unexpected(t) })
    t.not(await store.ask!('B', 'a'.repeat(32), 7), false, 'heard: never false')
    await waitFor(() => heard.length > 0, 3000, 'the ask')
    await store.ask!('D', 'c'.repeat(32), 1)
    await stopB()
    await store.ask!('B', 'a'.repeat(32), 8)
    await store.ask!('C', 'b'.repeat(32), 12345678901)
    await waitFor(() => heard.length > 1, 3000, 'the ask of C')
    await sleep(50)
    t.same(heard, [['B', 'a'.repeat(32), 7], ['C', 'b'.repeat(32), 12345678901]], 'each to its instance alone; none to nobody, nor to one stopped')
    await stopC()
  })

  t.test('a count against the handover: more than was handed over, or fewer than was acknowledged, is refused and leaves it', async (t) => {
    const store = makeStore()
    const first = await released(store, handover())
    for (const received of [8, 2, 0]) {
      t.same(await store.claim(request(first, { secret: 's1', received, sent: null })), { ok: false, refusal: 'count' }, `received ${received}`)
    }
    t.same(await store.claim(request(first, { secret: 's9', received: 8, sent: null })), { ok: false, refusal: 'secret' }, 'the secret is judged first')
    t.match(await store.claim(request(first, { secret: 's1', received: 7, sent: null })), { ok: true, handover: { acknowledged: 3 } }, 'every message handed over fits')
  })

  t.test('a claim that names its own count (the instance holding the messages) is judged by it, and takes the handover out too', async (t) => {
    const store = makeStore()
    for (const received of [8, 1]) {
      const first = await released(store, handover())
      t.match(await store.claim(request(first, { received, sent: 9 })), { ok: true, handover: { received: 9, acknowledged: 3 } },
        `received ${received} of the 9 it counts, 7 handed over and 3 acknowledged`)
    }
  })

  t.test('a release replaces the handover kept: without one, none is kept', async (t) => {
    const store = makeStore()
    const first = await released(store, handover())
    t.equal(await store.release(first.id, 2, TTL_MS, { received: 1, acknowledged: 7, messages: [{ data: 'next', binary: false }], topics: [] }), 'ok')
    t.match(await store.claim(request(first, { instance: 'C', secret: 's1', newSecret: 's2', received: 8, sent: null })),
      { ok: true, handover: { received: 1, acknowledged: 7, messages: [{ data: 'next', binary: false }], topics: [] } }, 'the later one')
    t.equal(await store.release(first.id, 3, TTL_MS, handover()), 'ok')
    t.equal(await store.release(first.id, 3, TTL_MS), 'ok')
    t.same(await store.claim(request(first, { instance: 'D', secret: 's2', received: 5, sent: null })), { ok: false, refusal: 'held', holder: '', fence: 3 }, 'dropped')
  })

  t.test('end, and a claim of a record expired, take the handover with the record', async (t) => {
    const store = makeStore()
    const ended = await released(store, handover())
    t.equal(await store.end(ended.id, 2), 'ok')
    const expired = await released(store, handover())
    t.equal(await store.release(expired.id, 2, 1, handover()), 'ok')
    await sleep(20)
    t.same(await store.claim(request(expired, { secret: 's1', received: 5, sent: null })), { ok: false, refusal: 'unknown' })
    for (const gone of [ended, expired]) {
      // A record of the same id begun anew (no instance does so): nothing handed over is left for it.
      await store.create(newRecord({ id: gone.id, state: 'away' }))
      t.match(await store.claim(request(gone, { secret: 's0', received: 5, sent: null })), { ok: false, refusal: 'held', holder: 'A' })
    }
  })

  t.test('the store keeps a copy of the handover: what the caller changes after the release changes nothing', async (t) => {
    const store = makeStore()
    const given = handover()
    const first = await released(store, given)
    given.acknowledged = 0
    given.messages[0].data = 'changed'
    given.messages.push({ data: 'more', binary: false })
    const result = await store.claim(request(first, { secret: 's1', received: 5, sent: null }))
    t.match(result, { ok: true })
    if (result.ok) t.strictSame(result.handover, { ...handover(), reserved: 9 })
  })

  t.test('post keeps messages for the holder, in order and exact, and tells it once; take, fenced, takes them out', async (t) => {
    const store = makeStore()
    const first = await claimed(store)
    const posted: string[] = []
    const stop = await store.listen!('B', { asked: unexpected(t), posted: (id) => posted.push(id) })
    t.equal(await store.post!('f'.repeat(32), { data: 'x', binary: false }, 10, 100), 'unknown', 'no such session')
    for (const message of handover().messages) t.same(await store.post!(first.id, message, 10, 100), { holder: 'B' })
    await waitFor(() => posted.length === 4, 3000, 'the notices')
    await sleep(50)
    t.same(posted, [first.id, first.id, first.id, first.id], 'one notice a message, to the holder')
    t.equal(await store.write(first.id, 2, {}, TTL_MS), 'posted', 'a write says messages wait')
    t.equal(await store.take!(first.id, 1), 'fenced', 'an older claim takes nothing')
    t.equal(await store.take!('f'.repeat(32), 1), 'lost')
    t.strictSame(await store.take!(first.id, 2), handover().messages, 'taken: text and bytes as posted, in order')
    t.strictSame(await store.take!(first.id, 2), [], 'once')
    t.equal(await store.write(first.id, 2, {}, TTL_MS), 'ok', 'none wait')
    await stop()
  })

  t.test('post refuses what would take the messages waiting past maxMessages or maxBytes; a take makes room', async (t) => {
    const store = makeStore()
    const first = await claimed(store)
    t.same(await store.post!(first.id, { data: 'ab', binary: false }, 2, 5), { holder: 'B' })
    t.equal(await store.post!(first.id, { data: 'abcd', binary: false }, 2, 5), 'full', 'bytes')
    t.same(await store.post!(first.id, { data: Buffer.from('é'), binary: true }, 2, 5), { holder: 'B' }, 'bytes, not characters')
    t.equal(await store.post!(first.id, { data: '', binary: false }, 2, Infinity), 'full', 'messages')
    t.equal((await store.take!(first.id, 2) as unknown[]).length, 2)
    t.same(await store.post!(first.id, { data: 'abcd', binary: false }, 1, 4), { holder: 'B' }, 'room again')
    for (let i = 0; i < 3; i++) t.same(await store.post!(first.id, { data: 'abcd', binary: false }, Infinity, Infinity), { holder: 'B' }, 'no bound')
  })

  t.test('messages posted to a session handed over wait for the claim that takes the handover: after its messages', async (t) => {
    const store = makeStore()
    const first = await claimed(store)
    t.same(await store.post!(first.id, { data: 'before', binary: false }, 10, 100), { holder: 'B' })
    t.equal(await store.release(first.id, 2, TTL_MS, handover()), 'ok')
    t.same(await store.post!(first.id, { data: 'after', binary: false }, 10, 100), { holder: '' }, 'held by nobody')
    t.equal(await store.take!(first.id, 2), 'fenced', 'released: its claim takes nothing more')
    const result = await store.claim(request(first, { instance: 'C', secret: 's1', newSecret: 's2', received: 5, sent: null }))
    t.match(result, { ok: true })
    if (result.ok) t.strictSame(result.handover!.messages, [...handover().messages, { data: 'before', binary: false }, { data: 'after', binary: false }])
    t.same(await store.post!(first.id, { data: 'a', binary: false }, 1, 1), { holder: 'C' }, 'taken with it: room again')
    t.strictSame(await store.take!(first.id, 3), [{ data: 'a', binary: false }], 'only what came after')
  })

  t.test('a claim without a handover leaves the messages posted; end and expiry take them with the record', async (t) => {
    const store = makeStore()
    const first = await claimed(store)
    t.same(await store.post!(first.id, { data: 'kept', binary: false }, 10, 100), { holder: 'B' })
    t.match(await store.claim(request(first, { secret: 's1', newSecret: 's2' })), { ok: true, handover: null })
    t.strictSame(await store.take!(first.id, 3), [{ data: 'kept', binary: false }], 'the holder resumed here takes them')
    t.same(await store.post!(first.id, { data: 'ended', binary: false }, 10, 100), { holder: 'B' })
    t.equal(await store.end(first.id, 3), 'ok')
    t.equal(await store.post!(first.id, { data: 'late', binary: false }, 10, 100), 'unknown', 'ended: nobody to post to')
    await store.create(newRecord({ id: first.id }))
    t.strictSame(await store.take!(first.id, 1), [], 'a record begun anew under the id has nothing posted')
    const expiring = await released(store)
    t.same(await store.post!(expiring.id, { data: 'x', binary: false }, 10, 100), { holder: '' })
    t.equal(await store.release(expiring.id, 2, 1), 'ok')
    await sleep(20)
    t.equal(await store.post!(expiring.id, { data: 'x', binary: false }, 10, 100), 'unknown', 'expired')
  })

  t.test('keep: the holder\'s copy for its next holder; a durable claim takes it from a dead holder only, and keeps it as the claimer\'s', async (t) => {
    const store = makeStore()
    const first = await claimed(store)
    const kept: SessionHandover = { ...handover(), reserved: 20 }
    t.equal(await store.keep!(first.id, 1, TTL_MS, kept), 'fenced', 'an older claim keeps nothing')
    t.equal(await store.keep!('f'.repeat(32), 1, TTL_MS, kept), 'lost')
    t.equal(await store.keep!(first.id, 2, TTL_MS, kept), 'ok')
    const durable: Partial<ClaimRequest> = { instance: 'C', secret: 's1', newSecret: 's2', received: 5, sent: null, durable: true }
    t.same(await store.claim(request(first, durable)), { ok: false, refusal: 'held', holder: 'B', fence: 2, retryMs: ASK_MS }, 'its holder alive: asked, as ever')
    t.match(await store.claim(request(first, { ...durable, dead: 'X' })), { ok: false, refusal: 'held' }, 'another instance dead: nothing moves')
    t.match(await store.claim(request(first, { ...durable, durable: false, dead: 'B' })), { ok: false, refusal: 'held' }, 'a claim that is not durable takes no copy')
    t.same(await store.claim(request(first, { ...durable, received: 2, dead: 'B' })), { ok: false, refusal: 'count' }, 'judged as a handover: fewer than acknowledged')
    const result = await store.claim(request(first, { ...durable, dead: 'B' }))
    t.match(result, { ok: true, previous: 'B', record: { fence: 3, instance: 'C' } })
    if (result.ok) t.strictSame(result.handover, kept, 'the copy, reserved count included')
    t.equal(await store.keep!(first.id, 2, TTL_MS, kept), 'fenced', 'the dead holder\'s late keep is refused')
    t.equal(await store.write(first.id, 2, {}, TTL_MS), 'fenced', 'and its writes')
    const again = await store.claim(request(first, { ...durable, instance: 'D', secret: 's2', newSecret: 's3', dead: 'C' }))
    t.match(again, { ok: true, previous: 'C' }, 'the claimer died before it kept its own: the next claim takes the same')
    if (again.ok) t.strictSame(again.handover, kept)
    t.equal(await store.keep!(first.id, 4, TTL_MS, { ...kept, messages: [], acknowledged: 7, reserved: 9 }), 'ok')
    const last = await store.claim(request(first, { ...durable, instance: 'E', secret: 's3', newSecret: 's4', received: 7, dead: 'D' }))
    if (last.ok) t.strictSame(last.handover, { ...kept, messages: [], acknowledged: 7, reserved: 9 }, 'the latest copy replaces the one before')
    else t.fail(`refused: ${last.refusal}`)
  })

  t.test('a durable claim takes the copy kept by a holder that has not written the record for its time; any other claim finds nothing', async (t) => {
    const store = makeStore()
    for (const durable of [true, false]) {
      const record = newRecord()
      await store.create(record)
      t.match(await store.claim(request(record, { ttlMs: 40 })), { ok: true })
      t.equal(await store.keep!(record.id, 2, 40, { ...handover(), reserved: 9 }), 'ok')
      await sleep(100)
      const result = await store.claim(request(record, { instance: 'C', secret: 's1', newSecret: 's2', received: 3, sent: null, durable }))
      if (durable) t.match(result, { ok: true, previous: 'B', handover: { acknowledged: 3, reserved: 9 } }, 'durable: taken over')
      else t.same(result, { ok: false, refusal: 'unknown' }, 'not durable: gone')
    }
  })

  t.test('a take joins the posts to the copy kept, so a durable claim after a crash has them; those left wait for it too', async (t) => {
    const store = makeStore()
    const first = await claimed(store)
    const posts = ['p1', 'p2', 'p3'].map((data) => ({ data, binary: false }))
    t.equal(await store.keep!(first.id, 2, TTL_MS, { received: 0, acknowledged: 0, messages: [{ data: 'k', binary: false }], topics: [] }), 'ok')
    for (const message of posts.slice(0, 2)) t.same(await store.post!(first.id, message, 10, 100), { holder: 'B' })
    t.strictSame(await store.take!(first.id, 2), posts.slice(0, 2), 'taken out')
    t.same(await store.post!(first.id, posts[2], 1, 2), { holder: 'B' }, 'their bytes left the bound')
    const durable: Partial<ClaimRequest> = { instance: 'C', secret: 's1', newSecret: 's2', received: 0, sent: null, durable: true, dead: 'B' }
    const result = await store.claim(request(first, durable))
    const all = [{ data: 'k', binary: false }, ...posts]
    if (result.ok) t.strictSame(result.handover!.messages, all, 'the copy, the posts it took, then those waiting')
    else t.fail(`refused: ${result.refusal}`)
    t.strictSame(await store.take!(first.id, 3), [], 'the posts joined the copy')
    const again = await store.claim(request(first, { ...durable, instance: 'D', secret: 's2', newSecret: 's3', dead: 'C' }))
    if (again.ok) t.strictSame(again.handover!.messages, all, 'kept with it')
    else t.fail(`refused: ${again.refusal}`)
    const plain = await claimed(store)
    t.same(await store.post!(plain.id, posts[0], 10, 100), { holder: 'B' })
    t.strictSame(await store.take!(plain.id, 2), posts.slice(0, 1))
    t.match(await store.claim(request(plain, { ...durable, received: 0 })), { ok: false, refusal: 'held' }, 'no copy kept: a take keeps nothing')
  })

  t.test('keep with since: the copy is exactly what was kept, whether the store writes only what follows since or all of it', async (t) => {
    const store = makeStore()
    const first = await claimed(store)
    const text = (...data: string[]): SessionMessage[] => data.map((data) => ({ data, binary: false }))
    const copy = (acknowledged: number, messages: SessionMessage[]): SessionHandover => ({ received: 4, acknowledged, messages, topics: [], reserved: 8 })
    let holder = 'B'
    let fence = 2
    let secret = 's1'
    /** The copy as the next durable claim (of a client that has `received` messages) takes it; the claimer holds it then. */
    const taken = async (received: number): Promise<SessionHandover | null> => {
      const next = `C${fence}`
      const result = await store.claim(request(first, { instance: next, secret, newSecret: `${secret}+`, received, sent: null, durable: true, dead: holder }))
      if (!result.ok) return null
      holder = next
      fence++
      secret = `${secret}+`
      return result.handover
    }
    t.equal(await store.keep!(first.id, fence, TTL_MS, copy(0, text('a', 'b', 'c')), 0), 'ok', 'the first keep: nothing kept before')
    t.equal(await store.keep!(first.id, fence, TTL_MS, copy(1, text('b', 'c', 'd', 'e')), 3), 'ok', 'one acknowledged, two more')
    t.same(await store.post!(first.id, text('p')[0]!, 10, 100), { holder: 'B' })
    t.strictSame(await store.take!(first.id, fence), text('p'))
    // A message sent here went out before the one taken: the holder's order is the copy's.
    t.equal(await store.keep!(first.id, fence, TTL_MS, copy(2, text('c', 'd', 'e', 'x', 'p')), 5), 'ok')
    t.strictSame(await taken(2), copy(2, text('c', 'd', 'e', 'x', 'p')), 'the copy: none acknowledged, none twice, the holder\'s order')
    t.equal(await store.keep!(first.id, fence, TTL_MS, copy(7, []), 7), 'ok', 'all acknowledged')
    t.strictSame(await taken(7), copy(7, []))
    t.same(await store.post!(first.id, text('q')[0]!, 10, 100), { holder })
    t.strictSame(await store.take!(first.id, fence), text('q'))
    t.equal(await store.keep!(first.id, fence, TTL_MS, copy(7, text('q')), 7), 'ok', 'nothing kept after the acknowledged but what was taken')
    t.strictSame(await taken(7), copy(7, text('q')), 'the message taken, once')
    t.equal(await store.keep!(first.id, fence, TTL_MS, copy(8, []), 8), 'ok')
    t.equal(await store.keep!(first.id, fence, TTL_MS, copy(8, text('y', 'z')), 8), 'ok')
    // A since the copy does not reach (a holder's count the store never had): written whole all the same.
    t.equal(await store.keep!(first.id, fence, TTL_MS, copy(8, text('y', 'z', 'w', 'v')), 12), 'ok')
    t.strictSame(await taken(8), copy(8, text('y', 'z', 'w', 'v')), 'the copy given, whole')
    t.equal(await store.keep!(first.id, fence, TTL_MS, copy(10, text('w', 'v', 'u')), 9), 'ok', 'a since below the acknowledged')
    t.strictSame(await taken(10), copy(10, text('w', 'v', 'u')))
    // A keep the holder took for failed had landed: the copy holds more than since.
    const binary = { data: Buffer.from([0, 255, 1]), binary: true }
    t.equal(await store.keep!(first.id, fence, TTL_MS, copy(10, [...text('w', 'v', 'u', 't'), binary]), 13), 'ok')
    t.equal(await store.keep!(first.id, fence, TTL_MS, copy(11, [...text('v', 'u', 't'), binary, ...text('s')]), 13), 'ok', 'kept again from the since it knows')
    t.strictSame(await taken(11), copy(11, [...text('v', 'u', 't'), binary, ...text('s')]), 'nothing twice, the binary message byte for byte')
    // A keep older than the one the holder heard of landed after it, then posts were taken: since is past the copy.
    t.equal(await store.keep!(first.id, fence, TTL_MS, copy(11, [...text('v', 'u', 't'), binary, ...text('s', 'r')]), 16), 'ok')
    t.equal(await store.keep!(first.id, fence, TTL_MS, copy(11, text('v', 'u', 't'))), 'ok')
    for (const post of text('o', 'n', 'm')) t.same(await store.post!(first.id, post, 10, 100), { holder })
    // As many taken as the stale copy lacks: the list is as long as since asks, but not the holder's messages.
    t.strictSame(await store.take!(first.id, fence), text('o', 'n', 'm'))
    const after = copy(11, [...text('v', 'u', 't'), binary, ...text('s', 'r', 'o', 'n', 'm')])
    t.equal(await store.keep!(first.id, fence, TTL_MS, after, 17), 'ok')
    t.strictSame(await taken(11), after, 'written whole: the copy did not reach since')
    // An acknowledged count below the copy's (a holder's count the store never had): written whole too.
    t.equal(await store.keep!(first.id, fence, TTL_MS, copy(14, text('s', 'r', 'o', 'n', 'm')), 19), 'ok')
    t.equal(await store.keep!(first.id, fence, TTL_MS, copy(12, [...text('t'), binary, ...text('s', 'r', 'o', 'n', 'm')]), 19), 'ok')
    t.strictSame(await taken(12), copy(12, [...text('t'), binary, ...text('s', 'r', 'o', 'n', 'm')]))
  })

  t.test('a durable claim naming a count from an instance the record names no more is judged as one from elsewhere', async (t) => {
    const store = makeStore()
    const first = await claimed(store)
    t.equal(await store.keep!(first.id, 2, TTL_MS, { received: 3, acknowledged: 0, messages: [], topics: [], reserved: 5 }), 'ok')
    const taken = await store.claim(request(first, { instance: 'C', secret: 's1', newSecret: 's2', received: 0, sent: null, durable: true, dead: 'B' }))
    t.match(taken, { ok: true, previous: 'B' })
    // B lived on, and the client comes back to it with the secret of C's welcome: B's count is of a stale copy.
    t.same(await store.claim(request(first, { instance: 'B', secret: 's2', newSecret: 's3', received: 0, sent: 9, durable: true })), { ok: false, refusal: 'held', holder: 'C', fence: 3, retryMs: ASK_MS }, 'held by C: B is to ask for it')
  })

  t.test('a release replaces the copy kept: without a handover nothing is left to take; keep after it is refused', async (t) => {
    const store = makeStore()
    const first = await claimed(store)
    t.equal(await store.keep!(first.id, 2, TTL_MS, { ...handover(), reserved: 20 }), 'ok')
    t.equal(await store.release(first.id, 2, TTL_MS), 'ok')
    t.equal(await store.keep!(first.id, 2, TTL_MS, handover()), 'fenced', 'released: its claim keeps nothing more')
    t.match(await store.claim(request(first, { instance: 'C', secret: 's1', received: 5, sent: null, durable: true, dead: 'B' })), { ok: false, refusal: 'held', holder: '' })
    const second = await claimed(store)
    t.equal(await store.keep!(second.id, 2, TTL_MS, { ...handover(), reserved: 20 }), 'ok')
    t.equal(await store.release(second.id, 2, TTL_MS, { ...handover(), received: 12 }), 'ok')
    const result = await store.claim(request(second, { instance: 'C', secret: 's1', received: 5, sent: null, durable: true }))
    t.match(result, { ok: true, previous: '', handover: { received: 12, reserved: 12 } }, 'the handover, exact, not the copy')
  })
}

/** A notice no test expects. */
function unexpected (t: Test): () => void {
  return () => t.fail('an unexpected notice')
}
