import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { performance } from 'node:perf_hooks'
import t from 'tap'
import { kHeartbeatDueAt, kNextPingAt } from '../../lib/core/symbols'
import WebSocket from 'ws'
import { OPCODE, RawPeer, closeEvent, connect, loopDelay, sleep, start, waitFor, watch } from '../helpers/helpers'

const INTERVAL = 50
// A bound, not a timing: the scheduler's tick plus a noisy 2-core machine.
const MARGIN = 250

function echoRoute (config: object = {}) {
  return (app: import('fastify').FastifyInstance) => {
    app.get('/ws', { websocket: true, config: { reliable: config } }, (socket) => {
      socket.on('message', (data) => socket.send(data))
    })
  }
}

t.test('a peer that never answers pings is terminated within intervalMs + timeoutMs', async (t) => {
  const lag = loopDelay()
  const disconnects: any[] = []
  const { app, port } = await start({
    heartbeat: { intervalMs: INTERVAL, timeoutMs: INTERVAL },
    onDisconnect: (socket, info) => { disconnects.push({ socket, info }) }
  }, echoRoute())
  t.teardown(() => app.close())

  const startedAt = performance.now()
  const peer = await RawPeer.connect(port, '/ws')
  await waitFor(() => peer.ended, 2000, 'termination')
  const elapsed = performance.now() - startedAt
  // A ping one interval after it opened, then a timeout: never sooner.
  const held = lag()
  t.ok(elapsed >= INTERVAL * 2 && elapsed < INTERVAL * 2 + MARGIN + held, `terminated after ${Math.round(elapsed)} ms`)
  t.equal(peer.count(OPCODE.ping), 1, 'it was pinged once first')
  await waitFor(() => disconnects.length === 1)
  t.equal(disconnects[0].info.cause, 'heartbeat')
  t.equal(disconnects[0].info.code, 1006)
  t.equal(disconnects[0].socket.isAlive, false)
  const stats = app.wsStats
  t.equal(stats.heartbeat.timeouts, 1)
  t.equal(stats.connections.active, 0)
  t.equal(stats.closeCodes['1006'], 1)
})

t.test('a shorter timeoutMs ends a silent peer before the next ping', async (t) => {
  const lag = loopDelay()
  const { app, port } = await start({ heartbeat: { intervalMs: 400, timeoutMs: 40 } }, echoRoute())
  t.teardown(() => app.close())
  const startedAt = performance.now()
  const peer = await RawPeer.connect(port, '/ws')
  await waitFor(() => peer.ended, 3000, 'termination')
  const elapsed = performance.now() - startedAt
  const held = lag()
  t.ok(elapsed >= 400 + 40 && elapsed < 400 + 40 + MARGIN + held, `terminated after ${Math.round(elapsed)} ms`)
  t.equal(peer.count(OPCODE.ping), 1, 'one ping, then the deadline')
  t.equal(app.wsStats.heartbeat.timeouts, 1)
})

t.test('a live peer is never terminated, and its latency is measured', async (t) => {
  const { app, url } = await start({ heartbeat: { intervalMs: 20 } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('message', () => socket.send(JSON.stringify({ latencyMs: socket.latencyMs, isAlive: socket.isAlive })))
    })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  const seen = watch(ws)
  await sleep(20 * 15)
  t.notOk(seen.closed, 'still open after 15 intervals')
  t.ok(seen.pings >= 5, `pinged ${seen.pings} times`)
  ws.send('how am I?')
  const [reply] = await new Promise<any[]>((resolve) => ws.once('message', (data) => resolve([JSON.parse(data.toString())])))
  t.equal(reply.isAlive, true)
  t.type(reply.latencyMs, 'number')
  t.ok(reply.latencyMs >= 0 && reply.latencyMs < 1000)
  const { heartbeat } = app.wsStats
  t.ok(heartbeat.pingsSent >= 5)
  t.ok(heartbeat.pongsReceived >= heartbeat.pingsSent - 1, 'pongs follow pings')
  t.equal(heartbeat.timeouts, 0)
  t.type(heartbeat.latencyMs.p50, 'number')
  t.ok(heartbeat.latencyMs.p99! >= heartbeat.latencyMs.p50!)
  ws.close()
})

t.test('latency is null before the first pong', async (t) => {
  const { app, url } = await start({ heartbeat: { intervalMs: 60_000 } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.send(JSON.stringify({ latencyMs: socket.latencyMs }))
    })
  })
  t.teardown(() => app.close())
  const ws = new WebSocket(url('/ws'))
  const [data] = await new Promise<any[]>((resolve) => ws.once('message', (d) => resolve([d])))
  t.same(JSON.parse(data.toString()), { latencyMs: null })
  t.same(app.wsStats.heartbeat.latencyMs, { p50: null, p99: null })
  ws.close()
})

t.test('any frame from the peer is a sign of life', async (t) => {
  const { app, port } = await start({ heartbeat: { intervalMs: INTERVAL } }, echoRoute())
  t.teardown(() => app.close())
  const talker = await RawPeer.connect(port, '/ws')
  const pinger = await RawPeer.connect(port, '/ws')
  const silent = await RawPeer.connect(port, '/ws')
  const timer = setInterval(() => {
    talker.send(OPCODE.text, 'still here')
    pinger.send(OPCODE.ping)
  }, 10)
  await waitFor(() => silent.ended, 2000, 'the silent peer to be terminated')
  await sleep(INTERVAL * 6)
  clearInterval(timer)
  t.notOk(talker.ended, 'a peer sending messages (and no pongs) stays')
  t.notOk(pinger.ended, 'a peer sending pings (and no pongs) stays')
  t.ok(talker.count(OPCODE.ping) >= 2, 'it was still pinged')
  talker.destroy()
  pinger.destroy()
})

t.test('a burst of 1,000 connections is pinged in batches of at most 32, one interval after connecting', async (t) => {
  const INTERVAL_MS = 5000
  // Each socket's first ping time, read as it opens (a loaded machine may take longer than an interval to connect
  // them all, and a socket pinged already shows its next deadline), and when the ping left.
  const dueAt: number[] = []
  const openedAt: number[] = []
  const pingedAt: number[] = []
  const { app, url } = await start({ heartbeat: { intervalMs: INTERVAL_MS } }, (app) => {
    app.get('/ws', { websocket: true }, (socket: any) => {
      const i = dueAt.push(socket[kHeartbeatDueAt]) - 1
      openedAt.push(performance.now())
      const raw = socket._socket
      const write = raw.write
      raw.write = function (chunk: Buffer, ...rest: unknown[]) {
        if (chunk[0] === 0x89 && pingedAt[i] === undefined) pingedAt[i] = performance.now()
        return write.call(this, chunk, ...rest)
      }
    })
  })
  t.teardown(() => app.close())
  const clients = await Promise.all(Array.from({ length: 1000 }, () => connect(url('/ws'))))
  // Sockets due at the same moment are one batch: one scheduler visit writes them all. (Writes per turn of the
  // event loop would say less: a visit after a stall also catches up on the ticks it missed.)
  const batches = new Map<number, number>()
  for (const at of dueAt) batches.set(at, (batches.get(at) ?? 0) + 1)
  const sizes = [...batches.values()]
  t.ok(Math.max(...sizes) <= 32, `largest batch ${Math.max(...sizes)}`)
  t.ok(sizes.length >= 32, `${sizes.length} batches`)
  await waitFor(() => pingedAt.filter((at) => at !== undefined).length === 1000, 3 * INTERVAL_MS, 'every socket pinged')
  const early = pingedAt.filter((at, i) => at < openedAt[i] + INTERVAL_MS / 2).length
  t.equal(early, 0, 'no socket pinged in the first half interval after it opened')
  for (const ws of clients) ws.terminate()
})

t.test('one timer serves every connection, and none keeps the process alive', async (t) => {
  const { app, url } = await start({ heartbeat: { intervalMs: 1000 } }, echoRoute())
  const timers = (): number => process.getActiveResourcesInfo().filter((name) => name === 'Timeout').length
  const before = timers()
  const clients = await Promise.all(Array.from({ length: 50 }, () => connect(url('/ws'))))
  t.ok(timers() <= before + 1, `${timers() - before} timers for 50 connections`)
  const closing = clients.map(closeEvent)
  await app.close()
  await Promise.all(closing)
  t.equal(timers(), 0, 'no timer is left after close()')
})

t.test('heartbeat: false pings nobody', async (t) => {
  const { app, port } = await start({ heartbeat: false }, echoRoute())
  t.teardown(() => app.close())
  const peer = await RawPeer.connect(port, '/ws')
  await sleep(150)
  t.equal(peer.count(OPCODE.ping), 0)
  t.notOk(peer.ended)
  t.equal(app.wsStats.heartbeat.pingsSent, 0)
  peer.destroy()
})

t.test('with timeoutMs < intervalMs a live peer is checked and kept, pinged once per interval', async (t) => {
  const { app, url } = await start({ heartbeat: { intervalMs: 60, timeoutMs: 20 } }, echoRoute())
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  const seen = watch(ws)
  await sleep(60 * 10)
  t.notOk(seen.closed, 'still open after 10 intervals')
  t.ok(seen.pings >= 6 && seen.pings <= 11, `${seen.pings} pings in 10 intervals`)
  t.equal(app.wsStats.heartbeat.timeouts, 0)
  ws.close()
})

t.test('a stalled event loop does not kill a peer whose pong is waiting to be read', async (t) => {
  // Long enough for the peer, another process on a loaded machine, to answer each ping in time; the stall is
  // longer than the pong deadline.
  const PERIOD = 200
  const STALL = 300
  const sockets: any[] = []
  const { app, url } = await start({ heartbeat: { intervalMs: PERIOD } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => { sockets.push(socket) })
  })
  t.teardown(() => app.close())
  // The peer lives in another process, so it answers while this one is blocked.
  const peer = spawn(process.execPath, ['-e', `
    new (require('ws'))(process.argv[1]).on('open', () => console.log('open'))
  `, url('/ws')], { cwd: __dirname, stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => peer.kill())
  await once(peer.stdout!, 'data')
  await waitFor(() => sockets.length === 1)

  // Block the loop right after the next ping leaves, for longer than the pong deadline.
  const tcp = sockets[0]._socket
  const write = tcp.write
  let stalled = false
  let pingsAfterStall = -1
  tcp.write = function (chunk: Buffer, ...rest: unknown[]) {
    if (!stalled && chunk.length === 2 && chunk[0] === 0x89) {
      stalled = true
      setImmediate(() => {
        const until = Date.now() + STALL
        while (Date.now() < until);
        pingsAfterStall = app.wsStats.heartbeat.pingsSent
      })
    }
    return write.call(this, chunk, ...rest)
  }
  await waitFor(() => pingsAfterStall !== -1, 3000, 'a ping and the stall after it')
  await sleep(PERIOD * 2.5)
  const stats = app.wsStats
  t.equal(stats.heartbeat.timeouts, 0, 'the live peer was not terminated')
  t.equal(stats.connections.active, 1)
  const pings = stats.heartbeat.pingsSent - pingsAfterStall
  // Pinging resumes from the end of the stall, instead of firing the pings it missed in a burst.
  t.ok(pings >= 1 && pings <= 4, `${pings} pings in the ${PERIOD * 2.5} ms after the stall`)
})

t.test('a socket the server is closing is neither pinged nor timed out while the peer owes its close frame', async (t) => {
  const { app, port } = await start({ heartbeat: { intervalMs: INTERVAL } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => { socket.close(1000, 'bye') })
  })
  t.teardown(() => app.close())
  // A raw peer never answers the close frame: the socket stays closing until ws's close timer (5 s) ends it.
  const peer = await RawPeer.connect(port, '/ws')
  t.teardown(() => peer.destroy())
  await waitFor(() => peer.closeCode() === 1000, 2000, 'the close frame')
  await sleep(INTERVAL * 6)
  t.equal(peer.count(OPCODE.ping), 0, 'no ping after the close frame')
  t.equal(app.wsStats.heartbeat.timeouts, 0, 'not terminated as a dead peer')
  t.equal(peer.ended, false, 'still waiting for the close frame')
})

/** A server whose handler pauses every socket; `sockets` holds them, to resume. */
async function pausingServer (t: { teardown: (fn: () => unknown) => void }) {
  const sockets: WebSocket[] = []
  const started = await start({ heartbeat: { intervalMs: INTERVAL, timeoutMs: INTERVAL } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      sockets.push(socket)
      socket.pause()
    })
  })
  t.teardown(() => started.app.close())
  return { ...started, sockets }
}

t.test('a socket the app has paused is not timed out while its pong may be waiting unread; once resumed it is judged again', async (t) => {
  const lag = loopDelay()
  const { app, port, sockets } = await pausingServer(t)
  // A peer that never answers pings: only the pause keeps it.
  const peer = await RawPeer.connect(port, '/ws')
  await sleep(INTERVAL * 6)
  t.equal(peer.ended, false, 'kept while paused')
  t.equal(peer.count(OPCODE.ping), 1, 'pinged once: no new ping while the last one may be answered unread')
  t.equal(app.wsStats.heartbeat.timeouts, 0)
  const resumedAt = performance.now()
  sockets[0].resume()
  await waitFor(() => peer.ended, 2000, 'termination')
  const elapsed = performance.now() - resumedAt
  const held = lag()
  t.ok(elapsed < INTERVAL * 2 + MARGIN + held, `terminated ${Math.round(elapsed)} ms after resume()`)
  t.equal(app.wsStats.heartbeat.timeouts, 1)
  t.same(app.wsStats.closeCauses, { heartbeat: 1 })
})

t.test('a pause by the app is not measured as round-trip time', async (t) => {
  const { app, url, sockets } = await pausingServer(t)
  const ws = await connect(url('/ws'))
  await sleep(INTERVAL * 6)
  sockets[0].resume()
  await waitFor(() => app.wsStats.heartbeat.latencyMs.p99 !== null, 2000, 'a round trip measured after the pause')
  await sleep(INTERVAL * 3)
  const { p99 } = app.wsStats.heartbeat.latencyMs
  t.ok(p99! < INTERVAL * 3, `p99 ${p99} ms, not the ${INTERVAL * 6} ms pause`)
  t.equal(app.wsStats.heartbeat.timeouts, 0)
  ws.close()
})

t.test('visits for the other deadlines (idle, fragment) while a pong is outstanding leave a slow live peer alone until timeoutMs', async (t) => {
  // A ping at ~900 ms, its pong due by ~1650 ms and sent at ~1350 ms. Between the two, each peer's socket is
  // visited for another deadline, which must not judge the pong early:
  // - /idle: the idle deadline (1100 ms after the first message) finds it moved by a message the rate limit
  //   refused (activity, yet no message that reaches the app, so no sign of life);
  // - /fragment: the fragment timeout visits every 100 ms.
  const { app, port } = await start({
    heartbeat: { intervalMs: 900, timeoutMs: 750 },
    limits: { idleTimeoutMs: 1100, messagesPerSecond: 0.5, burst: 1, onRateLimit: 'drop' }
  }, (app) => {
    app.get('/idle', { websocket: true }, () => {})
    app.get('/fragment', { websocket: true, config: { reliable: { limits: { fragmentTimeoutMs: 100, idleTimeoutMs: Infinity } } } }, () => {})
  })
  t.teardown(() => app.close())
  const timers: NodeJS.Timeout[] = []
  t.teardown(() => { for (const timer of timers) clearTimeout(timer) })
  /** A peer that answers each ping 450 ms late, after sending a message at once if `talk`. */
  const slowPeer = async (path: string, talk: boolean): Promise<RawPeer> => {
    const peer = await RawPeer.connect(port, path)
    t.teardown(() => peer.destroy())
    if (talk) peer.send(OPCODE.text, 'first')
    let answered = 0
    const answering = setInterval(() => {
      while (answered < peer.count(OPCODE.ping)) {
        answered++
        if (talk) peer.send(OPCODE.text, 'refused')
        timers.push(setTimeout(() => peer.send(OPCODE.pong), 450))
      }
    }, 5)
    t.teardown(() => clearInterval(answering))
    return peer
  }
  const idle = await slowPeer('/idle', true)
  const fragment = await slowPeer('/fragment', false)
  await waitFor(() => app.wsStats.heartbeat.pongsReceived >= 2 || idle.ended || fragment.ended, 5000, 'both slow pongs')
  t.equal(idle.ended, false, '/idle: still connected')
  t.equal(fragment.ended, false, '/fragment: still connected')
  t.equal(app.wsStats.heartbeat.timeouts, 0)
  t.equal(app.wsStats.limits.idleTimeouts, 0)
  const refused = app.wsStats.limits.rateLimited
  t.ok(refused >= 1 && refused <= idle.count(OPCODE.ping), `the message after each ping was refused (${refused})`)
})

t.test('a duplicate or unsolicited pong does not measure the round trip again', async (t) => {
  const sockets: any[] = []
  const { app, port } = await start({ heartbeat: { intervalMs: 1000 } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => { sockets.push(socket) })
  })
  t.teardown(() => app.close())
  const peer = await RawPeer.connect(port, '/ws')
  t.teardown(() => peer.destroy())
  await waitFor(() => peer.count(OPCODE.ping) === 1, 3000, 'the first ping')
  peer.send(OPCODE.pong)
  peer.send(OPCODE.pong)
  await waitFor(() => app.wsStats.heartbeat.pongsReceived === 2, 2000, 'both pongs')
  const measured = sockets[0].latencyMs
  t.type(measured, 'number')
  await sleep(100)
  peer.send(OPCODE.pong)
  await waitFor(() => app.wsStats.heartbeat.pongsReceived === 3, 2000, 'the unsolicited pong')
  t.equal(sockets[0].latencyMs, measured, 'the round trip is the first answer\'s')
  const { p50, p99 } = app.wsStats.heartbeat.latencyMs
  t.equal(p99, p50, 'one round trip recorded')
})

t.test('pings keep the phase picked at connect: every ping is a whole number of intervals after the first', async (t) => {
  const INTERVAL_MS = 300
  const sockets: any[] = []
  const { app, url } = await start({ heartbeat: { intervalMs: INTERVAL_MS } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => { sockets.push(socket) })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  // When each ping left, the socket's next ping time: a drifting phase would take it from the moment of the visit.
  const nextPingAt: number[] = []
  ws.on('ping', () => nextPingAt.push(sockets[0][kNextPingAt]))
  await waitFor(() => nextPingAt.length === 6, 5000, 'six pings')
  ws.close()
  const steps = nextPingAt.slice(1).map((at, i) => (at - nextPingAt[i]) / INTERVAL_MS)
  const whole = steps.filter((step) => Math.abs(step - Math.round(step)) < 1e-6 && Math.round(step) >= 1)
  // A visit later than a whole interval (a stalled machine) starts the phase again: allow one.
  t.ok(whole.length >= steps.length - 1, `${whole.length} of ${steps.length} steps whole intervals: ${steps.map((step) => step.toFixed(3)).join(', ')}`)
})
