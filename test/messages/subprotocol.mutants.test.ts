import { once } from 'node:events'
import t from 'tap'
import WebSocket from 'ws'
import { MAX_CONTROL_BYTES, PROTOCOL } from '../../lib/protocol/protocol'
import { closeEvent, start, waitFor } from '../helpers/helpers'

// Behaviours that mutation testing found unchecked (docs/testing.md).

const PONG = '\u0000{"t":"pong"}'

async function server (t: { teardown: (fn: () => unknown) => void }): Promise<Awaited<ReturnType<typeof start>>> {
  const started = await start({ heartbeat: false }, (app) => {
    app.get('/ws', { websocket: true }, () => {})
  })
  t.teardown(() => started.app.close())
  return started
}

async function client (url: string): Promise<{ ws: WebSocket, texts: string[] }> {
  const ws = new WebSocket(url, PROTOCOL)
  const texts: string[] = []
  ws.on('message', (data, isBinary) => { if (!isBinary) texts.push(data.toString()) })
  await once(ws, 'open')
  return { ws, texts }
}

/** A ping padded with JSON whitespace to `bytes` bytes, the control mark included. */
function ping (bytes: number): string {
  const frame = '\u0000{"t":"ping"}'
  return frame + ' '.repeat(bytes - frame.length)
}

t.test('a control frame of exactly the cap is answered; one byte more is closed with 1009 and a reason', async (t) => {
  const { app, url } = await server(t)
  const { ws, texts } = await client(url('/ws'))
  ws.send(ping(MAX_CONTROL_BYTES))
  await waitFor(() => texts.includes(PONG), 2000, 'the pong')
  t.equal(ws.readyState, WebSocket.OPEN)
  const closed = closeEvent(ws)
  ws.send(ping(MAX_CONTROL_BYTES + 1))
  t.same(await closed, { code: 1009, reason: 'Control frame too large' })
  t.equal(app.wsStats.limits.payloadTooLarge, 1)
})

t.test('a peer that reads its pongs may ping any number of times: only unsent pongs count toward the cap', async (t) => {
  const { app, url } = await server(t)
  const { ws, texts } = await client(url('/ws'))
  for (let i = 1; i <= 50; i++) {
    ws.send(ping(20))
    await waitFor(() => texts.filter((text) => text === PONG).length === i, 2000, `pong ${i}`)
  }
  t.equal(ws.readyState, WebSocket.OPEN)
  t.equal(app.wsStats.limits.pingFloods, 0)
  ws.close()
})
