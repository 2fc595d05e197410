// One contender's server, in its own process. The orchestrator (run.mjs) drives
// it over IPC and every figure about the server is sampled here, inside it.
import { createServer } from 'node:http'
import { createRequire } from 'node:module'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import Fastify from 'fastify'
import fastifyWebsocket from '@fastify/websocket'
import WebSocket, { WebSocketServer } from 'ws'
import { messages } from './payloads.mjs'

const require = createRequire(import.meta.url)
const [contender, configJson] = process.argv.slice(2)
/**
 * heartbeatMs: the interval for contenders that have one (null = each one's default); floodBytes: slow-consumer
 * message size; attacks: the plugin at its default options, with the routes the attack scenarios aim at; sink: the
 * route counts what it receives instead of echoing it (the compression scenarios); topic: every socket subscribes to
 * one topic (Socket.IO: joins one room) as it connects (the publish scenarios); redis: a redis:// URL for the
 * instances of the cross-instance publish scenario (the plugin's `redis` option, Socket.IO's Redis adapters), else null;
 * loopDelay: sample the event loop's delay (the scenarios that report it).
 */
const config = JSON.parse(configJson)
const DEFAULT_HEARTBEAT_MS = 30_000
const heartbeatMs = config.heartbeatMs ?? DEFAULT_HEARTBEAT_MS
const TOPIC = 't'
const ROOM = 'room'

let received = 0
function echo (socket) {
  if (config.sink) socket.on('message', () => { received++ })
  else socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
}

async function fastifyServer (register) {
  const app = Fastify()
  await register(app)
  app.get('/ws', { websocket: true }, (socket) => {
    echo(socket)
    if (contender === 'timer') timerHeartbeat(socket)
    if (config.topic) socket.subscribe(TOPIC)
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { port: app.server.address().port, app, sockets: () => app.websocketServer.clients, stats: () => app.wsStats ?? null }
}

// The seed guide's pattern: one interval per connection.
function timerHeartbeat (ws) {
  let isAlive = true
  ws.on('pong', () => { isAlive = true })
  const heartbeat = setInterval(() => {
    if (!isAlive) {
      ws.terminate()
      return
    }
    isAlive = false
    ws.ping()
  }, heartbeatMs)
  ws.on('close', () => clearInterval(heartbeat))
}

// The ws README's pattern: one interval sweeping every client.
function sweepHeartbeat (wss) {
  wss.on('connection', (ws) => {
    ws.isAlive = true
    ws.on('pong', function () { this.isAlive = true })
  })
  const interval = setInterval(() => {
    wss.clients.forEach((ws) => {
      if (ws.isAlive === false) return ws.terminate()
      ws.isAlive = false
      ws.ping()
    })
  }, heartbeatMs)
  wss.on('close', () => clearInterval(interval))
}

// Not a design anyone would ship: the least a server on Node and ws can do to ping every socket once an interval.
// Each ping's two bytes go straight to the TCP socket, a slice of the sockets every few ms so the pace stays even,
// and the pongs are parsed by ws and ignored: no bookkeeping, no timeout. It is the floor under every heartbeat
// design, so the keep-alive table shows how much of a contender's cost is the ping and pong I/O itself.
function pingFloor (wss) {
  const PING = Buffer.from([0x89, 0x00])
  let sockets = []
  let cursor = 0
  let credit = 0
  let last = performance.now()
  setInterval(() => {
    const now = performance.now()
    credit += (now - last) / heartbeatMs * wss.clients.size
    last = now
    for (; credit >= 1; credit--) {
      if (cursor === sockets.length) {
        sockets = [...wss.clients]
        cursor = 0
        if (sockets.length === 0) break
      }
      const ws = sockets[cursor++]
      if (ws.readyState === 1) ws._socket.write(PING)
    }
  }, 5)
}

async function rawWsServer (setUp = () => {}) {
  const server = createServer()
  const wss = new WebSocketServer({ server })
  wss.on('connection', echo)
  setUp(wss)
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { port: server.address().port, sockets: () => wss.clients, stats: () => null }
}

// The attack scenarios' server: the plugin registered with no options at all, an echo route, and a route with
// sessions whose handler sends each new socket 64 KiB of fresh text (kept by the session until acknowledged).
async function attackServer () {
  const { randomBytes } = await import('node:crypto')
  const app = Fastify()
  await app.register(require('../dist/index.js'))
  app.get('/ws', { websocket: true }, (socket) => echo(socket))
  app.get('/session', { websocket: true, config: { reliable: { resume: true } } }, (socket) => {
    socket.send(randomBytes(49_152).toString('base64'))
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  return { port: app.server.address().port, sockets: () => app.websocketServer.clients, stats: () => app.wsStats }
}

const pluginServer = () => fastifyServer((app) => app.register(require('../dist/index.js'), {
  heartbeat: { intervalMs: heartbeatMs },
  health: false,
  ...(config.redis ? { redis: config.redis } : {})
}))

// Socket.IO 4 on the websocket transport alone, with the adapter made by `adapter()` (null: its in-memory adapter).
async function socketIoServer (adapter = () => null) {
  const { Server: SocketIoServer } = await import('socket.io')
  const made = await adapter()
  const server = createServer()
  const io = new SocketIoServer(server, {
    transports: ['websocket'],
    serveClient: false,
    ...(made === null ? {} : { adapter: made }),
    ...(config.heartbeatMs ? { pingInterval: config.heartbeatMs, pingTimeout: config.heartbeatMs } : {})
  })
  io.on('connection', (socket) => {
    socket.on('m', (payload) => socket.emit('m', payload))
    if (config.topic) socket.join(ROOM)
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { port: server.address().port, io, stats: () => null }
}

// An ioredis client of the Socket.IO adapters', ready before the server listens.
async function ioredis () {
  const { Redis } = await import('ioredis')
  const client = new Redis(config.redis)
  await new Promise((resolve, reject) => client.once('ready', resolve).once('error', reject))
  return client
}

const contenders = {
  plugin: () => config.attacks ? attackServer() : pluginServer(),
  // The plugin's server, its sockets subscribed as the plugin's are, publishing by a loop of ws.send instead.
  'ws-loop': pluginServer,
  // A reference for the publish scenario, as floor is for keep-alive: the same server and sockets, each TCP socket
  // written the whole frame (one Buffer built once) with nothing else, no check and no bookkeeping.
  'write-floor': pluginServer,
  // Compression as the plugin's preset has it; the client's offer is what the load process sends.
  'plugin-compression': () => fastifyServer((app) => app.register(require('../dist/index.js'), {
    heartbeat: { intervalMs: heartbeatMs },
    health: false,
    compression: true
  })),
  'fastify-websocket': () => fastifyServer((app) => app.register(fastifyWebsocket)),
  // @fastify/websocket's guide: `perMessageDeflate: true`, which is ws's defaults.
  'fastify-websocket-deflate': () => fastifyServer((app) => app.register(fastifyWebsocket, { options: { perMessageDeflate: true } })),
  timer: () => fastifyServer((app) => app.register(fastifyWebsocket)),
  sweep: () => fastifyServer(async (app) => {
    await app.register(fastifyWebsocket)
    app.addHook('onReady', async () => sweepHeartbeat(app.websocketServer))
  }),
  ws: () => rawWsServer(),
  floor: () => rawWsServer(pingFloor),
  'socket.io': () => socketIoServer(),
  // The Redis adapter's documented setup: a publishing client and a subscribing duplicate.
  'socket.io-redis': () => socketIoServer(async () => {
    const { createAdapter } = await import('@socket.io/redis-adapter')
    const pub = await ioredis()
    return createAdapter(pub, pub.duplicate())
  }),
  'socket.io-redis-streams': () => socketIoServer(async () => {
    const { createAdapter } = await import('@socket.io/redis-streams-adapter')
    return createAdapter(await ioredis())
  })
}

let server
try {
  server = await contenders[contender]()
} catch (err) {
  // A plugin built before an option existed refuses it: the run reports the contender as not measured.
  if (err.code !== 'FST_RELIABLE_WS_INVALID_OPTION' || !/unknown option/.test(err.message)) throw err
  process.send({ unsupported: err.message }, () => process.exit(0))
  await new Promise(() => {})
}
// Only for the scenarios that report the loop's delay: sampling it every millisecond costs ~24 ms of CPU a second,
// which every contender pays alike but which would weigh on a scenario that measures CPU over idle seconds.
const loopDelay = config.loopDelay ? monitorEventLoopDelay({ resolution: 1 }) : null
loopDelay?.enable()
const loopP99Ms = () => loopDelay === null ? null : loopDelay.percentile(99) / 1e6
const loopMaxMs = () => loopDelay === null ? null : loopDelay.max / 1e6
// Under attack the RSS between two samples matters too: the highest seen (without GC) since the last sample.
let peakRss = 0
if (config.attacks) setInterval(() => { peakRss = Math.max(peakRss, process.memoryUsage.rss()) }, 10).unref()

function sample () {
  global.gc()
  const memory = process.memoryUsage()
  const result = {
    cpu: process.cpuUsage(),
    rss: memory.rss,
    heapUsed: memory.heapUsed,
    external: memory.external,
    loopP99Ms: loopP99Ms(),
    loopMaxMs: loopMaxMs(),
    connections: server.io ? server.io.engine.clientsCount : server.sockets().size,
    port: server.port,
    received,
    wsStats: server.stats(),
    peakRss: Math.max(peakRss, memory.rss)
  }
  loopDelay?.reset()
  peakRss = 0
  return result
}

// A cheap look, without GC, for a load process polling for a condition: the bytes of unfinished messages that
// ws holds (the fragments each socket's parser has received so far) and the counters.
function peek () {
  let fragmentBytes = 0
  for (const socket of server.sockets?.() ?? []) {
    for (const fragment of socket._receiver?._fragments ?? []) fragmentBytes += fragment.length
  }
  return { rss: process.memoryUsage.rss(), connections: server.io ? server.io.engine.clientsCount : server.sockets().size, fragmentBytes, received, wsStats: server.stats() }
}

function broadcast (text) {
  const start = performance.timeOrigin + performance.now()
  if (server.io) server.io.emit('m', text)
  else for (const socket of server.sockets()) socket.send(text)
  return { start }
}

// One message to every subscriber, each contender's way: the plugin's wsPublish to the topic (its memory broker),
// a loop of ws.send over the same sockets, Socket.IO's emit to the room, or the frame's bytes alone.
function publish (text) {
  if (server.io) {
    server.io.to(ROOM).emit('m', text)
  } else if (contender === 'ws-loop') {
    for (const socket of server.sockets()) socket.send(text)
  } else if (contender === 'write-floor') {
    const frame = Buffer.concat(WebSocket.Sender.frame(Buffer.from(text), { fin: true, opcode: 1, mask: false, readOnly: false, rsv1: false }))
    for (const socket of server.sockets()) socket._socket.write(frame)
  } else {
    server.app.wsPublish(TOPIC, text).catch((err) => { console.error(err); process.exit(1) })
  }
  return {}
}

/**
 * Publishes `count` messages to the topic (Socket.IO: emits them to the room) at `rate` per second, each `bytes` long
 * and starting with its number (`first` on) and the time it was published, in ms since the epoch by this machine's
 * clock (`performance.timeOrigin + performance.now()`, as the subscribers read it): `<n> <ms> xxx…`. Returns once
 * every one is published (the plugin: once the broker holds it).
 */
async function publishPaced ({ count, rate, bytes, first }) {
  const started = performance.now()
  const published = []
  for (let i = 0; i < count; i++) {
    const wait = started + i * 1000 / rate - performance.now()
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
    const head = `${first + i} ${(performance.timeOrigin + performance.now()).toFixed(3)} `
    const text = head + 'x'.repeat(bytes - head.length)
    if (server.io) server.io.to(ROOM).emit('m', text)
    else published.push(server.app.wsPublish(TOPIC, text))
  }
  await Promise.all(published)
  return {}
}

/** Wire bytes the server has written on its websockets' TCP sockets (the plugin counts them in wsStats). */
function bytesWritten () {
  const stats = server.stats()
  if (stats !== null) return stats.bytes.sent
  let bytes = 0
  for (const socket of server.sockets()) bytes += socket._socket?.bytesWritten ?? 0
  return bytes
}

// Every socket's bytes queued in ws (awaiting zlib or the TCP socket): broadcasts wait for the slowest reader
// to get below this, so that no contender drops or queues without bound, and every message sent is delivered.
const STREAM_QUEUE_LIMIT = 16_384
const sources = new Map()

async function queuedAtMost (bytes) {
  for (;;) {
    let queued = 0
    for (const socket of server.sockets()) if (socket.bufferedAmount > queued) queued = socket.bufferedAmount
    if (queued <= bytes) return
    await new Promise((resolve) => setTimeout(resolve, 1))
  }
}

/**
 * Broadcasts fresh messages of `kind` (one JSON string sent to every socket, each socket compressing its own copy)
 * for `seconds`, as fast as the slowest reader takes them. Returns the server's CPU, the messages it sent and
 * received, and the wire bytes it wrote meanwhile.
 */
async function stream ({ kind, seconds, uploadEvery }) {
  if (!sources.has(kind)) sources.set(kind, messages(kind, 7))
  const source = sources.get(kind)
  const cpu = process.cpuUsage()
  const bytesBefore = bytesWritten()
  const receivedBefore = received
  const end = performance.now() + seconds * 1000
  let sent = 0
  let plainBytes = 0
  while (performance.now() < end) {
    const text = source.next()
    for (const socket of server.sockets()) socket.send(text)
    sent += server.sockets().size
    plainBytes += Buffer.byteLength(text) * server.sockets().size
    await queuedAtMost(STREAM_QUEUE_LIMIT)
    // Nor faster than the server reads what its clients send up for it: compressed uploads wait in ws's zlib queue,
    // and a server that outruns them measures its backlog, not its steady state. A stall of 1 s lets it go on.
    const owed = (slack) => (sent / uploadEvery) - (received - receivedBefore) > slack
    const slack = server.sockets().size * (2 + STREAM_QUEUE_LIMIT / (Buffer.byteLength(text) * uploadEvery))
    for (let last = received, since = performance.now(); owed(slack) && performance.now() - since < 1000;) {
      await new Promise((resolve) => setTimeout(resolve, 1))
      if (received !== last) {
        last = received
        since = performance.now()
      }
    }
    await new Promise((resolve) => setImmediate(resolve))
  }
  // What was sent is counted once it is written: zlib's queue and ws's are emptied first.
  await queuedAtMost(0)
  const used = process.cpuUsage(cpu)
  const stats = server.stats()
  return {
    cpuUs: used.user + used.system,
    sent,
    received: received - receivedBefore,
    plainBytes,
    wireBytes: bytesWritten() - bytesBefore,
    dropped: stats === null ? null : stats.messages.dropped
  }
}

// Keeps sending fresh strings (as an app serialising its updates would) to
// every client until `seconds` pass, yielding to the event loop between
// batches so timers and I/O run; stops early past `stopAtRss` so a contender
// with no limit cannot take the machine down.
function flood ({ seconds, bytes, stopAtRss }) {
  const base = 'x'.repeat(bytes - 12)
  const baseline = process.memoryUsage()
  const end = performance.now() + seconds * 1000
  let sent = 0
  let peakRss = baseline.rss
  let peakQueued = 0
  let stoppedEarly = false
  return new Promise((resolve) => {
    const step = () => {
      for (let i = 0; i < 16; i++) {
        const text = base + String(sent++).padStart(12, '0')
        if (server.io) server.io.emit('m', text)
        else for (const socket of server.sockets()) socket.send(text)
      }
      const rss = process.memoryUsage.rss()
      if (rss > peakRss) peakRss = rss
      if (!server.io) {
        for (const socket of server.sockets()) if (socket.bufferedAmount > peakQueued) peakQueued = socket.bufferedAmount
      }
      if (rss > stopAtRss) stoppedEarly = true
      if (stoppedEarly || performance.now() >= end) {
        resolve({ sent, peakRssGrowth: peakRss - baseline.rss, peakQueued: server.io ? null : peakQueued, stoppedEarly, wsStats: server.stats() })
      } else {
        setImmediate(step)
      }
    }
    step()
  })
}

process.on('message', async (message) => {
  let reply
  if (message.cmd === 'sample') reply = sample()
  else if (message.cmd === 'peek') reply = peek()
  else if (message.cmd === 'broadcast') reply = broadcast(message.text)
  else if (message.cmd === 'publish') reply = publish(message.text)
  else if (message.cmd === 'publishPaced') reply = await publishPaced(message)
  // CPU and the loop delay since the last sample, without the GC a sample forces.
  else if (message.cmd === 'cpu') reply = { cpu: process.cpuUsage(), loopP99Ms: loopP99Ms(), loopMaxMs: loopMaxMs() }
  else if (message.cmd === 'flood') reply = await flood(message)
  else if (message.cmd === 'stream') reply = await stream(message)
  process.send({ id: message.id, ...reply })
})
process.on('disconnect', () => process.exit(0))
process.send({ ready: true, port: server.port })
