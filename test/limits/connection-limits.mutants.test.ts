import t from 'tap'
import WebSocket from 'ws'
import { closeEvent, start, waitFor } from '../helpers/helpers'

// Behaviours that mutation testing found unchecked (docs/testing.md).

function attempt (url: string): Promise<{ status: number, ws?: WebSocket }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url)
    ws.on('open', () => resolve({ status: 101, ws }))
    ws.on('unexpected-response', (_request, response) => {
      resolve({ status: response.statusCode! })
      ws.terminate()
    })
    ws.on('error', (err) => { if (!/closed before the connection/.test(err.message)) reject(err) })
  })
}

t.test('maxConnectionsPerIp: closing one of an address\'s sockets frees one place, not all of them', async (t) => {
  const { app, url } = await start({ heartbeat: false, limits: { maxConnectionsPerIp: 2 } }, (app) => {
    app.get('/ws', { websocket: true }, () => {})
  })
  t.teardown(() => app.close())
  const first = await attempt(url('/ws'))
  const second = await attempt(url('/ws'))
  t.same([first.status, second.status], [101, 101])
  const closed = closeEvent(first.ws!)
  first.ws!.close()
  await closed
  await waitFor(() => app.wsStats.connections.active === 1)
  const third = await attempt(url('/ws'))
  t.equal(third.status, 101, 'the freed place is taken')
  const fourth = await attempt(url('/ws'))
  t.equal(fourth.status, 429, 'the address still holds two sockets')
  second.ws!.terminate()
  third.ws!.terminate()
})
