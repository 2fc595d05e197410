// A hostile client on the reliable subprotocol's control frames: oversized ones, and pings it never reads the answers to.
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import t from 'tap'
import { PROTOCOL } from '../../lib/protocol/protocol'
import { OPCODE, RawPeer, buildFrame, sleep, start, waitFor } from '../helpers/helpers'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

async function heapUsed (): Promise<number> {
  await sleep(10)
  gc()
  gc()
  return process.memoryUsage().heapUsed
}

async function server (t: { teardown: (fn: () => unknown) => void }): Promise<{ app: import('fastify').FastifyInstance, port: number }> {
  const { app, port } = await start({ heartbeat: false }, (app) => {
    app.get('/ws', { websocket: true }, () => {})
  })
  t.teardown(() => app.close())
  return { app, port }
}

t.test('a control frame over 256 bytes is refused with 1009 before it is parsed', async (t) => {
  const { app, port } = await server(t)
  const nested = '\u0000' + '['.repeat(1 << 20) + ']'.repeat(1 << 20)
  for (const frame of [`\u0000{"t":"ping","pad":"${'x'.repeat(300)}"}`, nested]) {
    const peer = await RawPeer.connect(port, '/ws', [`Sec-WebSocket-Protocol: ${PROTOCOL}`])
    peer.send(OPCODE.text, frame)
    await waitFor(() => peer.closeCode() !== null, 2000, 'the close frame')
    t.equal(peer.closeCode(), 1009)
    peer.destroy()
  }
  const small = await RawPeer.connect(port, '/ws', [`Sec-WebSocket-Protocol: ${PROTOCOL}`])
  small.send(OPCODE.text, `\u0000{"t":"ping","pad":"${'x'.repeat(200)}"}`)
  await waitFor(() => small.count(OPCODE.text) === 2, 2000, 'welcome and pong')
  t.equal(small.closeCode(), null, 'one within the cap is answered')
  small.destroy()
  await waitFor(() => app.wsStats.connections.active === 0, 2000, 'all closed')
  t.equal(app.wsStats.limits.payloadTooLarge, 2)
  t.equal(app.wsStats.closeCauses.error, 2)
})

t.test('a peer that floods subprotocol pings and never reads is terminated, and the heap stays flat', async (t) => {
  const { app, port } = await server(t)
  const peer = await RawPeer.connect(port, '/ws', [`Sec-WebSocket-Protocol: ${PROTOCOL}`])
  peer.socket.pause() // never reads: the pongs back up in the kernel, then in the server
  const before = await heapUsed()
  const batch = Buffer.concat(Array.from({ length: 10_000 }, () => buildFrame({ opcode: OPCODE.text, payload: '\u0000{"t":"ping"}' })))
  let uploaded = 0
  // Without the cap the heap grew ~10 bytes per byte uploaded; 64 MB is far past the kernel's buffers.
  while (!peer.socket.destroyed && app.wsStats.limits.pingFloods === 0 && uploaded < 64e6) {
    if (!peer.socket.write(batch)) await Promise.race([new Promise((resolve) => peer.socket.once('drain', resolve)), sleep(50)])
    uploaded += batch.length
  }
  await waitFor(() => app.wsStats.connections.active === 0, 5000, 'the flooder to be gone')
  const growth = (await heapUsed()) - before
  t.comment(`uploaded ${(uploaded / 1e6).toFixed(1)} MB; heap growth ${(growth / 1e6).toFixed(1)} MB`)
  t.ok(uploaded < 64e6, 'terminated before the end of the flood')
  t.ok(growth < 16e6, 'no pile of pongs left on the heap')
  t.equal(app.wsStats.limits.pingFloods, 1)
  t.same(app.wsStats.closeCauses, { error: 1 })
  peer.destroy()
})
