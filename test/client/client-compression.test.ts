// The client's `compression` option: handed to ws as its perMessageDeflate; the server's route decides.
import { once } from 'node:events'
import t from 'tap'
import WebSocket from 'ws'
import { ReliableWebSocket } from '../../lib/client'
import type { ReliableWebSocketOptions } from '../../lib/client'
import { start, waitFor } from '../helpers/helpers'

t.test('ws offers permessage-deflate unless the client says not to; an object is ws\'s own options', async (t) => {
  const offers: Array<string | undefined> = []
  const { app, url } = await start({ heartbeat: false, compression: true }, (app) => {
    app.get('/ws', { websocket: true }, (socket, request) => {
      offers.push(request.headers['sec-websocket-extensions'])
      socket.send('x'.repeat(2000))
    })
  })
  t.teardown(() => app.close())
  const open = async (options: ReliableWebSocketOptions): Promise<{ extensions: string, data: unknown }> => {
    const ws = new ReliableWebSocket(url('/ws'), { WebSocket, ...options })
    const [event] = await once(ws, 'message') as [MessageEvent]
    const extensions = ws.extensions
    ws.close()
    return { extensions, data: event.data }
  }
  t.same(await open({}), { extensions: 'permessage-deflate', data: 'x'.repeat(2000) }, "ws's default: offered, negotiated")
  t.same(await open({ compression: false }), { extensions: '', data: 'x'.repeat(2000) })
  t.same(await open({ compression: { serverMaxWindowBits: 9 } }), { extensions: 'permessage-deflate', data: 'x'.repeat(2000) })
  t.match(offers, [/client_max_window_bits/, undefined, /server_max_window_bits=9/])
  await waitFor(() => app.wsStats.connections.active === 0)
  t.equal(app.wsStats.compression.sent.messages, 2)
})

t.test('anything else is refused when the client is made', async (t) => {
  for (const compression of ['yes', null, [], 1]) {
    t.throws(() => new ReliableWebSocket('ws://127.0.0.1:1/', { WebSocket, compression: compression as any }), { name: 'TypeError', code: 'FST_RELIABLE_WS_INVALID_OPTION', message: /option compression: must be a boolean/ }, JSON.stringify(compression))
  }
})
