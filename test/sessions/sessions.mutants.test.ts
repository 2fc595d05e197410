// Behaviours of sessions that mutation testing found unchecked (docs/testing.md).
import t from 'tap'
import { once } from 'node:events'
import WebSocket from 'ws'
import type { FastifyInstance } from 'fastify'
import { PROTOCOL, resumeToken } from '../../lib/protocol/protocol'
import { closeEvent, sleep, start, waitFor } from '../helpers/helpers'

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
  t.notOk(session.send('c'), 'one byte more')
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
