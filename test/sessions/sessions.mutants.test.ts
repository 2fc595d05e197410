// Behaviours of sessions that mutation testing found unchecked (docs/testing.md).
import t from 'tap'
import { once } from 'node:events'
import WebSocket from 'ws'
import type { FastifyInstance } from 'fastify'
import type fastifyReliableWs = require('../../types/index')
import type { SocketSession } from '../../lib/core/shapes'
import { PROTOCOL, resumeToken } from '../../lib/protocol/protocol'
import { MemorySessionStore } from '../../lib/sessions/session-store'
import { closeEvent, sleep, start, waitFor } from '../helpers/helpers'
import { Peer } from '../helpers/session-peer'

type RecordChanges = fastifyReliableWs.RecordChanges
type SessionRecord = fastifyReliableWs.SessionRecord
type WriteResult = fastifyReliableWs.WriteResult

/** A route with sessions that records the messages its app received. */
async function sessionServer (t: { teardown: (fn: () => unknown) => void }, options = {}): Promise<{ app: FastifyInstance, url: string, received: string[] }> {
  const received: string[] = []
  const server = await start(options, (app) => {
    app.get('/s', { websocket: true, config: { reliable: { resume: true } } }, (socket) => {
      socket.on('message', (data: Buffer) => received.push(data.toString()))
    })
  })
  t.teardown(() => server.app.close())
  return { app: server.app, url: server.url('/s'), received }
}

/** A raw client on the subprotocol (it acknowledges nothing by itself), with the welcome it got. */
async function raw (url: string, token?: string): Promise<{ ws: WebSocket, welcome: { session: string, token: string, resumed: boolean } }> {
  const ws = new WebSocket(url, token === undefined ? PROTOCOL : [PROTOCOL, token])
  const [data] = await once(ws, 'message')
  return { ws, welcome: JSON.parse(data.toString().slice(1)) }
}

t.test("the instance's sessionBufferBytes may be filled exactly; past it the session ends with 4800 'Session buffer full'", async (t) => {
  // Each kept message costs its bytes and 64 more: room for exactly two messages of 10 bytes.
  const { app, url } = await sessionServer(t, { limits: { sessionBufferBytes: 2 * (10 + 64) } })
  const { ws, welcome } = await raw(url)
  const session = app.wsSessions.get(welcome.session)!
  const closed = closeEvent(ws)
  t.ok(session.send('a'.repeat(10)))
  t.ok(session.send('b'.repeat(10)), 'the budget filled exactly')
  t.equal(app.wsStats.sessions.bufferedBytes, 148)
  const refused = new Promise<unknown>((resolve) => (session as unknown as SocketSession).send('c', undefined, resolve))
  t.notOk(session.send('c'), 'one byte more')
  t.match(await refused, { code: 'FST_RELIABLE_WS_SESSION_ENDED' }, 'a callback hears of the refusal, the session having ended')
  t.same(await closed, { code: 4800, reason: 'Session buffer full' })
  t.equal(app.wsStats.sessions.bufferedBytes, 0)
})

t.test('an acknowledgement overtaken by a later one changes nothing', async (t) => {
  const { app, url } = await sessionServer(t)
  const { ws, welcome } = await raw(url)
  t.teardown(() => ws.terminate())
  const session = app.wsSessions.get(welcome.session)!
  for (let i = 0; i < 20; i++) session.send(`m${String(i).padStart(2, '0')}`)
  ws.send('\u0000{"t":"ack","n":10}')
  await waitFor(() => session.unacknowledged === 10, 2000, 'the acknowledgement')
  ws.send('\u0000{"t":"ack","n":5}')
  ws.send('after')
  await waitFor(() => app.wsStats.messages.received === 1, 2000, 'the message after it')
  t.equal(session.unacknowledged, 10)
  t.equal((session as unknown as { bufferedBytes: number }).bufferedBytes, 30)
  t.equal(app.wsStats.sessions.bufferedBytes, 10 * (3 + 64), "the instance's budget holds the ten not acknowledged")
  t.equal(ws.readyState, WebSocket.OPEN)
})

t.test('once the client has been heard on its new connection, the secret it resumed with is no longer good', async (t) => {
  const { app, url, received } = await sessionServer(t)
  const first = await raw(url)
  const session = app.wsSessions.get(first.welcome.session)!
  first.ws.terminate()
  await waitFor(() => !session.connected, 2000, 'the server to notice')
  const second = await raw(url, resumeToken(first.welcome.session, first.welcome.token, 0))
  t.equal(second.welcome.resumed, true)
  second.ws.send('heard')
  await waitFor(() => received.length === 1, 2000, 'the message')
  second.ws.terminate()
  await waitFor(() => !session.connected, 2000, 'the server to notice')
  const stale = await raw(url, resumeToken(first.welcome.session, first.welcome.token, 0))
  t.equal(stale.welcome.resumed, false, 'the old secret is refused')
  stale.ws.terminate()
  const fresh = await raw(url, resumeToken(first.welcome.session, second.welcome.token, 0))
  t.equal(fresh.welcome.resumed, true, "the last welcome's secret is good")
  fresh.ws.terminate()
  await sleep(10)
})

t.test('a session is resumed only on its own route, even where another route answers the same URL (host constraints)', async (t) => {
  const { app, port } = await start({}, (app) => {
    for (const host of ['a.test', 'b.test']) {
      app.get('/s', { websocket: true, constraints: { host }, config: { reliable: { resume: true } } }, () => {})
    }
  })
  t.teardown(() => app.close())
  const on = async (host: string, token?: string): Promise<{ ws: WebSocket, welcome: { session: string, token: string, resumed: boolean } }> => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/s`, token === undefined ? PROTOCOL : [PROTOCOL, token], { headers: { host } })
    const [data] = await once(ws, 'message')
    return { ws, welcome: JSON.parse(data.toString().slice(1)) }
  }
  const first = await on('a.test')
  first.ws.terminate()
  await waitFor(() => app.wsSessions.get(first.welcome.session)?.connected === false, 2000, 'the server to notice')
  const other = await on('b.test', resumeToken(first.welcome.session, first.welcome.token, 0))
  t.equal(other.welcome.resumed, false, "the other host's route begins its own session")
  other.ws.terminate()
  const own = await on('a.test', resumeToken(first.welcome.session, first.welcome.token, 0))
  t.equal(own.welcome.resumed, true, 'its own route resumes it')
  own.ws.terminate()
  await sleep(10)
})

/** The memory store, keeping a list of what the registry wrote to it. */
class RecordingStore extends MemorySessionStore {
  readonly created: string[] = []
  readonly writes: Array<{ id: string, changes: RecordChanges }> = []

  override create (record: SessionRecord): void {
    this.created.push(record.id)
    super.create(record)
  }

  override write (id: string, fence: number, changes: RecordChanges, ttlMs: number): WriteResult {
    this.writes.push({ id, changes })
    return super.write(id, fence, changes, ttlMs)
  }
}

t.test("a new session's record: claimed by this instance for 5 s, expiring ttlMs after it began, no secret held", async (t) => {
  const store = new RecordingStore()
  const { url } = await sessionServer(t, { sessionStore: store })
  const { ws, welcome } = await raw(url)
  t.teardown(() => ws.terminate())
  const record = store.read(welcome.session)!
  t.match(record, { state: 'claimed', fence: 1, heldSecret: '', secret: welcome.token, route: '/s', url: '/s', owner: null })
  t.equal(record.claimedUntil - record.createdAt, 5000)
  t.equal(record.expiresAt - record.createdAt, 120_000, "the route's ttlMs")
})

t.test('the record learns once per connection that its client was heard, not once per message', async (t) => {
  const store = new RecordingStore()
  const { app, url, received } = await sessionServer(t, { sessionStore: store })
  const first = await raw(url)
  for (let i = 0; i < 5; i++) first.ws.send(`m${i}`)
  await waitFor(() => received.length === 5, 2000, 'the messages')
  first.ws.terminate()
  await waitFor(() => app.wsSessions.get(first.welcome.session)?.connected === false, 2000, 'the server to notice')
  const second = await raw(url, resumeToken(first.welcome.session, first.welcome.token, 0))
  t.teardown(() => second.ws.terminate())
  for (let i = 0; i < 5; i++) second.ws.send(`n${i}`)
  await waitFor(() => received.length === 10, 2000, 'the messages after the resume')
  t.same(store.writes.map((w) => w.changes), [{ heard: true }, { away: true }, { heard: true }])
})

t.test('a new session refused for want of room: its record is ended and the handler is not called', async (t) => {
  const store = new RecordingStore()
  let handled = 0
  const server = await start({ sessionStore: store, limits: { maxSessions: 1 } }, (app) => {
    app.get('/s', { websocket: true, config: { reliable: { resume: true } } }, () => { handled++ })
  })
  t.teardown(() => server.app.close())
  const first = await raw(server.url('/s'))
  t.teardown(() => first.ws.terminate())
  const refused = new WebSocket(server.url('/s'), PROTOCOL)
  t.same(await closeEvent(refused), { code: 1013, reason: 'Too many sessions' })
  t.equal(handled, 1, 'only the first connection reached the handler')
  t.equal(store.created.length, 2)
  t.not(store.read(store.created[0]), null, 'the live session keeps its record')
  t.equal(store.read(store.created[1]), null, 'the refused one has none left')
})

t.test("the per-address cap ends the address's session away longest, whatever the order they began in", async (t) => {
  const { app, url } = await sessionServer(t, { limits: { maxSessionsPerIp: 2 } })
  const older = await raw(url)
  const newer = await raw(url)
  // The newer one goes first, so it has been away longest.
  for (const { ws, welcome } of [newer, older]) {
    ws.terminate()
    await waitFor(() => app.wsSessions.get(welcome.session)?.connected === false, 2000, 'the server to notice')
  }
  const third = await raw(url)
  t.teardown(() => third.ws.terminate())
  t.equal(app.wsSessions.get(newer.welcome.session), undefined, 'the one away longest made room')
  t.equal(app.wsSessions.get(older.welcome.session)?.connected, false, 'the other is still kept')
  t.equal(app.wsStats.sessions.evicted, 1)
})

t.test('an address whose sessions have all ended is forgotten', async (t) => {
  const { app, url } = await sessionServer(t, { limits: { maxSessionsPerIp: 1 } })
  const registry = app.wsSessions as unknown as { perIp: Map<string, unknown> }
  const from = async (localAddress: string): Promise<Awaited<ReturnType<typeof raw>>> => {
    const ws = new WebSocket(url, PROTOCOL, { localAddress })
    const [data] = await once(ws, 'message')
    return { ws, welcome: JSON.parse(data.toString().slice(1)) }
  }
  const a = await from('127.0.0.2')
  const b = await from('127.0.0.3')
  t.equal(registry.perIp.size, 2)
  // Each session ends: one overflows, the other is replaced by a new one from its address.
  t.notOk(app.wsSessions.get(a.welcome.session)!.send('x'.repeat((1 << 20) + 1)))
  b.ws.terminate()
  await waitFor(() => app.wsSessions.get(b.welcome.session)?.connected === false, 2000, 'the server to notice')
  const c = await from('127.0.0.4')
  t.teardown(() => c.ws.terminate())
  app.wsSessions.get(b.welcome.session)!.send('x'.repeat((1 << 20) + 1))
  await waitFor(() => registry.perIp.size === 1, 2000, 'the addresses with no session left to be dropped')
  t.same([...registry.perIp.keys()], ['127.0.0.4'])
  a.ws.terminate()
})

t.test('the outbox gives back acknowledged slots in bulk: once 1024 are freed and they are at least half of it', async (t) => {
  const { app, url } = await start({ heartbeat: false }, (app) => {
    app.get('/s', { websocket: true, config: { reliable: { resume: { maxBufferedMessages: 4096 } } } }, () => {})
  })
  t.teardown(() => app.close())
  const { ws, welcome } = await raw(url('/s'))
  t.teardown(() => ws.terminate())
  const session = app.wsSessions.get(welcome.session)!
  const inside = session as unknown as { outbox: unknown[], head: number }
  let sent = 0
  const sendN = (n: number): void => { for (let i = 0; i < n; i++, sent++) session.send('m') }
  const ack = async (n: number): Promise<void> => {
    ws.send(`\u0000{"t":"ack","n":${n}}`)
    await waitFor(() => sent - session.unacknowledged === n, 2000, `the acknowledgement of ${n}`)
  }
  sendN(1024)
  await ack(1023)
  t.same([inside.outbox.length, inside.head], [1024, 1023], '1023 freed, more than half: kept until 1024')
  sendN(1024)
  await ack(1024)
  t.same([inside.outbox.length, inside.head], [1024, 0], '1024 freed, exactly half: given back')
  sendN(2048)
  await ack(2048)
  t.same([inside.outbox.length, inside.head], [3072, 1024], '1024 freed, a third: kept')
  t.equal(session.unacknowledged, 2048)
})

t.test('a resume with the secret of a resume not yet acknowledged, its connection alive: told to retry, 1013 Session busy; once that connection is gone, the secret resumes', async (t) => {
  const { app, url } = await sessionServer(t)
  const first = await raw(url)
  const session = app.wsSessions.get(first.welcome.session)!
  first.ws.terminate()
  await waitFor(() => !session.connected, 2000, 'the server to notice')
  // Resumed, but as if its welcome were lost: the client still holds the first secret, the server sees a live socket.
  const unheard = await raw(url, resumeToken(first.welcome.session, first.welcome.token, 0))
  t.equal(unheard.welcome.resumed, true)
  const busy = new Peer(url, resumeToken(first.welcome.session, first.welcome.token, 0))
  t.same(await busy.closed, { code: 1013, reason: 'Session busy' })
  t.match(busy.frames, [{ t: 'retry', ms: Number }], 'a retry hint, no welcome')
  const ms = (busy.frames[0] as { ms: number }).ms
  t.ok(ms >= 0 && ms < 5000 + 2000, `within the claim's wait and the window: ${ms}`)
  t.match(app.wsStats.sessions, { busy: 1, resumeRefused: 0, active: 1 })
  t.equal(session.connected, true, 'the session is untouched')
  unheard.ws.terminate()
  await waitFor(() => !session.connected, 2000, 'the server to notice')
  const back = await raw(url, resumeToken(first.welcome.session, first.welcome.token, 0))
  t.teardown(() => back.ws.terminate())
  t.match(back.welcome, { session: first.welcome.session, resumed: true })
})

t.test('a busy claim past its window (retryMs 0: a connection whose client may never speak holds it) begins a new session, as it may wait for ever', async (t) => {
  class BusyForEver extends MemorySessionStore {
    override claim (): fastifyReliableWs.ClaimResult {
      return { ok: false, refusal: 'busy', retryMs: 0 }
    }
  }
  const { app, url } = await sessionServer(t, { sessionStore: new BusyForEver() })
  const first = await raw(url)
  first.ws.terminate()
  await waitFor(() => app.wsSessions.get(first.welcome.session)?.connected === false, 2000, 'the server to notice')
  const again = await raw(url, resumeToken(first.welcome.session, first.welcome.token, 0))
  t.teardown(() => again.ws.terminate())
  t.equal(again.welcome.resumed, false)
  t.match(app.wsStats.sessions, { busy: 0, resumeRefused: 1 })
})
