import { once } from 'node:events'
import net from 'node:net'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import t from 'tap'
import { OPCODE, RawPeer, buildFrame, collect, connect, generator, sleep, start, upgradeRequest, waitFor } from '../helpers/helpers'

// Replay a failing run with FUZZ_SEED=<seed> npx tap test/wiring/fuzz.test.ts
const seed = process.env.FUZZ_SEED === undefined ? Math.floor(Math.random() * 2 ** 32) : Number(process.env.FUZZ_SEED)
const CONNECTIONS = 1000
const CONCURRENCY = 25

// A GC handle without starting tap's processes with --expose-gc.
setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

type Random = () => number
const int = (random: Random, max: number): number => Math.floor(random() * max)
const bytes = (random: Random, length: number): Buffer => Buffer.from(Array.from({ length }, () => int(random, 256)))
const pick = <T>(random: Random, items: readonly T[]): T => items[int(random, items.length)]

/** One frame: valid, or broken in one of the ways a hostile or buggy peer would break it. */
function fuzzFrame (random: Random): Buffer {
  const kind = int(random, 10)
  const payload = bytes(random, pick(random, [0, 1, 2, 5, 20, 125, 126, 300, 5000]))
  switch (kind) {
    case 0: return bytes(random, 1 + int(random, 40)) // garbage
    case 1: { // a valid frame with one bit flipped
      const frame = buildFrame({ opcode: OPCODE.text, payload: 'hello' })
      frame[int(random, frame.length)] ^= 1 << int(random, 8)
      return frame
    }
    case 2: return buildFrame({ opcode: int(random, 16), payload: payload.subarray(0, 130), fin: random() < 0.7, rsv: int(random, 8) })
    case 3: return buildFrame({ opcode: OPCODE.text, payload, mask: random() < 0.5 })
    case 4: { // a close frame with any code, maybe a broken reason
      const close = Buffer.alloc(2)
      close.writeUInt16BE(int(random, 5000))
      return buildFrame({ opcode: OPCODE.close, payload: Buffer.concat([close, payload.subarray(0, int(random, 20))]) })
    }
    case 5: return buildFrame({ opcode: OPCODE.binary, payload, length: payload.length + 1 + int(random, 70_000) }) // truncated
    case 6: return buildFrame({ opcode: pick(random, [OPCODE.text, 0x0]), payload: payload.subarray(0, 50), fin: random() < 0.5 })
    default: return buildFrame({ opcode: pick(random, [OPCODE.text, OPCODE.binary, OPCODE.ping, OPCODE.pong]), payload: payload.subarray(0, 100) })
  }
}

/** An upgrade request, broken or not. */
function fuzzHandshake (random: Random, port: number): Buffer {
  const request = Buffer.from(upgradeRequest(port, pick(random, ['/ws', '/nope', '/ws?x=1'])))
  switch (int(random, 6)) {
    case 0: return bytes(random, 1 + int(random, 200))
    case 1: return request.subarray(0, int(random, request.length))
    case 2: {
      for (let i = 0; i < 1 + int(random, 5); i++) request[int(random, request.length)] = int(random, 256)
      return request
    }
    case 3: return Buffer.from(request.toString().replace(/Sec-WebSocket-(Key|Version): .*\r\n/, pick(random, ['', 'Sec-WebSocket-Key: x\r\n', 'Sec-WebSocket-Version: 99\r\n'])))
    case 4: return Buffer.from(request.toString().replace('GET', pick(random, ['POST', 'HEAD', 'G\u0000T', ''])))
    default: return Buffer.concat([request, bytes(random, int(random, 50))])
  }
}

async function hostileConnection (random: Random, port: number): Promise<void> {
  if (random() < 0.3) {
    const socket = net.connect(port, '127.0.0.1')
    socket.on('error', () => {})
    socket.on('data', () => {})
    await once(socket, 'connect')
    socket.write(fuzzHandshake(random, port))
    await Promise.race([once(socket, 'close'), sleep(int(random, 60))])
    socket.destroy()
    return
  }
  const peer = await RawPeer.connect(port, '/ws')
  peer.socket.on('error', () => {})
  const frames = Array.from({ length: 1 + int(random, 15) }, () => fuzzFrame(random))
  if (random() < 0.5) {
    peer.socket.write(Buffer.concat(frames))
  } else {
    for (const frame of frames) {
      peer.socket.write(frame)
      if (random() < 0.3) await sleep(1)
    }
  }
  const ending = int(random, 3)
  if (ending === 0) peer.socket.end()
  else if (ending === 1) await Promise.race([waitFor(() => peer.ended, 200).catch(() => {}), sleep(int(random, 40))])
  peer.destroy()
}

t.test(`seeded fuzz: malformed frames and handshakes from ${CONNECTIONS} connections (seed ${seed})`, async (t) => {
  t.comment(`seed ${seed} (replay with FUZZ_SEED=${seed})`)
  const logs: string[] = []
  const { app, url, port } = await start({
    heartbeat: { intervalMs: 200 },
    // The fuzzed handshakes end themselves within 60 ms; the timeout must not cut the valid ones a loaded machine
    // is slow to answer (300 ms did, with the suite at double parallelism).
    limits: { handshakeTimeoutMs: 3000, maxPayload: 64 * 1024 }
  }, (app) => {
    app.get('/ws', { websocket: true, config: { reliable: { limits: { maxPayload: 4096 } } } }, (socket) => {
      socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
    })
  }, { logger: { level: 'error', stream: { write: (line: string) => logs.push(line) } } })
  t.teardown(() => app.close())
  const good = await connect(url('/ws'))

  // Each connection draws from its own generator, so what it sends does not depend on how connections interleave.
  const run = async (runSeed: number, connections: number): Promise<void> => {
    let next = 0
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next < connections) {
        await hostileConnection(generator(runSeed + Math.imul(next++, 0x9e3779b9)), port)
      }
    }))
    await waitFor(() => app.wsStats.connections.active === 1, 5000, `every hostile socket to close (seed ${seed})`)
  }
  // A first round warms up the code paths, so the baseline is taken with everything compiled and allocated once.
  await run(seed ^ 0x5eed, 50)
  gc()
  const baseline = process.memoryUsage().heapUsed
  const startedAt = Date.now()
  await run(seed, CONNECTIONS)
  const elapsed = Date.now() - startedAt

  const replies = collect(good)
  good.send('still served')
  await waitFor(() => replies.includes('still served'), 3000, `the good client's echo (seed ${seed})`)
  t.pass(`the good client is still echoed after ${elapsed} ms of fuzzing`)
  const stats = app.wsStats
  t.ok(stats.limits.protocolErrors > 50, `malformed input was seen and counted: ${stats.limits.protocolErrors} protocol errors (seed ${seed})`)
  t.ok(stats.connections.opened > CONNECTIONS / 2, `${stats.connections.opened} sockets opened`)
  t.same(logs, [], `nothing logged as an error: malformed input is the peer's fault (seed ${seed})`)

  await sleep(50)
  for (let i = 0; i < 3; i++) gc()
  const growth = process.memoryUsage().heapUsed - baseline
  t.ok(growth < 4 * 1024 * 1024, `heap after GC within 4 MiB of its baseline: ${(growth / 1024).toFixed(0)} KiB (seed ${seed})`)

  const closed = once(good, 'close')
  good.close()
  await closed
  await waitFor(() => app.wsStats.connections.active === 0, 3000, `active back to 0 (seed ${seed})`)
  t.equal(app.wsStats.connections.active, 0)
})
