// Attacks on sessions from a hostile client: resuming someone else's session, being refused yet served, holding
// sessions without end. Each test plays the attack with real sockets and checks that the owner keeps what is theirs.
import t from 'tap'
import { once } from 'node:events'
import WebSocket from 'ws'
import type { FastifyInstance } from 'fastify'
import { ReliableWebSocket } from '../../lib/client'
import { PROTOCOL, resumeToken } from '../../lib/protocol/protocol'
import { sleep, start, waitFor } from '../helpers/helpers'
import { Peer } from '../helpers/session-peer'
import type { Welcome } from '../helpers/session-peer'

type Teardown = { teardown: (fn: () => unknown) => void }

/**
 * Rooms at /rooms/:room, each open to the users listed for it (`x-user`, checked in a preHandler: 403 otherwise),
 * with sessions. `onConnect` refuses a request marked `x-refuse`, after `x-delay` ms when given.
 */
async function roomServer (t: Teardown, resume: object = {}, options: object = {}): Promise<{ app: FastifyInstance, url: (path: string) => string, received: string[] }> {
  const members: Record<string, string[]> = { a: ['alice'], b: ['alice', 'bob'] }
  const received: string[] = []
  const server = await start({
    heartbeat: false,
    async onConnect (_socket, request) {
      const delay = Number(request.headers['x-delay'] ?? 0)
      if (delay > 0) await sleep(delay)
      if (request.headers['x-refuse'] !== undefined) throw new Error('refused')
    },
    ...options
  }, (app) => {
    app.get('/rooms/:room', {
      websocket: true,
      config: { reliable: { resume: { ttlMs: 60_000, ...resume } } },
      preHandler: async (request, reply) => {
        const room = (request.params as { room: string }).room
        if (!(members[room] ?? []).includes(String(request.headers['x-user']))) return reply.code(403).send()
      }
    }, (socket) => {
      socket.on('message', (data: Buffer) => received.push(data.toString()))
    })
  })
  t.teardown(() => server.app.close())
  return { app: server.app, url: server.url, received }
}

/** Alice in room a, with one message sent while she has not acknowledged it (a resume would replay it). */
async function alice (app: FastifyInstance, url: (path: string) => string): Promise<{ peer: Peer, welcome: Welcome }> {
  const peer = new Peer(url('/rooms/a'), undefined, { 'x-user': 'alice' })
  const welcome = await peer.welcome()
  app.wsSessions.get(welcome.session)!.send('for alice only')
  await waitFor(() => peer.data().length === 1, 2000, "alice's message")
  return { peer, welcome }
}

t.test("a user refused a room cannot resume its member's session through another room's URL", async (t) => {
  const { app, url } = await roomServer(t)
  const owner = await alice(app, url)
  const token = resumeToken(owner.welcome.session, owner.welcome.token, 0)

  // Refused by the room's own hook: answered 403, nothing touched.
  const refused = new WebSocket(url('/rooms/a'), [PROTOCOL, token], { headers: { 'x-user': 'bob' } })
  const [, response] = await once(refused, 'unexpected-response')
  t.equal(response.statusCode, 403)
  // Let into room b, with room a's session token.
  const intruder = new Peer(url('/rooms/b'), token, { 'x-user': 'bob' })
  const got = await intruder.welcome()
  t.equal(got.resumed, false, 'a new session, not the owner\'s')
  t.not(got.session, owner.welcome.session)
  await sleep(50)
  t.same(intruder.data(), [], 'no message of the owner reached the intruder')

  const session = app.wsSessions.get(owner.welcome.session)!
  t.equal(session.connected, true, 'the owner is still connected')
  t.equal(owner.peer.ws.readyState, WebSocket.OPEN)
  t.ok(session.send('still hers'))
  await waitFor(() => owner.peer.data().length === 2, 2000, 'the next message')
  t.same(owner.peer.data(), ['for alice only', 'still hers'])
  t.match(app.wsStats.sessions, { active: 2, resumed: 0, resumeRefused: 1, replayed: 0 })
  intruder.ws.close()
  owner.peer.ws.close()
})

t.test('a client refused by onConnect gets no welcome, no replay, and leaves the session it named alone', async (t) => {
  const { app, url, received } = await roomServer(t)
  const owner = await alice(app, url)
  const token = resumeToken(owner.welcome.session, owner.welcome.token, 0)
  for (const delay of ['0', '30']) {
    const attacker = new Peer(url('/rooms/a'), token, { 'x-user': 'alice', 'x-refuse': '1', 'x-delay': delay })
    // Frames sent before the refusal must not count in anyone's session.
    attacker.ws.on('open', () => {
      for (let i = 0; i < 5; i++) attacker.ws.send(`forged ${i}`)
    })
    const { code } = await attacker.closed
    t.equal(code, 1008, `refused (onConnect after ${delay} ms)`)
    t.same(attacker.frames, [], 'nothing at all was sent to it: no welcome, no replay')
  }
  const session = app.wsSessions.get(owner.welcome.session)!
  t.equal(session.connected, true, 'the owner is still connected')
  t.equal(session.received, 0, "the forged messages are not counted in the owner's session")
  t.same(received, [], 'nor delivered')
  t.equal(session.unacknowledged, 1, 'nothing was acknowledged on her behalf')
  t.match(app.wsStats.sessions, { active: 1, resumed: 0, replayed: 0 })
  owner.peer.ws.send('hello')
  await waitFor(() => received.length === 1, 2000, 'her message')
  t.equal(session.received, 1)
  owner.peer.ws.close()
})

t.test('refused connections create no session: 200 refusals leave none behind, and the client never opens', async (t) => {
  const { app, url } = await roomServer(t)
  const refusals = Array.from({ length: 200 }, async () => {
    const peer = new Peer(url('/rooms/a'), undefined, { 'x-user': 'alice', 'x-refuse': '1' })
    const { code } = await peer.closed
    return { code, frames: peer.frames.length }
  })
  const results = await Promise.all(refusals)
  t.ok(results.every((result) => result.code === 1008 && result.frames === 0), 'each refused with 1008, before any frame')
  t.equal(app.wsStats.sessions.active, 0)

  const client = new ReliableWebSocket(url('/rooms/a'), {
    WebSocket: class extends WebSocket {
      constructor (address: string, protocols: string[]) { super(address, protocols, { headers: { 'x-user': 'alice', 'x-refuse': '1' } }) }
    } as any,
    backoff: { initialDelayMs: 5, maxDelayMs: 5 }
  })
  const events: string[] = []
  client.addEventListener('open', () => events.push('open'))
  client.addEventListener('close', (event) => events.push(`close ${event.code}`))
  await waitFor(() => events.length >= 1, 2000, 'the refusal')
  await sleep(50)
  client.close()
  t.equal(events[0], 'close 1008')
  t.notOk(events.includes('open'), "the client's open never fired")
  t.equal(client.session, null)
})

t.test('a resume claiming messages never sent starts afresh and does not end the owner\'s session', async (t) => {
  const { app, url } = await roomServer(t)
  const owner = await alice(app, url)
  const greedy = new Peer(url('/rooms/a'), resumeToken(owner.welcome.session, owner.welcome.token, 999_999_999), { 'x-user': 'alice' })
  t.equal((await greedy.welcome()).resumed, false)
  const session = app.wsSessions.get(owner.welcome.session)!
  t.equal(session.ended, false)
  t.equal(session.connected, true)
  t.equal(session.unacknowledged, 1)
  greedy.ws.close()
  owner.peer.ws.close()
})

t.test('with resume.owner, a session is resumed only by a request of the same owner', async (t) => {
  const owners: string[] = []
  const { app, url } = await roomServer(t, {
    owner: async (request: { headers: Record<string, unknown> }) => {
      await sleep(5)
      owners.push(String(request.headers['x-user']))
      return String(request.headers['x-user'])
    }
  })
  const owner = await alice(app, url)
  owner.peer.ws.terminate()
  await waitFor(() => app.wsSessions.get(owner.welcome.session)?.connected === false, 2000, 'detached')
  const token = resumeToken(owner.welcome.session, owner.welcome.token, 0)
  const bob = new Peer(url('/rooms/b'), token, { 'x-user': 'bob' })
  t.equal((await bob.welcome()).resumed, false, 'another URL')
  const session = app.wsSessions.get(owner.welcome.session)!
  t.equal(session.owner, 'alice')
  const back = new Peer(url('/rooms/a'), token, { 'x-user': 'alice' })
  const welcome = await back.welcome()
  t.match(welcome, { session: owner.welcome.session, resumed: true, n: 0 }, 'the owner resumes it')
  await waitFor(() => back.data().length === 1, 2000, 'the replay')
  t.same(back.data(), ['for alice only'])
  t.ok(owners.includes('bob') && owners.includes('alice'))
  bob.ws.close()
  back.ws.close()
})

t.test('an owner function that throws, rejects or returns no string refuses the connection with 1008', async (t) => {
  for (const owner of [() => { throw new Error('no') }, async () => { throw new Error('no') }, () => 42, async () => undefined]) {
    const { app, url } = await roomServer(t, { owner })
    const peer = new Peer(url('/rooms/a'), undefined, { 'x-user': 'alice' })
    t.equal((await peer.closed).code, 1008)
    t.same(peer.frames, [])
    t.equal(app.wsStats.sessions.active, 0)
  }
})

t.test('another owner with the right URL and secret gets a fresh session', async (t) => {
  const { app, url } = await roomServer(t, { owner: (request: { headers: Record<string, unknown> }) => String(request.headers['x-owner'] ?? request.headers['x-user']) })
  const first = new Peer(url('/rooms/a'), undefined, { 'x-user': 'alice', 'x-owner': 'alice-1' })
  const welcome = await first.welcome()
  const other = new Peer(url('/rooms/a'), resumeToken(welcome.session, welcome.token, 0), { 'x-user': 'alice', 'x-owner': 'alice-2' })
  t.equal((await other.welcome()).resumed, false)
  t.equal(app.wsSessions.get(welcome.session)!.connected, true)
  t.equal(app.wsStats.sessions.resumeRefused, 1)
  first.ws.close()
  other.ws.close()
})

t.test('the resume secret changes at every welcome; the old one stops working once the client is heard', async (t) => {
  const { app, url } = await roomServer(t)
  const owner = await alice(app, url)
  const first = owner.welcome
  owner.peer.ws.terminate()
  await waitFor(() => app.wsSessions.get(first.session)?.connected === false, 2000, 'detached')

  const second = new Peer(url('/rooms/a'), resumeToken(first.session, first.token, 1), { 'x-user': 'alice' })
  const welcome = await second.welcome()
  t.match(welcome, { session: first.session, resumed: true })
  t.not(welcome.token, first.token, 'a new secret')
  second.ws.send('heard')
  await waitFor(() => app.wsSessions.get(first.session)!.received === 1, 2000, 'the message')

  const stale = new Peer(url('/rooms/a'), resumeToken(first.session, first.token, 1), { 'x-user': 'alice' })
  t.equal((await stale.welcome()).resumed, false, 'the old secret no longer resumes')
  t.equal(app.wsSessions.get(first.session)!.connected, true, 'and takes nothing over')
  t.equal(second.ws.readyState, WebSocket.OPEN)

  second.ws.terminate()
  await waitFor(() => app.wsSessions.get(first.session)?.connected === false, 2000, 'detached again')
  const staleAgain = new Peer(url('/rooms/a'), resumeToken(first.session, first.token, 1), { 'x-user': 'alice' })
  t.equal((await staleAgain.welcome()).resumed, false, 'nor once the client is away again')
  staleAgain.ws.close()
  const third = new Peer(url('/rooms/a'), resumeToken(first.session, welcome.token, 1), { 'x-user': 'alice' })
  t.match(await third.welcome(), { session: first.session, resumed: true }, 'the new one does')
  stale.ws.close()
  third.ws.close()
})

t.test('a welcome lost with its connection: the secret the client resumed with still works until it is heard', async (t) => {
  const { app, url } = await roomServer(t)
  const owner = await alice(app, url)
  const first = owner.welcome
  owner.peer.ws.terminate()
  await waitFor(() => app.wsSessions.get(first.session)?.connected === false, 2000, 'detached')
  // This connection's welcome (and its new secret) never reaches the client: it is cut at once.
  const lost = new Peer(url('/rooms/a'), resumeToken(first.session, first.token, 1), { 'x-user': 'alice' })
  await lost.welcome()
  lost.ws.terminate()
  await waitFor(() => app.wsSessions.get(first.session)?.connected === false, 2000, 'detached again')
  const again = new Peer(url('/rooms/a'), resumeToken(first.session, first.token, 1), { 'x-user': 'alice' })
  t.match(await again.welcome(), { session: first.session, resumed: true })
  again.ws.close()
})

t.test('two clients resuming one session at the same moment: exactly one gets it, the other is told to retry (busy)', async (t) => {
  for (const delays of [['20', '20'], ['0', '25'], ['25', '0']]) {
    const { app, url } = await roomServer(t)
    const owner = await alice(app, url)
    owner.peer.ws.terminate()
    await waitFor(() => app.wsSessions.get(owner.welcome.session)?.connected === false, 2000, 'detached')
    const token = resumeToken(owner.welcome.session, owner.welcome.token, 0)
    const peers = delays.map((delay) => new Peer(url('/rooms/a'), token, { 'x-user': 'alice', 'x-delay': delay }))
    const firsts = await Promise.all(peers.map(async (peer) => await peer.welcome() as unknown as { t: string }))
    t.same(firsts.map((frame) => frame.t).sort(), ['retry', 'welcome'], `one resumed, one told to retry (onConnect delays ${delays.join(', ')} ms)`)
    const winner = peers[firsts.findIndex((frame) => frame.t === 'welcome')]
    const loser = peers[firsts.findIndex((frame) => frame.t === 'retry')]
    t.match(await loser.closed, { code: 1013, reason: 'Session busy' })
    t.equal((winner.frames[0] as { resumed: boolean }).resumed, true)
    await sleep(30)
    t.same(winner.data(), ['for alice only'], 'the replay went to the winner once')
    t.same(loser.data(), [], 'and never to the other')
    t.equal(winner.ws.readyState, WebSocket.OPEN, 'the winner was not cut off by the loser')
    t.match(app.wsStats.sessions, { resumed: 1, resumeRefused: 0, busy: 1, replayed: 1, active: 1 })
    for (const peer of peers) peer.ws.close()
  }
})

t.test('maxSessions: a new session ends the one away longest; with none away the connection is closed with 1013', async (t) => {
  const { app, url } = await roomServer(t, {}, { limits: { maxSessions: 2 } })
  const one = new Peer(url('/rooms/a'), undefined, { 'x-user': 'alice' })
  const two = new Peer(url('/rooms/a'), undefined, { 'x-user': 'alice' })
  const [first, second] = await Promise.all([one.welcome(), two.welcome()])
  const three = new Peer(url('/rooms/a'), undefined, { 'x-user': 'alice' })
  t.match(await three.closed, { code: 1013, reason: 'Too many sessions' }, 'all connected: no room')
  t.same(three.frames, [])
  one.ws.terminate()
  await waitFor(() => app.wsSessions.get(first.session)?.connected === false, 2000, 'one away')
  const four = new Peer(url('/rooms/a'), undefined, { 'x-user': 'alice' })
  t.equal((await four.welcome()).resumed, false)
  t.equal(app.wsSessions.get(first.session), undefined, 'the away session made room')
  t.equal(app.wsSessions.get(second.session)?.connected, true, 'connected ones are never ended for room')
  t.match(app.wsStats.sessions, { active: 2, evicted: 1, rejected: 1 })
  t.equal(app.wsStats.closeCauses.session, 1)
  two.ws.close()
  four.ws.close()
})

t.test('maxSessionsPerIp bounds the sessions one address holds, away ones included', async (t) => {
  const { app, url } = await roomServer(t, {}, { limits: { maxSessionsPerIp: 3 } })
  // One address opening and dropping sessions as fast as it can: it never holds more than 3.
  for (let i = 0; i < 20; i++) {
    const peer = new Peer(url('/rooms/a'), undefined, { 'x-user': 'alice' })
    await peer.welcome()
    peer.ws.terminate()
    await peer.closed
  }
  await waitFor(() => app.wsStats.sessions.evicted === 17, 2000, 'evictions')
  t.equal(app.wsStats.sessions.active, 3)
})

t.test('sessionBufferBytes bounds what all sessions keep: sessions away longest are ended first, then the sender', async (t) => {
  const { app, url } = await roomServer(t, { maxBufferedBytes: 1 << 20 }, { limits: { sessionBufferBytes: 10_000 } })
  const ids: string[] = []
  for (let i = 0; i < 3; i++) {
    const peer = new Peer(url('/rooms/a'), undefined, { 'x-user': 'alice' })
    ids.push((await peer.welcome()).session)
    peer.ws.terminate()
    await waitFor(() => app.wsSessions.get(ids[i])?.connected === false, 2000, 'away')
  }
  const chunk = 'x'.repeat(3000)
  for (const id of ids) t.ok(app.wsSessions.get(id)!.send(chunk))
  t.ok(app.wsStats.sessions.bufferedBytes <= 10_000)
  t.ok(app.wsSessions.get(ids[2])!.send(chunk), 'room is made for it')
  t.equal(app.wsSessions.get(ids[0]), undefined, 'by ending the session away longest')
  t.equal(app.wsStats.sessions.evicted, 1)
  t.notOk(app.wsSessions.get(ids[2])!.send('x'.repeat(9000)), 'a message no eviction can make room for')
  t.equal(app.wsSessions.get(ids[2]), undefined, 'ends its own session')
  t.ok(app.wsStats.sessions.bufferedBytes <= 10_000)
  t.equal(app.wsStats.sessions.overflowed, 1)
})

t.test('acknowledged and ended sessions give their bytes back; nothing is left in wsStats.sessions after close()', async (t) => {
  const { app, url } = await roomServer(t)
  const client = new ReliableWebSocket(url('/rooms/a'), {
    WebSocket: class extends WebSocket {
      constructor (address: string, protocols: string[]) { super(address, protocols, { headers: { 'x-user': 'alice' } }) }
    } as any
  })
  await once(client as any, 'open')
  const session = app.wsSessions.get(client.session!)!
  for (let i = 0; i < 100; i++) session.send(`m${i}`)
  await waitFor(() => session.unacknowledged < 100, 2000, 'an acknowledgement')
  client.close()
  await once(client as any, 'close')
  const away = new Peer(url('/rooms/a'), undefined, { 'x-user': 'alice' })
  await away.welcome()
  away.ws.terminate()
  await app.close()
  t.match(app.wsStats.sessions, { active: 0, bufferedBytes: 0 })
  t.equal(app.wsSessions.get(client.session ?? session.id), undefined)
})

t.test('an async owner without onConnect: the socket is paused meanwhile, nothing is lost', async (t) => {
  const received: string[] = []
  const server = await start({ heartbeat: false }, (app) => {
    app.get('/s', { websocket: true, config: { reliable: { resume: { owner: async () => { await sleep(30); return 'alice' } } } } }, (socket) => {
      socket.on('message', (data: Buffer) => received.push(data.toString()))
    })
  })
  t.teardown(() => server.app.close())
  const peer = new Peer(server.url('/s'))
  // Sent before the welcome, while the owner is being looked up: read only once the handler listens.
  peer.ws.on('open', () => peer.ws.send('early'))
  t.match(await peer.welcome(), { resumed: false })
  await waitFor(() => received.length === 1, 2000, 'the early message')
  t.same(received, ['early'])
  peer.ws.close()
})

t.test('a client that comes back from another address resumes, and its session counts there', async (t) => {
  const { app, url } = await roomServer(t, {}, { limits: { maxSessionsPerIp: 1 } })
  const first = new Peer(url('/rooms/a'), undefined, { 'x-user': 'alice' })
  const welcome = await first.welcome()
  first.ws.terminate()
  await waitFor(() => app.wsSessions.get(welcome.session)?.connected === false, 2000, 'away')
  const moved = new WebSocket(url('/rooms/a'), [PROTOCOL, resumeToken(welcome.session, welcome.token, 0)], { headers: { 'x-user': 'alice' }, localAddress: '127.0.0.2' })
  const [data] = await once(moved, 'message')
  t.match(JSON.parse(data.toString().slice(1)), { session: welcome.session, resumed: true })
  // The first address holds no session now: a new one there needs no room made.
  const again = new Peer(url('/rooms/a'), undefined, { 'x-user': 'alice' })
  await again.welcome()
  t.match(app.wsStats.sessions, { active: 2, evicted: 0, rejected: 0 })
  moved.close()
  again.ws.close()
})

t.test('maxSessionsPerIp with every session of the address connected: the next connection is closed with 1013', async (t) => {
  const { app, url } = await roomServer(t, {}, { limits: { maxSessionsPerIp: 1 } })
  const first = new Peer(url('/rooms/a'), undefined, { 'x-user': 'alice' })
  await first.welcome()
  const second = new Peer(url('/rooms/a'), undefined, { 'x-user': 'alice' })
  t.match(await second.closed, { code: 1013, reason: 'Too many sessions' })
  t.same(second.frames, [])
  // Another address is not held back by this one.
  const elsewhere = new WebSocket(url('/rooms/a'), PROTOCOL, { headers: { 'x-user': 'alice' }, localAddress: '127.0.0.3' })
  const [data] = await once(elsewhere, 'message')
  t.match(JSON.parse(data.toString().slice(1)), { t: 'welcome', resumed: false })
  t.match(app.wsStats.sessions, { active: 2, rejected: 1, evicted: 0 })
  first.ws.close()
  elsewhere.close()
})
