// Behaviours of the reconnecting client that mutation testing found unchecked (docs/testing.md).
import t from 'tap'
import { once } from 'node:events'
import WebSocket from 'ws'
import { ReliableWebSocket } from '../lib/client'
import { start, waitFor } from './helpers'

/** A plain route that records the close code of each connection. */
async function server (t: { teardown: (fn: () => unknown) => void }): Promise<{ url: string, codes: number[] }> {
  const codes: number[] = []
  const { app, url } = await start({ heartbeat: false }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('close', (code: number) => codes.push(code))
    })
  })
  t.teardown(() => app.close())
  return { url: url('/ws'), codes }
}

t.test('close codes: 3000 and 4999 are the bounds of the application range, 2999 and 5000 are refused', async (t) => {
  const { url, codes } = await server(t)
  for (const [code, outside] of [[3000, 2999], [4999, 5000]]) {
    const ws = new ReliableWebSocket(url, { WebSocket })
    await once(ws as any, 'open')
    t.throws(() => ws.close(outside), RangeError, `${outside} refused`)
    t.equal(ws.readyState, ws.OPEN, 'a refused code leaves the client open')
    ws.close(code)
    await once(ws as any, 'close')
  }
  await waitFor(() => codes.length === 2, 3000, 'both closes seen by the server')
  t.same(codes, [3000, 4999])
})
