import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import t from 'tap'
import { OPCODE, RawPeer, buildFrame, collect, connect, sleep, start, waitFor } from '../helpers/helpers'

// A GC handle without starting tap's processes with --expose-gc.
setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

async function collectGarbage (): Promise<void> {
  // A WeakRef keeps its target alive until the end of the job that made or read it.
  await sleep(10)
  gc()
  gc()
}

t.test('once a socket is open, its HTTP request and reply are garbage unless the app keeps them', async (t) => {
  const refs: Array<WeakRef<object>> = []
  const { app, url } = await start({ heartbeat: false }, (app) => {
    app.addHook('onRequest', (request, reply, done) => {
      refs.push(new WeakRef(request), new WeakRef(reply), new WeakRef(request.raw), new WeakRef(reply.raw))
      done()
    })
    app.get('/ws', { websocket: true }, (socket) => { socket.on('message', (d) => socket.send(d.toString())) })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  ws.send('before')
  await waitFor(() => collect(ws).length === 1)
  await collectGarbage()
  t.equal(refs.length, 4)
  t.same(refs.map((ref) => ref.deref() === undefined), [true, true, true, true], 'request, reply and their raw objects collected')
  ws.send('after')
  await waitFor(() => collect(ws).length === 2)
  t.same(collect(ws), ['before', 'after'], 'the socket carries on')
  ws.close()
})

t.test("an app's websocket.errorHandler still gets the request and reply of a socket error", async (t) => {
  const seen: unknown[] = []
  const { app, port } = await start({
    heartbeat: false,
    websocket: {
      errorHandler (error, socket, request, reply) {
        seen.push({ code: (error as { code?: string }).code, url: request.url, hijacked: reply.sent })
        socket.terminate()
      }
    }
  }, (app) => {
    app.get('/ws', { websocket: true }, () => {})
  })
  t.teardown(() => app.close())
  const bad = await RawPeer.connect(port, '/ws?room=1')
  await collectGarbage()
  // A socket error after the release (the peer's frame is unmasked): the app's errorHandler has request and reply.
  // Without one, the plugin's own handling is tested in hooks.test.ts (a protocol error: 1002, counted).
  bad.socket.write(buildFrame({ opcode: OPCODE.text, payload: 'hi', mask: false }))
  await waitFor(() => bad.ended, 2000, 'the bad peer to be closed')
  t.same(seen, [{ code: 'WS_ERR_EXPECTED_MASK', url: '/ws?room=1', hijacked: true }])
  t.equal(app.wsStats.errors, 1)
})
