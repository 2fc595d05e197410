// The session store's contract, held by the memory store and by a store answering the same with promises.
import t from 'tap'
import { MemorySessionStore } from '../../lib/sessions/session-store'
import { AsyncStore } from '../helpers/session-stores'
import { runStoreContract } from '../helpers/store-contract'

t.test('the memory store', async (t) => runStoreContract(t, () => new MemorySessionStore()))
t.test('a store answering with promises', async (t) => runStoreContract(t, () => new AsyncStore()))

t.test('the memory store answers at once: plain values, never promises', async (t) => {
  const store = new MemorySessionStore()
  const now = Date.now()
  const record = { id: '1'.padStart(32, '0'), route: '/s', url: '/s', owner: null, secret: 's0', heldSecret: '', fence: 1, instance: 'A', state: 'claimed' as const, claimedUntil: now, expiresAt: now + 10_000, createdAt: now }
  t.equal(store.create(record), undefined)
  const claim = store.claim({ id: record.id, instance: 'A', route: '/s', url: '/s', owner: null, secret: 's0', received: 0, sent: 0, newSecret: 's1', confirmMs: 10, askMs: 10, ttlMs: 10_000 })
  t.equal(claim.ok, true)
  t.equal(store.write(record.id, 2, { heard: true }, 10), 'ok')
  t.equal(store.release(record.id, 2, 10_000), 'ok')
  t.match(store.read(record.id), { state: 'away' })
  t.equal(store.end(record.id, 2), 'ok')
})

t.test('the memory store refuses an id taken by throwing, naming the id', async (t) => {
  const store = new MemorySessionStore()
  const now = Date.now()
  const record = { id: '2'.padStart(32, '0'), route: '/s', url: '/s', owner: null, secret: 's0', heldSecret: '', fence: 1, instance: 'A', state: 'claimed' as const, claimedUntil: now, expiresAt: now + 10_000, createdAt: now }
  store.create(record)
  t.throws(() => store.create({ ...record }), { message: `session ${record.id} exists already` })
})

t.test('the memory store knows who listens: an ask to nobody is false, and lost', async (t) => {
  const store = new MemorySessionStore()
  t.equal(store.ask('A', '1'.padStart(32, '0'), 1), false, 'nobody listens')
  let asked = 0
  const stop = store.listen('A', { asked: () => { asked++ }, posted: () => {} })
  t.equal(store.ask('A', '1'.padStart(32, '0'), 1), true)
  await new Promise((resolve) => setTimeout(resolve, 10))
  stop()
  t.equal(store.ask('A', '1'.padStart(32, '0'), 1), false, 'stopped')
  await new Promise((resolve) => setTimeout(resolve, 10))
  t.equal(asked, 1, 'only the one heard')
})
