// The measurements behind the plugin's `compression: true` preset, on raw ws (no plugin):
//   node bench/deflate-grid.mjs wire [--messages N]
//     in one process, ws's own PerMessageDeflate compresses a stream of realistic messages of each kind (as one
//     socket would send them) for every setting of the grid: wire bytes and CPU per message. Memory is not measured
//     here: it needs a socket per stream and a process of its own.
//   node bench/deflate-grid.mjs memory [--sockets N] [--rounds N] [--soak S] [--only NAME,...]
//     a raw ws server and its clients in two processes per setting, the server's RSS after GC: before connecting,
//     after every socket sent and received a few compressed messages (warm-up), and after a soak; server CPU and
//     bytes written on the TCP sockets per message of each kind.
import { fork } from 'node:child_process'
import { createServer } from 'node:http'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import WebSocket, { WebSocketServer } from 'ws'
import { KINDS, messages } from './payloads.mjs'

// ws does not export it; its file is reached by path, for the grid only.
const { default: PerMessageDeflate } = await import(new URL('../node_modules/ws/lib/permessage-deflate.js', import.meta.url))
const self = fileURLToPath(import.meta.url)

/** A WebSocket frame's header for a payload of `length` bytes, server to client (unmasked). */
function frameHeader (length) {
  return length < 126 ? 2 : length < 65_536 ? 4 : 10
}

/** ws's perMessageDeflate options for one setting of the grid. */
export function wsOptions ({ wb, clientWb = wb, memLevel, level, chunkSize, takeover, threshold = 0 }) {
  return {
    threshold,
    serverMaxWindowBits: wb,
    clientMaxWindowBits: clientWb,
    serverNoContextTakeover: !takeover,
    clientNoContextTakeover: !takeover,
    zlibDeflateOptions: { level, memLevel, chunkSize },
    zlibInflateOptions: { chunkSize }
  }
}

function compressOne (deflate, text) {
  return new Promise((resolve, reject) => deflate.compress(Buffer.from(text), true, (err, data) => err ? reject(err) : resolve(data)))
}

async function wire ({ count }) {
  const grid = []
  for (const takeover of [true, false]) {
    for (const wb of [10, 11, 12, 15]) {
      for (const memLevel of [1, 2, 3, 4, 8]) {
        for (const level of [1, 3, 6]) grid.push({ wb, memLevel, level, chunkSize: 16_384, takeover })
      }
    }
  }
  // chunkSize only changes how the output is cut up: a spot check.
  for (const chunkSize of [1024, 4096]) grid.push({ wb: 11, memLevel: 3, level: 1, chunkSize, takeover: true })
  console.log('setting\tkind\tratio\tbytes/msg (wire, compressed)\tbytes/msg (wire, plain)\tCPU µs/msg')
  const rows = []
  for (const setting of grid) {
    for (const kind of KINDS) {
      const deflate = new PerMessageDeflate({ ...wsOptions(setting), isServer: true })
      deflate.accept([{ client_max_window_bits: [true] }])
      const source = messages(kind, 42)
      // The first messages of a socket find an empty window: warm the stream as a live socket's would be.
      for (let i = 0; i < 10; i++) await compressOne(deflate, source.next())
      const texts = Array.from({ length: count }, () => source.next())
      let plain = 0
      let compressed = 0
      const cpu = process.cpuUsage()
      for (const text of texts) {
        const out = await compressOne(deflate, text)
        compressed += out.length + frameHeader(out.length)
        plain += Buffer.byteLength(text) + frameHeader(Buffer.byteLength(text))
      }
      const used = process.cpuUsage(cpu)
      deflate.cleanup()
      const row = { ...setting, kind, ratio: compressed / plain, wireBytes: compressed / count, plainBytes: plain / count, cpuUs: (used.user + used.system) / count }
      rows.push(row)
      console.log(`${name(setting)}\t${kind}\t${row.ratio.toFixed(3)}\t${row.wireBytes.toFixed(0)}\t${row.plainBytes.toFixed(0)}\t${row.cpuUs.toFixed(1)}`)
    }
  }
  return rows
}

export function name ({ wb, clientWb, memLevel, level, chunkSize, takeover, off, defaults, noOffer, release }) {
  if (off) return 'off'
  if (defaults) return 'ws-defaults'
  return `wb${wb}${clientWb !== undefined && clientWb !== wb ? `/c${clientWb}` : ''}-m${memLevel}-l${level}-c${chunkSize}-${takeover ? 'ctx' : 'noctx'}` +
    `${noOffer ? '-nooffer' : ''}${release ? '-release' : ''}`
}

// ---- memory: server and clients in processes of their own ----

function sampleMemory () {
  global.gc()
  const m = process.memoryUsage()
  return { rss: m.rss, heapUsed: m.heapUsed, external: m.external }
}

async function serverProcess (setting) {
  const options = setting.off ? false : setting.defaults ? true : setting.noOffer ? { ...wsOptions(setting), clientMaxWindowBits: undefined } : wsOptions(setting)
  const server = createServer()
  const wss = new WebSocketServer({ server, perMessageDeflate: options })
  let received = 0
  wss.on('connection', (ws) => {
    ws.on('message', () => { received++ })
    if (setting.release) releaseAfterEachMessage(ws)
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const sources = Object.fromEntries(KINDS.map((kind) => [kind, messages(kind, 7)]))
  const written = () => {
    let bytes = 0
    for (const ws of wss.clients) bytes += ws._socket.bytesWritten
    return bytes
  }
  // One round: a fresh message of `kind` to every socket (each socket compresses its own copy, as ws does).
  const round = (kind) => new Promise((resolve) => {
    const text = sources[kind].next()
    let left = wss.clients.size
    for (const ws of wss.clients) ws.send(text, () => { if (--left === 0) resolve() })
  })
  process.on('message', async (message) => {
    let reply = {}
    if (message.cmd === 'sample') reply = { ...sampleMemory(), received, sockets: wss.clients.size, extensions: [...wss.clients][0]?.extensions ?? null }
    else if (message.cmd === 'rounds') {
      const before = written()
      const cpu = process.cpuUsage()
      const started = performance.now()
      for (let i = 0; i < message.rounds; i++) await round(message.kind)
      const used = process.cpuUsage(cpu)
      reply = { cpuUs: used.user + used.system, bytes: written() - before, messages: message.rounds * wss.clients.size, ms: performance.now() - started }
    }
    process.send({ id: message.id, ...reply })
  })
  process.send({ ready: true, port: server.address().port })
}

// Without context takeover ws resets a socket's zlib streams after each message but keeps them: this variant
// closes them instead (ws allocates them again for the next message), to see what memory that frees and what CPU it costs.
function releaseAfterEachMessage (ws) {
  const deflate = ws._extensions['permessage-deflate']
  if (deflate === undefined) return
  const compress = deflate._compress.bind(deflate)
  deflate._compress = (data, fin, callback) => compress(data, fin, (err, result) => {
    if (fin && deflate._deflate !== null) {
      deflate._deflate.close()
      deflate._deflate = null
    }
    callback(err, result)
  })
  const decompress = deflate._decompress.bind(deflate)
  deflate._decompress = (data, fin, callback) => decompress(data, fin, (err, result) => {
    if (fin && deflate._inflate !== null) {
      deflate._inflate.close()
      deflate._inflate = null
    }
    callback(err, result)
  })
}

async function clientProcess (setting, port, sockets) {
  // Browsers offer client_max_window_bits (Chrome) or not (Firefox, Safari) and compress every message.
  const offer = setting.off ? false : { threshold: 0, ...(setting.noOffer ? { clientMaxWindowBits: false } : {}) }
  const clients = []
  let received = 0
  for (let i = 0; i < sockets; i += 200) {
    clients.push(...await Promise.all(Array.from({ length: Math.min(200, sockets - i) }, () => new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: offer })
      ws.on('message', () => { received++ })
      ws.once('open', () => resolve(ws))
      ws.once('error', reject)
    }))))
  }
  const chat = messages('chat', 99)
  process.on('message', async (message) => {
    if (message.cmd === 'up') {
      for (let i = 0; i < message.count; i++) for (const ws of clients) ws.send(chat.next())
    }
    process.send({ id: message.id, received })
  })
  process.send({ ready: true })
}

function ask (child, cmd, extra = {}) {
  const id = Math.random()
  return new Promise((resolve) => {
    const onMessage = (m) => {
      if (m.id !== id) return
      child.off('message', onMessage)
      resolve(m)
    }
    child.on('message', onMessage)
    child.send({ id, cmd, ...extra })
  })
}

function ready (child) {
  return new Promise((resolve, reject) => {
    child.once('message', resolve)
    child.once('exit', (code) => reject(new Error(`exited with ${code}`)))
  })
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** One setting: RSS per socket after warm-up and after a soak, CPU and wire bytes per message of each kind. */
async function memoryRun (setting, { sockets, soakSeconds }) {
  const server = fork(self, ['server', JSON.stringify(setting)], { execArgv: ['--expose-gc'] })
  let client = null
  try {
    const { port } = await ready(server)
    const baseline = await ask(server, 'sample')
    client = fork(self, ['client', JSON.stringify(setting), String(port), String(sockets)])
    await ready(client)
    // Warm-up: every socket has sent and received compressed messages of each kind.
    await ask(client, 'up', { count: 3 })
    for (const kind of KINDS) await ask(server, 'rounds', { kind, rounds: 2 })
    await waitFor(async () => (await ask(server, 'sample')).received >= 3 * sockets)
    await sleep(200)
    const warm = await ask(server, 'sample')
    const perMessage = {}
    for (const kind of KINDS) {
      const r = await ask(server, 'rounds', { kind, rounds: { chat: 20, state: 10, snapshot: 3 }[kind] })
      perMessage[kind] = { cpuUs: r.cpuUs / r.messages, wireBytes: r.bytes / r.messages }
    }
    // Soak: mixed traffic both ways until soakSeconds pass.
    const end = performance.now() + soakSeconds * 1000
    let rounds = 0
    while (performance.now() < end) {
      await ask(client, 'up', { count: 1 })
      await ask(server, 'rounds', { kind: 'chat', rounds: 2 })
      await ask(server, 'rounds', { kind: 'state', rounds: 1 })
      if (rounds++ % 4 === 0) await ask(server, 'rounds', { kind: 'snapshot', rounds: 1 })
    }
    await sleep(200)
    const soak = await ask(server, 'sample')
    return {
      setting: name(setting),
      extensions: warm.extensions,
      warmRssPerSocket: (warm.rss - baseline.rss) / sockets,
      warmHeapPerSocket: (warm.heapUsed - baseline.heapUsed) / sockets,
      soakRssPerSocket: (soak.rss - baseline.rss) / sockets,
      soakOverWarm: (soak.rss - baseline.rss) / (warm.rss - baseline.rss),
      perMessage
    }
  } finally {
    client?.kill()
    server.kill()
  }
}

async function waitFor (condition, maxMs = 30_000) {
  const end = performance.now() + maxMs
  while (!(await condition()) && performance.now() < end) await sleep(20)
}

const MEMORY_GRID = [
  { off: true },
  { defaults: true },
  // chunkSize
  ...[1024, 4096, 16_384].map((chunkSize) => ({ wb: 11, memLevel: 3, level: 1, chunkSize, takeover: true })),
  // window bits
  ...[10, 12, 15].map((wb) => ({ wb, memLevel: 3, level: 1, chunkSize: 1024, takeover: true })),
  // memLevel
  ...[1, 2, 4, 8].map((memLevel) => ({ wb: 11, memLevel, level: 1, chunkSize: 1024, takeover: true })),
  // level
  ...[3, 6].map((level) => ({ wb: 11, memLevel: 3, level, chunkSize: 1024, takeover: true })),
  // context takeover off, and off with the zlib streams closed after each message
  { wb: 11, memLevel: 3, level: 1, chunkSize: 1024, takeover: false },
  { wb: 11, memLevel: 3, level: 1, chunkSize: 1024, takeover: false, release: true },
  // a client that does not offer client_max_window_bits: the server must inflate with a 32 KiB window
  { wb: 11, memLevel: 3, level: 1, chunkSize: 1024, takeover: true, noOffer: true }
]

const [command] = process.argv.slice(2)
if (command === 'server') {
  await serverProcess(JSON.parse(process.argv[3]))
} else if (command === 'client') {
  await clientProcess(JSON.parse(process.argv[3]), Number(process.argv[4]), Number(process.argv[5]))
} else {
  const { values } = parseArgs({
    args: process.argv.slice(3),
    options: {
      messages: { type: 'string', default: '100' },
      sockets: { type: 'string', default: '1000' },
      rounds: { type: 'string', default: '3' },
      soak: { type: 'string', default: '5' },
      only: { type: 'string' },
      json: { type: 'string' }
    }
  })
  if (command === 'wire') {
    const rows = await wire({ count: Number(values.messages) })
    if (values.json) (await import('node:fs')).writeFileSync(values.json, JSON.stringify(rows, null, 2))
  } else if (command === 'memory') {
    const only = values.only?.split(',')
    const grid = values.json ? JSON.parse(values.json) : MEMORY_GRID.filter((s) => only === undefined || only.includes(name(s)))
    console.log('setting\twarm RSS/socket\twarm heap/socket\tsoak RSS/socket\tsoak/warm\t' + KINDS.map((k) => `${k} µs/msg\t${k} B/msg`).join('\t'))
    for (let round = 0; round < Number(values.rounds); round++) {
      for (const setting of round % 2 === 0 ? grid : [...grid].reverse()) {
        const r = await memoryRun(setting, { sockets: Number(values.sockets), soakSeconds: Number(values.soak) })
        console.log([r.setting, r.warmRssPerSocket, r.warmHeapPerSocket, r.soakRssPerSocket].map((v) => typeof v === 'number' ? Math.round(v) : v).join('\t') +
          `\t${r.soakOverWarm.toFixed(2)}\t` + KINDS.map((k) => `${r.perMessage[k].cpuUs.toFixed(1)}\t${r.perMessage[k].wireBytes.toFixed(0)}`).join('\t') +
          (round === 0 && setting === grid[0] ? `\t${JSON.stringify(r.extensions)}` : ''))
      }
    }
  } else {
    console.error('usage: node bench/deflate-grid.mjs wire|memory [options]')
    process.exitCode = 1
  }
}
