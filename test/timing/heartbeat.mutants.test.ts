import t from 'tap'
import WebSocket from 'ws'
import { start, sleep } from '../helpers/helpers'

// Behaviours that mutation testing found unchecked (docs/testing.md).

t.test('with timeoutMs below intervalMs, a peer that answers each ping a little late is kept', async (t) => {
  const { app, url } = await start({ heartbeat: { intervalMs: 200, timeoutMs: 180 } }, (app) => {
    app.get('/ws', { websocket: true }, () => {})
  })
  t.teardown(() => app.close())
  const ws = new WebSocket(url('/ws'), { autoPong: false })
  let pings = 0
  ws.on('ping', () => {
    pings++
    setTimeout(() => ws.pong(), 20)
  })
  await new Promise((resolve) => ws.once('open', resolve))
  await sleep(700)
  t.ok(pings >= 2, `${pings} pings answered`)
  t.equal(ws.readyState, WebSocket.OPEN, 'still open')
  t.equal(app.wsStats.heartbeat.timeouts, 0)
  ws.terminate()
})
