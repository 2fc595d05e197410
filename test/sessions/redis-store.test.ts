// The session store in Redis: the one store contract on a redis-server and on a 3-master Cluster, claims racing,
// the records' time to live, and an application resuming a session whose record is in Redis.
import t from 'tap'
import type { Test } from 'tap'
import net from 'node:net'
import { Cluster, Redis as RedisClient } from 'ioredis'
import type { Redis } from 'ioredis'
import reliableWs = require('../../index')
import type fastifyReliableWs = require('../../types/index')
import { GRACE_MS, RedisSessionStore } from '../../lib/sessions/redis-session-store'
import { resumeToken } from '../../lib/protocol/protocol'
import { sleep, start, waitFor } from '../helpers/helpers'
import { needs, REDIS } from '../helpers/programs'
import { RedisServer, startCluster } from '../helpers/redis'
import { Peer } from '../helpers/session-peer'
import { runStoreContract } from '../helpers/store-contract'

type SessionRecord = fastifyReliableWs.SessionRecord
type ClaimRequest = fastifyReliableWs.ClaimRequest

/** Redis's clock, in ms: the one the store's scripts read. */
function redisClock (client: Redis | Cluster): () => Promise<number> {
  return async () => {
    const [seconds, micros] = await client.time()
    return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000)
  }
}

/** Until what Redis answers says so. */
async function untilRedis (what: string, condition: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 3000
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

let ids = 0

function record (overrides: Partial<SessionRecord> = {}): SessionRecord {
  const now = Date.now()
  return {
    id: `${(++ids).toString(16)}`.padStart(32, 'a'),
    route: '/s',
    url: '/s',
    owner: 'alice',
    secret: 's0',
    heldSecret: '',
    fence: 1,
    instance: 'A',
    state: 'claimed',
    claimedUntil: now + 5000,
    expiresAt: now + 60_000,
    createdAt: now,
    ...overrides
  }
}

function claimOf (kept: SessionRecord, overrides: Partial<ClaimRequest> = {}): ClaimRequest {
  return { id: kept.id, instance: 'B', route: kept.route, url: kept.url, owner: kept.owner, secret: kept.secret, received: 0, sent: 0, newSecret: 's1', confirmMs: 5000, askMs: 500, ttlMs: 60_000, ...overrides }
}

async function cluster (t: { teardown: (fn: () => unknown) => void }): Promise<Cluster> {
  const servers = await startCluster(t)
  const client = new Cluster(servers.map(({ port }) => ({ host: '127.0.0.1', port })))
  t.teardown(() => client.disconnect())
  return client
}

t.test('the store contract on a redis-server', needs(REDIS), async (t) => {
  const client = (await RedisServer.start(t)).client()
  runStoreContract(t, () => new RedisSessionStore(client), redisClock(client))
})

t.test('the store contract on a Redis Cluster of 3 masters', needs(REDIS), async (t) => {
  const client = await cluster(t)
  runStoreContract(t, () => new RedisSessionStore(client), redisClock(client))
})

t.test('100 claims of one session at once with its secret: exactly one wins, on one server and on a Cluster', needs(REDIS), async (t) => {
  for (const client of [(await RedisServer.start(t)).client(), await cluster(t)]) {
    const store = new RedisSessionStore(client)
    const kept = record()
    await store.create(kept)
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => store.claim(claimOf(kept, { instance: `I${i}`, newSecret: `n${i}` }))))
    const won = results.filter((result) => result.ok)
    t.equal(won.length, 1, 'one winner')
    t.same(results.filter((result) => !result.ok).map((result) => !result.ok && result.refusal), Array(99).fill('busy'), 'the others wait for it')
    t.match(await store.read(kept.id), { fence: 2, state: 'claimed', heldSecret: 's0' })
  }
})

t.test('time to live: expiresAt plus a grace, always; held, every write of its holder keeps it ttlMs more; away, it keeps the moment it left by', needs(REDIS), async (t) => {
  const server = await RedisServer.start(t)
  const client = server.client()
  const store = new RedisSessionStore(client)
  const clock = redisClock(client)
  const kept = record()
  const key = `reliable-ws:{s:${kept.id}}`
  const bounded = async (what: string, ttlMs: number): Promise<void> => {
    const { expiresAt } = (await store.read(kept.id))!
    // Redis's time before the key's: the time to live read after it can only be shorter.
    const now = await clock()
    const ttl = await client.pttl(key)
    t.ok(ttl > 0 && ttl <= expiresAt + GRACE_MS - now + 1 && ttl >= expiresAt + GRACE_MS - now - 1000, `${what}: ${ttl} ms, expiresAt + grace`)
    t.ok(expiresAt <= now + ttlMs && expiresAt >= now + ttlMs - 1000, `${what}: expiresAt ${ttlMs} ms on`)
  }
  await store.create(kept)
  await bounded('created', 60_000)
  t.ok((await store.claim(claimOf(kept, { ttlMs: 40_000 }))).ok)
  await bounded('claimed, for the claim\'s ttlMs', 40_000)
  t.equal(await store.write(kept.id, 2, { heard: true }, 50_000), 'ok')
  await bounded('connected', 50_000)
  t.equal(await store.write(kept.id, 2, {}, 45_000), 'ok')
  await bounded('no change, held: kept for the write\'s ttlMs', 45_000)

  t.equal(await store.write(kept.id, 2, { away: true }, 35_000), 'ok')
  await bounded('away', 35_000)
  t.equal(await store.write(kept.id, 2, {}, 60_000), 'ok')
  await bounded('no change, away: as it was', 35_000)
  t.equal(await store.write(kept.id, 2, { heard: true }, 60_000), 'ok')
  await bounded('heard again', 60_000)
  t.equal(await store.release(kept.id, 2, 30_000), 'ok')
  await bounded('released', 30_000)
  t.match(await store.claim(claimOf(kept, { secret: 's1', newSecret: 's2', instance: 'C' })), { ok: true }, 'claimed again')
  await bounded('held again', 60_000)

  // Held by an instance that has not written it for ttlMs: it died, and the record goes with it.
  const orphan = record({ state: 'connected', expiresAt: Date.now() + 60_000 })
  await store.create(orphan)
  t.equal(await store.write(orphan.id, 1, {}, 1), 'ok')
  await sleep(20)
  t.equal(await store.read(orphan.id), null, 'past expiresAt, held: read gives nothing')
  t.same(await store.claim(claimOf(orphan)), { ok: false, refusal: 'unknown' }, 'a claim finds nothing')
  t.equal(await client.exists(`reliable-ws:{s:${orphan.id}}`), 0, 'and deletes it, before the grace would')
})

t.test('the messages handed over: a list beside the hash, kept as long, gone with it', needs(REDIS), async (t) => {
  const server = await RedisServer.start(t)
  const client = server.client()
  const store = new RedisSessionStore(client)
  const clock = redisClock(client)
  const handover = { received: 4, acknowledged: 2, messages: [{ data: 'one', binary: false }, { data: Buffer.from([0xff]), binary: true }], topics: [{ topic: 'news', epoch: 'e1', offset: 7 }] }
  const kept = record()
  const key = `reliable-ws:{s:${kept.id}}`
  const list = `${key}:m`
  await store.create(kept)
  t.ok((await store.claim(claimOf(kept))).ok)

  /** Both keys expire expiresAt plus the grace from now. */
  const bothKept = async (what: string): Promise<void> => {
    const { expiresAt } = (await store.read(kept.id))!
    const now = await clock()
    for (const name of [key, list]) {
      const ttl = await client.pttl(name)
      // PTTL counts from the moment Redis took for its command, which may be a few ms behind TIME under load.
      t.ok(ttl > 0 && ttl <= expiresAt + GRACE_MS - now + 20 && ttl >= expiresAt + GRACE_MS - now - 1000, `${what}, ${name === key ? 'hash' : 'list'}: ${ttl} ms, expiresAt + grace`)
    }
  }
  t.equal(await store.release(kept.id, 2, 30_000, handover), 'ok')
  t.match(await client.hgetall(key), { hr: '4', ha: '2', ht: '[{"topic":"news","epoch":"e1","offset":7}]' }, 'its counts and topics in the hash')
  t.same(await client.lrangeBuffer(list, 0, -1), [Buffer.from('\x00one', 'latin1'), Buffer.from([1, 0xff])], 'a byte saying text or binary, then the bytes')
  await bothKept('released')
  t.equal(await store.write(kept.id, 2, { heard: true }, 30_000), 'ok')
  await bothKept('held again by its fence')
  t.equal(await store.write(kept.id, 2, { away: true }, 30_000), 'ok')
  await bothKept('away')
  t.match(await store.claim(claimOf(kept, { secret: 's1', newSecret: 's2', instance: 'C', received: 3, sent: null })), { ok: true, handover })
  t.equal(await client.exists(list), 0, 'claimed: the list taken out')
  t.equal(await client.hexists(key, 'ha') + await client.hexists(key, 'hr') + await client.hexists(key, 'ht') + await client.hexists(key, 'hn'), 0, 'and its counts and topics')
  t.ok(await client.pttl(key) > 0, 'the record kept')
  // A holder's copy without messages: the take that joins posts to it makes the list, which goes with the record too.
  t.equal(await store.keep(kept.id, 3, 30_000, { ...handover, messages: [] }), 'ok')
  t.equal(await client.exists(list), 0, 'no messages kept, no list')
  t.same(await store.post(kept.id, { data: 'p', binary: false }, 10, 100), { holder: 'C' })
  t.strictSame(await store.take(kept.id, 3), [{ data: 'p', binary: false }])
  await bothKept('a take made the list')

  t.equal(await store.release(kept.id, 3, 30_000, handover), 'ok')
  t.equal(await store.release(kept.id, 3, 30_000), 'ok')
  t.same(await client.keys('*'), [key], 'released again without one: the list is dropped')
  t.equal(await store.release(kept.id, 3, 30_000, handover), 'ok')
  t.equal(await store.end(kept.id, 3), 'ok')
  t.same(await client.keys('*'), [], 'ended: no key left')

  const expired = record()
  await store.create(expired)
  t.ok((await store.claim(claimOf(expired))).ok)
  t.equal(await store.release(expired.id, 2, 1, handover), 'ok')
  await sleep(20)
  t.equal(await client.exists(`reliable-ws:{s:${expired.id}}:m`), 1, 'past expiresAt, within the grace')
  t.same(await store.claim(claimOf(expired, { secret: 's1', received: 3, sent: null })), { ok: false, refusal: 'unknown' })
  t.same(await client.keys('*'), [], 'a claim of it expired deletes both')
})

t.test('a handover kept without topics (`ht`, as a version that handed over only sessions without any wrote it) is claimed with none', needs(REDIS), async (t) => {
  const server = await RedisServer.start(t)
  const client = server.client()
  const store = new RedisSessionStore(client)
  const kept = record()
  await store.create(kept)
  t.ok((await store.claim(claimOf(kept))).ok)
  t.equal(await store.release(kept.id, 2, 60_000, { received: 1, acknowledged: 0, messages: [{ data: 'one', binary: false }], topics: [{ topic: 'news', epoch: 'e', offset: 3 }] }), 'ok')
  await client.hdel(`reliable-ws:{s:${kept.id}}`, 'ht')
  t.match(await store.claim(claimOf(kept, { secret: 's1', instance: 'C', received: 1, sent: null })),
    { ok: true, handover: { received: 1, acknowledged: 0, messages: [{ data: 'one', binary: false }], topics: [] } })
})

t.test('a handover of 200,000 messages (more than Lua unpacks, or a call takes spread, at once); a client with keyPrefix and stringNumbers', needs(REDIS), async (t) => {
  const server = await RedisServer.start(t)
  const store = new RedisSessionStore(server.client())
  const messages = Array.from({ length: 200_000 }, (_, i) => ({ data: String(i), binary: false }))
  const kept = record()
  await store.create(kept)
  t.equal(await store.release(kept.id, 1, 60_000, { received: 0, acknowledged: 0, messages, topics: [] }), 'ok')
  const result = await store.claim(claimOf(kept, { received: 200_000, sent: null }))
  t.ok(result.ok && result.handover!.messages.length === 200_000 && result.handover!.messages.every(({ data }, i) => data === String(i)), 'every one, in order')

  const other = new RedisClient(server.port, '127.0.0.1', { keyPrefix: 'tenant:', stringNumbers: true })
  t.teardown(() => other.disconnect())
  const prefixed = new RedisSessionStore(other)
  const second = record()
  await prefixed.create(second)
  t.equal(await prefixed.release(second.id, 1, 60_000, { received: 5, acknowledged: 1, messages: [{ data: 'x', binary: false }], topics: [] }), 'ok')
  t.ok(await server.client().exists(`tenant:reliable-ws:{s:${second.id}}:m`), 'the list under the client\'s keyPrefix')
  t.strictSame(await prefixed.claim(claimOf(second, { received: 2, sent: null })).then((claim) => claim.ok && claim.handover),
    { received: 5, acknowledged: 1, messages: [{ data: 'x', binary: false }], topics: [], reserved: 5 }, 'numbers as numbers')
  t.same(await server.client().keys('tenant:*'), [`tenant:reliable-ws:{s:${second.id}}`])
})

t.test('a record names its route, URL and owner: a null owner is none of \'\', \'null\' or a name', needs(REDIS), async (t) => {
  const client = (await RedisServer.start(t)).client()
  const store = new RedisSessionStore(client)
  const nobody = record({ owner: null })
  const empty = record({ owner: '' })
  const named = record({ owner: 'null' })
  for (const kept of [nobody, empty, named]) await store.create(kept)
  t.equal((await store.read(nobody.id))!.owner, null)
  t.equal((await store.read(empty.id))!.owner, '')
  t.equal((await store.read(named.id))!.owner, 'null')
  for (const [kept, others] of [[nobody, ['', 'null']], [empty, [null, 'null']], [named, [null, '']]] as const) {
    for (const owner of others) t.same(await store.claim(claimOf(kept, { owner })), { ok: false, refusal: 'mismatch' }, `${JSON.stringify(kept.owner)} is not ${JSON.stringify(owner)}`)
  }
  t.same(await store.claim(claimOf(named, { route: '/t' })), { ok: false, refusal: 'mismatch' }, 'another route')
  t.match(await store.claim(claimOf(nobody)), { ok: true, record: { owner: null } }, 'null claims null')
  t.match(await store.claim(claimOf(empty, { instance: 'C' })), { ok: true, record: { owner: '' } })
})

t.test('the prefix: the topic broker\'s by default, checked as its keyPrefix; a client\'s own keyPrefix goes before it', needs(REDIS), async (t) => {
  const server = await RedisServer.start(t)
  const client = server.client()
  const kept = record()
  await new RedisSessionStore(client, { prefix: 'app1' }).create(kept)
  t.same(await client.keys('*'), [`app1:{s:${kept.id}}`])
  const prefixed = new RedisClient(server.port, '127.0.0.1', { keyPrefix: 'tenant:' })
  t.teardown(() => prefixed.disconnect())
  await new RedisSessionStore(prefixed).create(kept)
  t.match(await new RedisSessionStore(prefixed).read(kept.id), { id: kept.id })
  t.same((await client.keys('*')).sort(), [`app1:{s:${kept.id}}`, `tenant:reliable-ws:{s:${kept.id}}`])
  t.equal(await new RedisSessionStore(client).read(kept.id), null, 'another prefix, another record')
  t.throws(() => new RedisSessionStore(client, { prefix: 'a{b}' }), { code: 'FST_RELIABLE_WS_INVALID_OPTION' })
})

t.test('an application with sessionStore: new RedisSessionStore(client): a client drops and resumes, gets what it missed; the record is handed over as the instance closes', needs(REDIS), async (t) => {
  const client = (await RedisServer.start(t)).client()
  t.equal(reliableWs.RedisSessionStore, RedisSessionStore, 'exported by the package')
  const received: string[] = []
  const { app, url } = await start({ heartbeat: false, logging: { connections: false }, sessionStore: new reliableWs.RedisSessionStore(client) }, (app) => {
    app.get('/s', { websocket: true, config: { reliable: { resume: { ttlMs: 60_000 } } } }, (socket) => {
      socket.on('message', (data: Buffer) => received.push(data.toString()))
    })
  })
  t.teardown(() => app.close())
  const first = new Peer(url('/s'))
  const welcome = await first.welcome()
  const key = `reliable-ws:{s:${welcome.session}}`
  t.match(await client.hgetall(key), { id: welcome.session, st: 'claimed', f: '1' }, 'its record in Redis')
  first.ws.send('hello')
  await waitFor(() => received.length === 1, 3000, 'the first message')
  await untilRedis('heard', async () => (await client.hget(key, 'st')) === 'connected')
  first.ws.terminate()
  await waitFor(() => app.wsSessions.get(welcome.session)?.connected === false, 3000, 'away')
  await untilRedis('away in Redis', async () => (await client.hget(key, 'st')) === 'away')
  const session = app.wsSessions.get(welcome.session)!
  session.send('one')
  session.send('two')

  const back = new Peer(url('/s'), resumeToken(welcome.session, welcome.token, 0))
  t.match(await back.welcome(), { session: welcome.session, resumed: true })
  await waitFor(() => back.data().length === 2, 3000, 'the replay')
  t.same(back.data(), ['one', 'two'], 'what it had not acknowledged, in order')
  t.match(await client.hgetall(key), { f: '2', a: /\w/ }, 'claimed once more')
  t.match(app.wsStats.sessions, { resumed: 1, resumeRefused: 0, storeUnavailable: 0 })
  back.ws.close()
  await back.closed
  await app.close()
  // The store outlives the instance: the session is handed over, held by nobody, for its client to resume anywhere.
  t.match(await client.hgetall(key), { st: 'away', a: '', f: '2' })
  t.ok(await client.pttl(key) > 0, 'and kept for the session\'s time to live, not for ever')
  t.match(app.wsStats.sessions, { handedOver: 1, active: 0 })
})

/**
 * An instance with `options` whose Redis then stops: a client beginning a session is told to retry and closed with
 * 1013 within `withinMs`, counted.
 */
async function refusedWhileDown (t: Test, server: RedisServer, options: fastifyReliableWs.FastifyReliableWsOptions, withinMs: number): Promise<void> {
  const { app, url } = await start({ heartbeat: false, logging: { connections: false }, ...options }, (app) => {
    app.get('/s', { websocket: true, config: { reliable: { resume: { ttlMs: 60_000 } } } }, () => {})
  })
  t.teardown(() => app.close())
  await server.stop()
  const began = Date.now()
  const peer = new Peer(url('/s'))
  t.match(await peer.closed, { code: 1013, reason: 'Session store unavailable' })
  t.ok(Date.now() - began < withinMs, `closed after ${Date.now() - began} ms`)
  t.match(peer.frames, [{ t: 'retry' }])
  t.match(app.wsStats.sessions, { storeUnavailable: 1, active: 0 })
}

t.test('Redis down: a client beginning a session is told to retry and closed with 1013 within the client\'s commandTimeout', needs(REDIS), async (t) => {
  const server = await RedisServer.start(t)
  const client = new RedisClient(server.port, '127.0.0.1', { commandTimeout: 300 })
  client.on('error', () => {})
  t.teardown(() => client.disconnect())
  await client.ping()
  await refusedWhileDown(t, server, { sessionStore: new RedisSessionStore(client) }, 3000)
})

t.test('Redis down, sessions kept there by the redis option: a client beginning a session is told to retry at once, not held in a queue', needs(REDIS), async (t) => {
  const server = await RedisServer.start(t)
  // Its command timeout (2 s) never comes into it: without an offline queue, a command Redis cannot take fails now.
  await refusedWhileDown(t, server, { redis: server.url }, 1000)
})

t.test("an instance whose clock is behind Redis's, or a fractional ttlMs, changes no moment: they are Redis's, in whole ms", needs(REDIS), async (t) => {
  const server = await RedisServer.start(t)
  const client = server.client()
  const store = new RedisSessionStore(client)
  const clock = redisClock(client)
  // 10 s behind: by its clock the record would be past its expiresAt already.
  const behind = Date.now() - 10_000
  const kept = record({ createdAt: behind, claimedUntil: behind + 5000, expiresAt: behind + 3000.5 })
  const before = await clock()
  await store.create(kept)
  const after = await clock()
  const read = (await store.read(kept.id))!
  t.ok(read.createdAt >= before && read.createdAt <= after, 'begun by Redis\'s clock')
  t.same([read.claimedUntil - read.createdAt, read.expiresAt - read.createdAt], [5000, 3001], 'as far from it, in whole ms')
  const ttl = await client.pttl(`reliable-ws:{s:${kept.id}}`)
  t.ok(ttl > 3001 + GRACE_MS - 1000 && ttl <= 3001 + GRACE_MS, `kept expiresAt plus the grace (${ttl} ms)`)
  t.match(await store.claim(claimOf(kept)), { ok: true }, 'and claimed')
})

t.test("a fractional ttlMs is taken up to a whole millisecond; a client's stringNumbers changes no answer", needs(REDIS), async (t) => {
  const server = await RedisServer.start(t)
  const plain = new RedisSessionStore(server.client())
  const kept = record()
  await plain.create(kept)
  t.equal(await plain.write(kept.id, 1, { away: true }, 1000.5), 'ok')
  t.equal(await plain.release(kept.id, 1, 1000.5), 'ok')
  t.ok(await server.client().pttl(`reliable-ws:{s:${kept.id}}`) > 0, 'kept for a while, not for ever')

  const strings = new RedisClient(server.port, '127.0.0.1', { stringNumbers: true })
  t.teardown(() => strings.disconnect())
  const store = new RedisSessionStore(strings)
  const other = record()
  await store.create(other)
  await t.rejects(store.create(record({ id: other.id })), { message: `session ${other.id} exists already` })
  t.ok((await store.claim(claimOf(other))).ok)
  const busy = await store.claim(claimOf(other, { instance: 'C', newSecret: 's2' }))
  t.match(busy, { ok: false, refusal: 'busy' })
  t.equal(typeof (busy as { retryMs: unknown }).retryMs, 'number')
  t.same(await store.claim(claimOf(other, { instance: 'C', secret: 's1', sent: null })), { ok: false, refusal: 'held', holder: 'B', fence: 2, retryMs: 500 })
})

t.test('listen subscribes on a connection of its own, which what it resolves to closes, even with Redis stalled; with Redis out of reach, it rejects', needs(REDIS), async (t) => {
  const server = await RedisServer.start(t)
  const client = server.client()
  const store = new RedisSessionStore(client)
  const heard: string[] = []
  const stop = await store.listen('I1', { asked: (id, fence) => heard.push(`${fence} ${id}`), posted: (id) => heard.push(`+ ${id}`) })
  t.same(await client.pubsub('NUMSUB', 'reliable-ws:i:I1'), ['reliable-ws:i:I1', 1], 'subscribed once it resolves')
  await client.publish('reliable-ws:i:I1', 'nonsense')
  await client.publish('reliable-ws:i:I9', `+ ${'c'.repeat(32)}`)
  t.equal(await store.ask('I1', 'a'.repeat(32), 3), true, 'heard')
  t.equal(await store.ask('I9', 'a'.repeat(32), 3), false, 'nobody listens under that name')
  t.equal(await new RedisSessionStore(await cluster(t)).ask('I9', 'a'.repeat(32), 3), true, 'on a Cluster, PUBLISH cannot tell: never false')
  await client.publish('reliable-ws:i:I1', `+ ${'c'.repeat(32)}`)
  await waitFor(() => heard.length > 1, 3000, 'the ask and the post')
  t.same(heard, [`3 ${'a'.repeat(32)}`, `+ ${'c'.repeat(32)}`], 'a message that is no notice is ignored')
  await stop()
  t.same(await client.pubsub('NUMSUB', 'reliable-ws:i:I1'), ['reliable-ws:i:I1', 0], 'stopped: its connection closed')
  t.equal(client.status, 'ready', "the application's client is left as it was")

  // Redis stalled: its QUIT never answered, the connection is dropped within a second, so the instance still closes.
  const stalled = await store.listen('I4', { asked: () => {}, posted: () => {} })
  server.signal('SIGSTOP')
  const began = Date.now()
  await stalled()
  const took = Date.now() - began
  server.signal('SIGCONT')
  t.ok(took >= 900 && took < 2000, `stopped after ${took} ms, Redis stalled`)
  await untilRedis('the stalled connection gone', async () => (await client.pubsub('NUMSUB', 'reliable-ws:i:I4') as [string, number])[1] === 0)

  // A client that would not subscribe again: the store's own connection does, after Redis dropped it.
  const unsubscribing = new RedisClient(server.port, '127.0.0.1', { autoResubscribe: false })
  t.teardown(() => unsubscribing.disconnect())
  const again = await new RedisSessionStore(unsubscribing).listen('I3', { asked: (id, fence) => heard.push(`${fence} ${id}`), posted: () => {} })
  t.teardown(again)
  await client.call('CLIENT', 'KILL', 'TYPE', 'pubsub')
  await untilRedis('subscribed again', async () => (await client.pubsub('NUMSUB', 'reliable-ws:i:I3') as [string, number])[1] === 1)
  await store.ask('I3', 'b'.repeat(32), 4)
  await waitFor(() => heard.length > 2, 3000, 'the ask after the reconnection')
  t.same(heard.at(-1), `4 ${'b'.repeat(32)}`)

  const free = net.createServer()
  await new Promise<void>((resolve) => free.listen(0, '127.0.0.1', resolve))
  const port = (free.address() as net.AddressInfo).port
  await new Promise((resolve) => free.close(resolve))
  const away = new RedisClient(port, '127.0.0.1', { lazyConnect: true })
  t.teardown(() => away.disconnect())
  await t.rejects(new RedisSessionStore(away).listen('I2', { asked: () => {}, posted: () => {} }), { code: 'ECONNREFUSED' })
})
