import { performance } from 'node:perf_hooks'
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import type WebSocket from 'ws'
import { DEFAULTS } from '../../lib/core/options'
import { OPCODE, RawPeer, bootWith, buildFrame, collect, connect, loopDelay, sleep, start, waitFor } from '../helpers/helpers'

// Bounds, not timings: the scheduler's tick plus a noisy 2-core machine.
const MARGIN = 250
const TIMEOUT = 200

const first = (payload: string): Buffer => buildFrame({ opcode: OPCODE.text, payload, fin: false })
const more = (payload: string, fin = false): Buffer => buildFrame({ opcode: 0x0, payload, fin })

function routes (sockets: WebSocket[]) {
  return (app: FastifyInstance): void => {
    app.get('/ws', { websocket: true }, (socket) => {
      sockets.push(socket)
      socket.on('message', (data) => socket.send(data.toString()))
    })
    app.get('/patient', { websocket: true, config: { reliable: { limits: { fragmentTimeoutMs: Infinity } } } }, (socket) => {
      socket.on('message', (data) => socket.send(data.toString()))
    })
  }
}

async function server (t: tap.Test, options: Record<string, unknown> = {}) {
  const infos: Array<{ code: number, reason: string, cause: string }> = []
  const sockets: WebSocket[] = []
  const started = await start({
    heartbeat: false,
    limits: { fragmentTimeoutMs: TIMEOUT },
    onDisconnect: (_socket, info) => { infos.push(info) },
    ...options
  }, routes(sockets), { logger: { level: 'fatal' } })
  t.teardown(() => started.app.close())
  return { ...started, infos, sockets }
}

t.test('the default is finite', async (t) => {
  t.equal(DEFAULTS.limits.fragmentTimeoutMs, 10_000)
  await t.rejects(bootWith({ limits: { fragmentTimeoutMs: 0 } }), { code: 'FST_RELIABLE_WS_INVALID_OPTION', message: /limits\.fragmentTimeoutMs/ })
  await t.rejects(bootWith({}, (app) => {
    app.get('/ws', { websocket: true, config: { reliable: { limits: { fragmentTimeoutMs: -1 } } } }, () => {})
  }), { code: 'FST_RELIABLE_WS_INVALID_OPTION', message: /limits\.fragmentTimeoutMs/ })
})

t.test('a fragmented message never finished is closed with 1008, though the peer answers every ping', async (t) => {
  const lag = loopDelay()
  const { app, port, url, infos } = await server(t, { heartbeat: { intervalMs: 50 } })
  const good = await connect(url('/ws'))
  const peer = await RawPeer.connect(port, '/ws')
  // Alive by every other measure: a pong every 20 ms.
  const pongs = setInterval(() => { if (!peer.ended) peer.send(OPCODE.pong) }, 20)
  t.teardown(() => clearInterval(pongs))
  const startedAt = performance.now()
  peer.socket.write(first('a'.repeat(100)))
  await waitFor(() => peer.closeCode() !== null, 3000, 'the close frame')
  const elapsed = performance.now() - startedAt
  t.equal(peer.closeCode(), 1008)
  t.equal(peer.frames.find((frame) => frame.opcode === OPCODE.close)!.payload.subarray(2).toString(), 'Message timeout')
  const held = lag()
  t.ok(elapsed >= TIMEOUT && elapsed < 2 * TIMEOUT + MARGIN + held, `closed ${Math.round(elapsed)} ms after it began`)
  peer.destroy()
  await waitFor(() => infos.length === 1)
  t.equal(infos[0].cause, 'error')
  t.equal(app.wsStats.limits.fragmentTimeouts, 1)
  t.equal(app.wsStats.heartbeat.timeouts, 0, 'not a heartbeat timeout')
  good.send('still here')
  await waitFor(() => collect(good).length === 1)
  t.same(collect(good), ['still here'], 'a good client is still served')
  good.close()
})

t.test('so is a single frame whose payload never all arrives, and a frame header cut short', async (t) => {
  const { app, port } = await server(t)
  const payload = await RawPeer.connect(port, '/ws')
  payload.socket.write(buildFrame({ opcode: OPCODE.binary, payload: Buffer.alloc(500) }).subarray(0, 200))
  const header = await RawPeer.connect(port, '/ws')
  header.socket.write(buildFrame({ opcode: OPCODE.binary, payload: Buffer.alloc(500) }).subarray(0, 3))
  await waitFor(() => payload.closeCode() !== null && header.closeCode() !== null, 2 * TIMEOUT + MARGIN, 'both close frames')
  t.equal(payload.closeCode(), 1008)
  t.equal(header.closeCode(), 1008)
  t.equal(app.wsStats.limits.fragmentTimeouts, 2)
  payload.destroy()
  header.destroy()
})

t.test('a slow uploader that finishes each message in time is never closed, even always in the middle of one', async (t) => {
  const { app, port } = await server(t)
  const peer = await RawPeer.connect(port, '/ws')
  peer.socket.write(first('m0-'))
  // Each message takes 0.6 of the timeout, and the next one begins as it ends: every visit finds one unfinished.
  for (let i = 1; i <= 6; i++) {
    await sleep(TIMEOUT * 0.3)
    peer.socket.write(more('x'))
    await sleep(TIMEOUT * 0.3)
    peer.socket.write(Buffer.concat([more('y', true), first(`m${i}-`)]))
  }
  await waitFor(() => peer.count(OPCODE.text) === 6, 2000, 'six echoes')
  t.equal(peer.closeCode(), null, 'still open')
  t.equal(app.wsStats.limits.fragmentTimeouts, 0)
  peer.destroy()
})

t.test('a socket the app has paused is not closed while the rest may be waiting unread; measured again once resumed', async (t) => {
  const lag = loopDelay()
  const { app, port, sockets } = await server(t)
  const peer = await RawPeer.connect(port, '/ws')
  peer.socket.write(first('a'))
  await waitFor(() => (sockets[0] as any)._receiver._fragmented !== 0, 2000, 'the first fragment to be read')
  sockets[0].pause()
  await sleep(3 * TIMEOUT)
  t.equal(peer.closeCode(), null, 'kept while paused')
  const resumedAt = performance.now()
  sockets[0].resume()
  await waitFor(() => peer.closeCode() !== null, 3000, 'the close frame')
  const elapsed = performance.now() - resumedAt
  const held = lag()
  t.ok(elapsed >= TIMEOUT && elapsed < 2 * TIMEOUT + MARGIN + held, `closed ${Math.round(elapsed)} ms after the resume`)
  t.equal(app.wsStats.limits.fragmentTimeouts, 1)
  peer.destroy()
})

t.test('a route may turn it off (Infinity)', async (t) => {
  // With a heartbeat, so the socket is visited all the same.
  const { app, port } = await server(t, { heartbeat: { intervalMs: 50 } })
  const patient = await RawPeer.connect(port, '/patient')
  const pongs = setInterval(() => { if (!patient.ended) patient.send(OPCODE.pong) }, 20)
  t.teardown(() => clearInterval(pongs))
  patient.socket.write(first('a'))
  await sleep(3 * TIMEOUT)
  t.equal(patient.closeCode(), null)
  patient.socket.write(more('b', true))
  await waitFor(() => patient.count(OPCODE.text) === 1, 2000, 'the echo')
  t.equal(patient.frames.find((frame) => frame.opcode === OPCODE.text)!.payload.toString(), 'ab')
  t.equal(app.wsStats.limits.fragmentTimeouts, 0)
  t.ok(patient.count(OPCODE.ping) > 0, 'visited by the heartbeat meanwhile')
  patient.destroy()
})
