// The load generator, in its own process: opens the clients, drives one
// scenario and reports its own CPU beside the server's samples (taken by the
// server itself and relayed by the orchestrator), so a saturated client shows.
import { createHistogram, performance } from 'node:perf_hooks'
import WebSocket from 'ws'

const [contender, port, scenarioJson, run] = process.argv.slice(2)
const scenario = JSON.parse(scenarioJson)
const isSocketIo = contender === 'socket.io'
const { io } = isSocketIo ? await import('socket.io-client') : {}

let nextId = 0
const pending = new Map()
process.on('message', (message) => {
  pending.get(message.id)(message)
  pending.delete(message.id)
})
/** Asks the server, through the orchestrator. */
function server (cmd, extra) {
  const id = nextId++
  return new Promise((resolve) => {
    pending.set(id, resolve)
    process.send({ id, cmd, ...extra })
  })
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// One client API over both protocols: send text, receive text, stop reading.
function connect (index) {
  // Each run has source addresses of its own, so it never meets the ports an
  // earlier run left in TIME_WAIT; past ~28k connections one address runs out.
  const localAddress = `127.${1 + (Number(run) % 250)}.${1 + Math.floor(index / 25_000)}.1`
  return new Promise((resolve, reject) => {
    if (isSocketIo) {
      const socket = io(`http://127.0.0.1:${port}`, { transports: ['websocket'], reconnection: false, forceNew: true, localAddress })
      const client = {
        send: (text) => socket.emit('m', text),
        onMessage: (listener) => socket.on('m', listener),
        pause: () => socket.io.engine.transport.ws._socket.pause(),
        close: () => socket.close()
      }
      socket.once('connect', () => resolve(client))
      socket.once('connect_error', reject)
    } else {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { perMessageDeflate: false, localAddress })
      const client = {
        send: (text) => ws.send(text),
        onMessage: (listener) => ws.on('message', (data) => listener(data)),
        pause: () => ws._socket.pause(),
        close: () => ws.terminate()
      }
      ws.once('open', () => resolve(client))
      ws.once('error', reject)
    }
  })
}

async function connectMany (count) {
  const clients = []
  const started = performance.now()
  const BATCH = 250
  for (let i = 0; i < count; i += BATCH) {
    const batch = []
    for (let j = i; j < Math.min(count, i + BATCH); j++) batch.push(connect(j))
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

const result = await scenarios[scenario.name](scenario)
process.send({ done: true, result }, () => process.exit(0))
