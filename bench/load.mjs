// The load generator, in its own process: opens the clients, drives one
// scenario and reports its own CPU beside the server's samples (taken by the
// server itself and relayed by the orchestrator), so a saturated client shows.
import { randomBytes } from 'node:crypto'
import { connect as tcpConnect } from 'node:net'
import { createHistogram, performance } from 'node:perf_hooks'
import WebSocket from 'ws'
import { messages } from './payloads.mjs'

// `ports`: the server's port, or the instances' ports (comma-separated) of the cross-instance scenario.
const [contender, portList, scenarioJson, run] = process.argv.slice(2)
const ports = portList.split(',')
const [port] = ports
const scenario = JSON.parse(scenarioJson)
const isSocketIo = contender.startsWith('socket.io')
const { io } = isSocketIo ? await import('socket.io-client') : {}

let nextId = 0
const pending = new Map()
process.on('message', (message) => {
  pending.get(message.id)(message)
  pending.delete(message.id)
})
/** Asks the server (with several instances, the one numbered `instance`), through the orchestrator. */
function server (cmd, extra, instance = 0) {
  const id = nextId++
  return new Promise((resolve) => {
    pending.set(id, resolve)
    process.send({ id, cmd, instance, ...extra })
  })
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// One client API over both protocols: send text, receive text, stop reading.
function connect (index, to) {
  // Each run (each load process) has source addresses of its own, so it never meets the ports an earlier run left in
  // TIME_WAIT; each address takes 10,000 connections at most, well under its ~28k ephemeral ports.
  const localAddress = `127.${1 + (Number(run) % 250)}.${1 + Math.floor(index / 10_000)}.1`
  return new Promise((resolve, reject) => {
    if (isSocketIo) {
      const socket = io(`http://127.0.0.1:${to}`, { transports: ['websocket'], reconnection: false, forceNew: true, localAddress })
      const client = {
        send: (text) => socket.emit('m', text),
        onMessage: (listener) => socket.on('m', listener),
        pause: () => socket.io.engine.transport.ws._socket.pause(),
        close: () => socket.close()
      }
      socket.once('connect', () => resolve(client))
      socket.once('connect_error', reject)
    } else {
      // ws's default offer (perMessageDeflate: true) asks for client_max_window_bits, as Chrome's does.
      const ws = new WebSocket(`ws://127.0.0.1:${to}/ws`, { perMessageDeflate: scenario.offerDeflate === true, localAddress })
      const client = {
        send: (text) => ws.send(text),
        onMessage: (listener) => ws.on('message', (data) => listener(data)),
        pause: () => ws._socket.pause(),
        close: () => ws.terminate(),
        extensions: () => ws.extensions
      }
      ws.once('open', () => resolve(client))
      ws.once('error', reject)
    }
  })
}

/** `count` clients, spread in turn over the servers on `to` (the one server, unless given). */
async function connectMany (count, to = [port]) {
  const clients = []
  const started = performance.now()
  const BATCH = 250
  for (let i = 0; i < count; i += BATCH) {
    const batch = []
    for (let j = i; j < Math.min(count, i + BATCH); j++) batch.push(connect(j, to[j % to.length]))
    clients.push(...await Promise.all(batch))
  }
  return { clients, setupPerSecond: count / ((performance.now() - started) / 1000) }
}

function cpuMs (from, to) {
  return (to.user - from.user + to.system - from.system) / 1000
}

async function measured (fn) {
  const serverBefore = await server('sample')
  const loadBefore = process.cpuUsage()
  const started = performance.now()
  const extra = await fn()
  const seconds = (performance.now() - started) / 1000
  const serverAfter = await server('sample')
  return {
    seconds,
    serverCpuMs: cpuMs(serverBefore.cpu, serverAfter.cpu),
    loadCpuMs: cpuMs(loadBefore, process.cpuUsage()),
    serverAfter,
    ...extra
  }
}

let negotiated = null

const scenarios = {
  async echo ({ connections, inFlight, bytes, seconds, warmupSeconds }) {
    const { clients } = await connectMany(connections)
    const text = 'x'.repeat(bytes)
    const rtt = createHistogram()
    let counting = false
    let running = true
    let messages = 0
    let outstanding = 0
    for (const client of clients) {
      // Echoes come back in order: a ring of send times per connection.
      const sentAt = new Float64Array(inFlight)
      let head = 0
      let tail = 0
      client.onMessage(() => {
        outstanding--
        if (counting) {
          messages++
          rtt.record(Math.max(1, Math.round((performance.now() - sentAt[head]) * 1000)))
        }
        head = (head + 1) % inFlight
        if (!running) return
        sentAt[tail] = performance.now()
        tail = (tail + 1) % inFlight
        outstanding++
        client.send(text)
      })
      for (let i = 0; i < inFlight; i++) {
        sentAt[tail] = performance.now()
        tail = (tail + 1) % inFlight
        outstanding++
        client.send(text)
      }
    }
    await sleep(warmupSeconds * 1000)
    const result = await measured(async () => {
      counting = true
      messages = 0
      await sleep(seconds * 1000)
      counting = false
      return {}
    })
    running = false
    while (outstanding > 0) await sleep(10)
    for (const client of clients) client.close()
    return {
      messagesPerSecond: messages / result.seconds,
      rttP50Ms: rtt.percentile(50) / 1000,
      rttP99Ms: rtt.percentile(99) / 1000,
      serverCpuUsPerMessage: result.serverCpuMs * 1000 / messages,
      loadCpuUsPerMessage: result.loadCpuMs * 1000 / messages
    }
  },

  async idle ({ connections, settleSeconds }) {
    const before = await server('sample')
    const { clients, setupPerSecond } = await connectMany(connections)
    negotiated = clients[0]?.extensions?.().includes('permessage-deflate') ?? false
    await sleep(settleSeconds * 1000)
    const after = await server('sample')
    for (const client of clients) client.close()
    return {
      connections: after.connections,
      setupPerSecond,
      rssPerConnection: (after.rss - before.rss) / connections,
      heapPerConnection: (after.heapUsed - before.heapUsed) / connections
    }
  },

  // One of a load process per instance, with this instance's share of the connections. Memory is against the
  // instance's own baseline just before its clients connect, after GC; the heartbeat window starts once every load
  // process has all its clients open and a settle has passed, and ends before any of them closes its clients. The
  // window's CPU and loop delay are read without GC at its end.
  async 'idle-cluster' ({ connections, settleSeconds, seconds }) {
    const before = await server('sample')
    const { clients, setupPerSecond } = await connectMany(connections)
    await server('barrier')
    await sleep(settleSeconds * 1000)
    const held = await server('sample')
    // Each load process's samples must come from the instance its clients are on, not another's.
    if (held.port !== Number(port)) throw new Error(`sampled the instance on port ${held.port}, not ${port}`)
    const loadBefore = process.cpuUsage()
    const started = performance.now()
    await sleep(seconds * 1000)
    const after = await server('cpu')
    const elapsed = (performance.now() - started) / 1000
    const loadCpu = cpuMs(loadBefore, process.cpuUsage())
    const { connections: left } = await server('peek')
    await server('barrier')
    for (const client of clients) client.close()
    return {
      opened: connections,
      connections: held.connections,
      connectionsLeft: left,
      baselineRssBytes: before.rss,
      rssBytes: held.rss,
      rssGrowthBytes: held.rss - before.rss,
      heapGrowthBytes: held.heapUsed - before.heapUsed,
      rssPerConnection: (held.rss - before.rss) / connections,
      heapPerConnection: (held.heapUsed - before.heapUsed) / connections,
      serverCpuMsPerSecond: cpuMs(held.cpu, after.cpu) / elapsed,
      loopDelayP99Ms: after.loopP99Ms,
      loopDelayMaxMs: after.loopMaxMs,
      loadCpuMsPerSecond: loadCpu / elapsed,
      setupPerSecond
    }
  },

  async keepalive ({ connections, seconds, settleSeconds }) {
    const { clients } = await connectMany(connections)
    await sleep(settleSeconds * 1000)
    const result = await measured(() => sleep(seconds * 1000))
    for (const client of clients) client.close()
    return {
      connectionsLeft: result.serverAfter.connections,
      serverCpuMsPerSecond: result.serverCpuMs / result.seconds,
      loadCpuMsPerSecond: result.loadCpuMs / result.seconds,
      loopDelayP99Ms: result.serverAfter.loopP99Ms,
      loopDelayMaxMs: result.serverAfter.loopMaxMs
    }
  },

  async fanout ({ connections, broadcasts, bytes }) {
    const { clients } = await connectMany(connections)
    const text = 'x'.repeat(bytes)
    let received = 0
    let lastAt = 0
    let done = null
    for (const client of clients) {
      client.onMessage(() => {
        if (++received === connections) {
          lastAt = performance.timeOrigin + performance.now()
          done()
        }
      })
    }
    const times = []
    const result = await measured(async () => {
      for (let round = 0; round < broadcasts; round++) {
        received = 0
        const all = new Promise((resolve) => { done = resolve })
        const { start } = await server('broadcast', { text })
        await all
        times.push(lastAt - start)
      }
      return {}
    })
    for (const client of clients) client.close()
    times.sort((a, b) => a - b)
    return {
      lastReceiptMs: times[Math.floor(times.length / 2)],
      serverCpuMsPerBroadcast: result.serverCpuMs / broadcasts
    }
  },

  // Server CPU read without the GC a sample forces: a full collection over thousands of sockets would be counted in
  // the window, more for the contender with the larger heap.
  async publish ({ connections, publishes, warmups, bytes }) {
    const { clients } = await connectMany(connections)
    let received = 0
    let lastAt = 0
    let done = null
    for (const client of clients) {
      client.onMessage((data) => {
        if (data.length !== bytes) throw new Error(`a subscriber got ${data.length} B, not ${bytes}`)
        if (++received === connections) {
          lastAt = performance.now()
          done()
        }
      })
    }
    const publishOnce = async () => {
      received = 0
      const all = new Promise((resolve) => { done = resolve })
      const start = performance.now()
      await server('publish', { text: 'x'.repeat(bytes) })
      await all
      return lastAt - start
    }
    for (let i = 0; i < warmups; i++) await publishOnce()
    await server('sample')
    const before = (await server('cpu')).cpu
    const times = []
    for (let i = 0; i < publishes; i++) times.push(await publishOnce())
    const after = (await server('cpu')).cpu
    const { connections: subscribed } = await server('peek')
    for (const client of clients) client.close()
    times.sort((a, b) => a - b)
    const cpu = cpuMs(before, after)
    return {
      subscribers: subscribed,
      serverCpuMsPerPublish: cpu / publishes,
      serverCpuUsPerDelivery: cpu * 1000 / (publishes * connections),
      lastReceiptMs: times[Math.floor(times.length / 2)]
    }
  },

  // Subscribers spread evenly over the instances, one publisher on the first at a fixed rate, below saturation so the
  // latency is the path's and not a queue's. Each message carries its number and the time it was published, read by
  // the subscribers on the same machine's clock. Server CPU is the instances' together, read without GC, from the
  // first measured publish until the last subscriber has the last message; Redis's CPU is read beside it.
  async 'publish-cluster' ({ connections, publishes, rate, warmups, bytes, settleSeconds, maxWaitSeconds }) {
    const { clients } = await connectMany(connections, ports)
    const latency = createHistogram()
    const expected = publishes * connections
    let delivered = 0
    let misordered = 0
    let warmed = 0
    let done = null
    const all = new Promise((resolve) => { done = resolve })
    for (const client of clients) {
      let last = 0
      let warm = false
      client.onMessage((data) => {
        const receivedAt = performance.timeOrigin + performance.now()
        if (data.length !== bytes) throw new Error(`a subscriber got ${data.length} B, not ${bytes}`)
        const [number, publishedAt] = (typeof data === 'string' ? data.slice(0, 40) : data.toString('latin1', 0, 40)).split(' ')
        const n = Number(number)
        if (n === 0) {
          if (!warm) warmed++
          warm = true
          return
        }
        if (n <= last) misordered++
        last = n
        latency.record(Math.max(1, Math.round((receivedAt - Number(publishedAt)) * 1000)))
        if (++delivered === expected) done()
      })
    }
    // Warm-up messages (numbered 0) until every subscriber has had one: the plugin's instances subscribe to a topic's
    // Redis channel once its first local subscriber comes, so the first messages may pass an instance by.
    for (let i = 0; i < warmups || warmed < connections; i++) {
      if (i === 100) throw new Error(`after 100 warm-up messages ${connections - warmed} subscribers had none`)
      await server('publishPaced', { count: 1, rate, bytes, first: 0 })
      await sleep(1000 / rate)
    }
    await sleep(settleSeconds * 1000)
    const cpus = () => Promise.all(ports.map((_, instance) => server('cpu', {}, instance)))
    const before = await cpus()
    const redisBefore = await server('redisCpu')
    const loadBefore = process.cpuUsage()
    const started = performance.now()
    await server('publishPaced', { count: publishes, rate, bytes, first: 1 })
    const publishSeconds = (performance.now() - started) / 1000
    // Whatever has not arrived by then is counted lost (every contender's delivery is at-most-once on this path).
    await Promise.race([all, sleep(maxWaitSeconds * 1000)])
    const after = await cpus()
    const redisAfter = await server('redisCpu')
    const loadCpu = cpuMs(loadBefore, process.cpuUsage())
    const serverCpuMs = before.reduce((sum, { cpu }, i) => sum + cpuMs(cpu, after[i].cpu), 0)
    const peeks = await Promise.all(ports.map((_, instance) => server('peek', {}, instance)))
    for (const client of clients) client.close()
    return {
      deliveredPerCpuSecond: delivered / (serverCpuMs / 1000),
      latencyP50Ms: latency.percentile(50) / 1000,
      latencyP99Ms: latency.percentile(99) / 1000,
      latencyMaxMs: latency.max / 1000,
      serverCpuUsPerDelivery: serverCpuMs * 1000 / delivered,
      redisCpuMs: redisAfter.cpuMs - redisBefore.cpuMs,
      loadCpuUsPerDelivery: loadCpu * 1000 / delivered,
      publishedPerSecond: (publishes - 1) / publishSeconds,
      delivered,
      lost: expected - delivered,
      misordered,
      subscribers: peeks.reduce((sum, { connections }) => sum + connections, 0)
    }
  },

  // Idle sockets whose clients offered permessage-deflate: what negotiating it costs before any message.
  async 'compression-idle' (scenario) {
    const result = await scenarios.idle(scenario)
    return { ...result, negotiated }
  },

  async 'compression-active' ({ connections, kind, warmSeconds, soakSeconds, uploadEvery }) {
    const baseline = await server('sample')
    const { clients } = await connectMany(connections)
    const chat = messages('chat', 99)
    let received = 0
    let uploads = 0
    let uploading = true
    for (const client of clients) {
      let count = 0
      client.onMessage(() => {
        received++
        if (uploading && ++count % uploadEvery === 0) {
          uploads++
          client.send(chat.next())
        }
      })
    }
    // Compressed uploads wait in ws's zlib queue (process-wide, concurrencyLimit at a time) while the server is busy
    // broadcasting: memory is sampled once the server has caught up with them, so it is what stays, not what waits.
    const caughtUp = async () => {
      uploading = false
      const backlog = uploads - (await server('peek')).received
      const started = performance.now()
      await waitUntil(async () => (await server('peek')).received >= uploads, 60_000, 20)
      uploading = true
      return { backlog, seconds: (performance.now() - started) / 1000 }
    }
    // Every socket has sent and received compressed messages (where negotiated) and zlib has settled.
    await server('stream', { kind, seconds: warmSeconds, uploadEvery })
    await caughtUp()
    const warm = await server('sample')
    const soak = await server('stream', { kind, seconds: soakSeconds, uploadEvery })
    const { backlog, seconds: catchUpSeconds } = await caughtUp()
    const after = await server('sample')
    for (const client of clients) client.close()
    const perConnection = (sample) => (sample.rss - baseline.rss) / connections
    return {
      uploadBacklog: backlog,
      catchUpSeconds,
      negotiated: clients[0].extensions().includes('permessage-deflate'),
      // From warm-up to caught up: the uploads queued in the soak cost their CPU after it.
      serverCpuUsPerMessage: cpuMs(warm.cpu, after.cpu) * 1000 / (soak.sent + after.received - warm.received),
      messagesSent: soak.sent,
      messagesReceived: after.received - warm.received,
      plainBytesPerMessage: soak.plainBytes / soak.sent,
      wireBytesPerMessage: soak.wireBytes / soak.sent,
      warmRssPerConnection: perConnection(warm),
      warmHeapPerConnection: (warm.heapUsed - baseline.heapUsed) / connections,
      soakRssPerConnection: perConnection(after),
      soakOverWarm: perConnection(after) / perConnection(warm),
      dropped: soak.dropped,
      clientsReceived: received
    }
  },

  async slow ({ seconds, bytes, stopAtRss }) {
    const [client] = (await connectMany(1)).clients
    client.pause()
    const flood = await server('flood', { seconds, bytes, stopAtRss })
    client.close()
    return {
      sent: flood.sent,
      peakRssGrowthBytes: flood.peakRssGrowth,
      peakQueuedBytes: flood.peakQueued,
      stoppedEarly: flood.stoppedEarly,
      dropped: flood.wsStats ? flood.wsStats.messages.dropped : null
    }
  }
}

// Raw TCP for the attacks, each from 127.0.0.1 (no source address of their own: they must all be one client's).
// No localAddress either, so the kernel picks ports by the whole 4-tuple and TIME_WAIT from earlier runs is no matter.
function rawConnection () {
  return new Promise((resolve, reject) => {
    const socket = tcpConnect(Number(port), '127.0.0.1')
    socket.once('connect', () => {
      socket.off('error', reject)
      socket.on('error', () => {})
      resolve(socket)
    })
    socket.once('error', reject)
  })
}

/** A raw websocket: the upgrade written by hand, resolved with the socket and whatever followed the 101's head. */
async function rawWebSocket (path, protocol) {
  const socket = await rawConnection()
  socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
    `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n` +
    (protocol ? `Sec-WebSocket-Protocol: ${protocol}\r\n` : '') + '\r\n')
  let head = Buffer.alloc(0)
  const rest = await new Promise((resolve, reject) => {
    const onData = (chunk) => {
      head = Buffer.concat([head, chunk])
      const end = head.indexOf('\r\n\r\n')
      if (end === -1) return
      socket.off('data', onData)
      socket.off('close', onClose)
      const status = head.subarray(0, head.indexOf('\r\n')).toString()
      if (!status.includes(' 101 ')) reject(new Error(`upgrade refused: ${status}`))
      else resolve(head.subarray(end + 4))
    }
    const onClose = () => reject(new Error('closed during the upgrade'))
    socket.on('data', onData)
    socket.once('close', onClose)
  })
  return { socket, rest }
}

/** A client's frame: masked, as RFC 6455 requires (one key per frame built; the attack may reuse the frame). */
function maskedFrame (opcode, payload, fin = true) {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload
  const length = data.length
  const header = length < 126 ? Buffer.from([0, 0x80 | length]) : length < 0x10000 ? Buffer.from([0, 0x80 | 126, length >> 8, length & 0xff]) : Buffer.alloc(10)
  if (length >= 0x10000) {
    header[1] = 0x80 | 127
    header.writeBigUInt64BE(BigInt(length), 2)
  }
  header[0] = (fin ? 0x80 : 0) | opcode
  const key = randomBytes(4)
  const masked = Buffer.allocUnsafe(length)
  for (let i = 0; i < length; i++) masked[i] = data[i] ^ key[i & 3]
  return Buffer.concat([header, key, masked])
}

/** Calls `onFrame(opcode, payload)` for each (unmasked) frame the server sends on `socket`, starting with `rest`. */
function readFrames (socket, rest, onFrame) {
  let buffer = rest
  const parse = () => {
    while (buffer.length >= 2) {
      let length = buffer[1] & 0x7f
      let offset = 2
      if (length === 126) {
        if (buffer.length < 4) return
        length = buffer.readUInt16BE(2)
        offset = 4
      } else if (length === 127) {
        if (buffer.length < 10) return
        length = Number(buffer.readBigUInt64BE(2))
        offset = 10
      }
      if (buffer.length < offset + length) return
      onFrame(buffer[0] & 0x0f, buffer.subarray(offset, offset + length))
      buffer = buffer.subarray(offset + length)
    }
  }
  socket.on('data', (chunk) => {
    buffer = buffer.length === 0 ? chunk : Buffer.concat([buffer, chunk])
    parse()
  })
  parse()
}

async function waitUntil (condition, maxMs, everyMs = 50) {
  const end = performance.now() + maxMs
  while (!(await condition())) {
    if (performance.now() >= end) return false
    await sleep(everyMs)
  }
  return true
}

function growth (baseline, after) {
  return { rssGrowthBytes: after.rss - baseline.rss, heapGrowthBytes: after.heapUsed - baseline.heapUsed, peakRssGrowthBytes: after.peakRss - baseline.rss, baselineRssBytes: baseline.rss }
}

const attacks = {
  // Subprotocol pings from a peer that never reads the pongs.
  async pingFlood ({ maxUploadBytes, maxSeconds }) {
    const baseline = await server('sample')
    const { socket } = await rawWebSocket('/ws', 'reliable-ws.v1')
    socket.pause()
    const batch = Buffer.concat(Array.from({ length: 10_000 }, () => maskedFrame(0x1, '\u0000{"t":"ping"}')))
    let uploaded = 0
    let closed = false
    socket.once('close', () => { closed = true })
    const started = performance.now()
    const end = started + maxSeconds * 1000
    while (!closed && !socket.destroyed && uploaded < maxUploadBytes && performance.now() < end) {
      const flushed = socket.write(batch)
      uploaded += batch.length
      if (!flushed) await Promise.race([new Promise((resolve) => socket.once('drain', resolve)), sleep(50)])
    }
    const terminated = await waitUntil(async () => (await server('peek')).connections === 0, 5000)
    socket.destroy()
    const after = await server('sample')
    return {
      ...growth(baseline, after),
      uploadedBytes: uploaded,
      terminated,
      pingFloods: after.wsStats.limits.pingFloods,
      seconds: (performance.now() - started) / 1000
    }
  },

  // Sessions opened and left, one after another, from one address: each stays away for ttlMs.
  async sessions ({ connections, concurrency, maxSeconds }) {
    const baseline = await server('sample')
    const started = performance.now()
    const end = started + maxSeconds * 1000
    let opened = 0
    let failed = 0
    const one = () => new Promise((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/session`, 'reliable-ws.v1', { perMessageDeflate: false })
      ws.once('message', (data, isBinary) => {
        if (!isBinary && data[0] === 0) ws.close()
      })
      ws.once('error', () => { failed++ })
      ws.once('close', resolve)
    })
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (opened < connections && performance.now() < end) {
        opened++
        await one()
      }
    }))
    const seconds = (performance.now() - started) / 1000
    await waitUntil(async () => (await server('peek')).connections === 0, 5000)
    const after = await server('sample')
    const sessions = after.wsStats.sessions
    return {
      ...growth(baseline, after),
      opened,
      failed,
      sessionsActive: sessions.active,
      sessionsEvicted: sessions.evicted,
      sessionsRejected: sessions.rejected,
      sessionBufferedBytes: sessions.bufferedBytes,
      seconds
    }
  },

  // Connections that send half a request line's headers and then nothing.
  async halfSent ({ connections, settleSeconds, handshakeTimeoutMs, graceSeconds }) {
    const baseline = await server('sample')
    const sockets = []
    let open = 0
    const firstAt = performance.now()
    for (let i = 0; i < connections; i += 250) {
      const batch = await Promise.all(Array.from({ length: Math.min(250, connections - i) }, () => rawConnection()))
      for (const socket of batch) {
        open++
        socket.once('close', () => { open-- })
        socket.write('GET / HTTP/1.1\r\nHost: x\r\n')
        sockets.push(socket)
      }
    }
    const lastAt = performance.now()
    await sleep(settleSeconds * 1000)
    const held = await server('sample')
    const openWhileHeld = open
    // Every connection is due handshakeTimeoutMs after it was accepted.
    await sleep(Math.max(0, lastAt + handshakeTimeoutMs + graceSeconds * 1000 - performance.now()))
    const openAfterTimeout = open
    const after = await server('sample')
    for (const socket of sockets) socket.destroy()
    return {
      ...growth(baseline, held),
      openWhileHeld,
      openAfterTimeout,
      handshakeTimeouts: after.wsStats.limits.handshakeTimeouts,
      rssGrowthAfterTimeoutBytes: after.rss - baseline.rss,
      seconds: (lastAt - firstAt) / 1000
    }
  },

  // Websockets that each send the first fragment of a text message and never the rest; they answer pings.
  async fragments ({ connections, bytes, holdSeconds, maxSeconds }) {
    const baseline = await server('sample')
    const fragment = maskedFrame(0x1, Buffer.alloc(bytes, 'x'), false)
    const peers = []
    let open = 0
    let pongs = 0
    for (let i = 0; i < connections; i += 50) {
      peers.push(...await Promise.all(Array.from({ length: Math.min(50, connections - i) }, async () => {
        const { socket, rest } = await rawWebSocket('/ws')
        open++
        socket.once('close', () => { open-- })
        readFrames(socket, rest, (opcode, payload) => {
          if (opcode !== 0x9) return
          pongs++
          socket.write(maskedFrame(0xa, payload))
        })
        socket.write(fragment)
        return socket
      })))
    }
    // Held once the server's parsers have every fragment (or whatever they will have).
    const expected = connections * bytes
    const received = await waitUntil(async () => (await server('peek')).fragmentBytes >= expected, maxSeconds * 1000)
    const held = await server('sample')
    const openWhileHeld = open
    await sleep(holdSeconds * 1000)
    const later = await server('peek')
    const result = {
      ...growth(baseline, held),
      allReceived: received,
      openWhileHeld,
      openAfterHold: open,
      fragmentBytesHeld: later.fragmentBytes,
      pongs,
      seconds: holdSeconds
    }
    for (const socket of peers) socket.destroy()
    return result
  }
}

scenarios.attacks = (scenario) => attacks[scenario.attack](scenario)

const result = await scenarios[scenario.name](scenario)
process.send({ done: true, result }, () => process.exit(0))
