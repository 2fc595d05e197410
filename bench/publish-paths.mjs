// `node bench/publish-paths.mjs [--subscribers N] [--bytes B] [--rounds R] [--paths a,b,...]`
// The ways of sending one text to every socket of one server, alternated in one process so they meet the same
// sockets, heap and machine: the plugin's wsPublish, a loop of ws.send, the plugin's frame handed to ws's sender as
// header and payload apart (as the plugin did before) and as one Buffer (as it does), and the whole frame written
// straight to each TCP socket. Server CPU per socket from the call until every client has the message. The clients
// run in a child process. Figures in bench/notes.md ("Publish to 5,000 subscribers").
import { fork } from 'node:child_process'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import Fastify from 'fastify'
import WebSocket from 'ws'

const require = createRequire(import.meta.url)
const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    subscribers: { type: 'string', default: '5000' },
    bytes: { type: 'string', default: '100' },
    rounds: { type: 'string', default: '10' },
    paths: { type: 'string', default: 'publish,loop,frame2,frame1,raw' }
  }
})
const subscribers = Number(args.subscribers)

async function clients (port) {
  let received = 0
  let expected = Infinity
  for (let i = 0; i < subscribers; i += 250) {
    await Promise.all(Array.from({ length: Math.min(250, subscribers - i) }, (_, j) => new Promise((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`, { localAddress: `127.0.${1 + Math.floor((i + j) / 25_000)}.2` })
      ws.on('message', () => { if (++received === expected) process.send({ received: true }) })
      ws.once('open', resolve)
      ws.once('error', reject)
    })))
  }
  // Armed before each publish, so no message of the one before is counted for it.
  process.on('message', () => {
    received = 0
    expected = subscribers
    process.send({ armed: true })
  })
  process.send({ ready: true })
}

async function server () {
  const app = Fastify()
  await app.register(require('../dist/index.js'), { health: false })
  app.get('/ws', { websocket: true }, (socket) => { socket.subscribe('t') })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const child = fork(fileURLToPath(import.meta.url), ['clients', String(app.server.address().port), '--subscribers', args.subscribers])
  const next = () => new Promise((resolve) => child.once('message', resolve))
  await next()
  const sockets = [...app.websocketServer.clients]
  const frame = (text) => WebSocket.Sender.frame(Buffer.from(text), { fin: true, opcode: 1, mask: false, readOnly: false, rsv1: false })
  const paths = {
    publish: (text) => { app.wsPublish('t', text) },
    loop: (text) => { for (const ws of sockets) ws.send(text) },
    frame2: (text) => {
      const parts = frame(text)
      for (const ws of sockets) ws._sender.sendFrame(parts)
    },
    frame1: (text) => {
      const whole = [Buffer.concat(frame(text))]
      for (const ws of sockets) ws._sender.sendFrame(whole)
    },
    raw: (text) => {
      const whole = Buffer.concat(frame(text))
      for (const ws of sockets) ws._socket.write(whole)
    }
  }
  const names = args.paths.split(',')
  const once = async (name, i) => {
    const text = 'x'.repeat(Number(args.bytes) - 6) + String(i).padStart(6, '0')
    const armed = next()
    child.send({})
    await armed
    const received = next()
    const before = process.cpuUsage()
    paths[name](text)
    await received
    const used = process.cpuUsage(before)
    return used.user + used.system
  }
  for (const name of names) for (let i = 0; i < 3; i++) await once(name, i)
  const times = Object.fromEntries(names.map((name) => [name, []]))
  for (let round = 0; round < Number(args.rounds); round++) {
    for (const name of round % 2 === 0 ? names : [...names].reverse()) times[name].push(await once(name, round))
  }
  for (const name of names) {
    const sorted = times[name].sort((a, b) => a - b)
    const median = sorted[sorted.length >> 1]
    console.log(`${name.padEnd(8)} ${(median / 1000).toFixed(2)} ms per publish, ${(median / subscribers).toFixed(2)} µs per socket`)
  }
  child.kill()
  await app.close()
}

if (positionals[0] === 'clients') await clients(positionals[1])
else await server()
