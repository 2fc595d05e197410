// `node bench/durable.mjs [--sessions N] [--messages M] [--modes memory,redis,...]` (after `npm run build`; needs
// redis-server)
// What `resume.durable` costs: one instance (its own process) with sessions on a redis-server, N reliable clients
// (ReliableWebSocket, in this process), each sending M messages of 64 B to the server, then the server sending M to
// each, then publishing M topic messages to all N, one a turn (each a keep per session when durable: nothing to batch
// it with). Per mode: the messages per second each way, the instance's CPU per message, Redis's CPU per message. Modes:
// the default store in memory (no Redis), RedisSessionStore without durable, durable with the default receiveWindow
// (64), and durable with receiveWindow 1 (durable-window-1). Figures in bench/notes.md ("Durable sessions").
import { fork } from 'node:child_process'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { startRedis } from './redis.mjs'

const require = createRequire(import.meta.url)
const self = fileURLToPath(import.meta.url)
const MODES = {
  memory: { store: false, resume: {} },
  redis: { store: true, resume: {} },
  durable: { store: true, resume: { durable: true } },
  'durable-window-1': { store: true, resume: { durable: true, receiveWindow: 1 } }
}
const PAYLOAD = 'x'.repeat(64)

if (process.argv[2] === 'server') await server(process.argv[3], JSON.parse(process.argv[4]))
else await orchestrate()

/** The instance: counts what its application receives, sends on request, and says what CPU it spent since a mark. */
async function server (redisUrl, mode) {
  const Fastify = require('fastify')
  const { Redis } = require('ioredis')
  const reliableWs = require('../dist/index.js')
  const app = Fastify()
  const client = mode.store ? new Redis(redisUrl) : null
  const sessionStore = client === null ? undefined : new reliableWs.RedisSessionStore(client)
  await app.register(reliableWs, { heartbeat: false, logging: { connections: false }, sessionStore, limits: { maxSessionsPerIp: Infinity } })
  const sessions = new Set()
  let received = 0
  let target = Infinity
  app.get('/s', { websocket: true, config: { reliable: { resume: { maxBufferedMessages: 100_000, maxBufferedBytes: 1 << 26, ...mode.resume } } } }, (socket) => {
    sessions.add(socket.session)
    socket.subscribe('all')
    socket.on('message', () => {
      if (++received === target) process.send({ in: true })
    })
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  let cpu = process.cpuUsage()
  process.on('message', async (message) => {
    if (message.cmd === 'mark') {
      cpu = process.cpuUsage()
      target = message.expect ?? Infinity
      received = 0
    } else if (message.cmd === 'send') {
      // Each session sent `count`, never more than 500 ahead of its client's acknowledgements.
      const sent = new Map([...sessions].map((session) => [session, 0]))
      const pump = () => {
        let left = false
        for (const [session, count] of sent) {
          let n = count
          while (n < message.count && session.unacknowledged < 500) {
            session.send(PAYLOAD)
            n++
          }
          sent.set(session, n)
          if (n < message.count) left = true
        }
        if (left) setTimeout(pump, 1)
      }
      pump()
    } else if (message.cmd === 'publish') {
      // One topic message a turn: every session has one message to keep each time, none to batch with.
      let left = message.count
      const publish = () => {
        app.wsPublish('all', PAYLOAD)
        if (--left > 0) setImmediate(publish)
      }
      publish()
    } else if (message.cmd === 'sample') {
      const used = process.cpuUsage(cpu)
      process.send({ cpuMs: (used.user + used.system) / 1000 })
    } else if (message.cmd === 'close') {
      await app.close()
      client?.disconnect()
      process.exit(0)
    }
  })
  process.send({ port: app.server.address().port })
}

async function orchestrate () {
  const { values } = parseArgs({ options: { sessions: { type: 'string', default: '50' }, messages: { type: 'string', default: '400' }, modes: { type: 'string', default: Object.keys(MODES).join(',') } } })
  const modes = values.modes.split(',')
  const sessions = Number(values.sessions)
  const messages = Number(values.messages)
  const total = sessions * messages
  const WebSocket = require('ws')
  const { ReliableWebSocket } = require('../dist/lib/client/index.js')
  const redis = await startRedis()
  const rows = []
  try {
    for (const [name, mode] of Object.entries(MODES).filter(([name]) => modes.includes(name))) {
      const child = fork(self, ['server', redis.url, JSON.stringify(mode)], { stdio: 'inherit' })
      const next = () => new Promise((resolve) => child.once('message', resolve))
      const { port } = await next()
      let got = 0
      const clients = []
      for (let i = 0; i < sessions; i++) {
        const ws = new ReliableWebSocket(`ws://127.0.0.1:${port}/s`, { WebSocket, queue: { maxMessages: messages + 10, maxBytes: Infinity } })
        ws.addEventListener('message', () => { got++ })
        clients.push(new Promise((resolve) => ws.addEventListener('open', () => resolve(ws), { once: true })))
      }
      const open = await Promise.all(clients)
      await new Promise((resolve) => setTimeout(resolve, 200))

      child.send({ cmd: 'mark', expect: total })
      const redisBefore = redis.cpuMs()
      const began = process.hrtime.bigint()
      const arrived = next()
      for (let k = 0; k < messages; k++) for (const ws of open) ws.send(PAYLOAD)
      await arrived
      const inSeconds = Number(process.hrtime.bigint() - began) / 1e9
      child.send({ cmd: 'sample' })
      const inCpu = (await next()).cpuMs
      const inRedis = redis.cpuMs() - redisBefore

      // The instance sends as `command` says until the clients have had `total`: how long, its CPU and Redis's.
      const toClients = async (command) => {
        child.send({ cmd: 'mark' })
        const redisBefore = redis.cpuMs()
        got = 0
        const began = process.hrtime.bigint()
        child.send(command)
        while (got < total) await new Promise((resolve) => setTimeout(resolve, 2))
        const seconds = Number(process.hrtime.bigint() - began) / 1e9
        child.send({ cmd: 'sample' })
        return { seconds, cpuMs: (await next()).cpuMs, redisMs: redis.cpuMs() - redisBefore }
      }
      const out = await toClients({ cmd: 'send', count: messages })
      // A topic to every session, one message a turn.
      const topic = await toClients({ cmd: 'publish', count: messages })
      for (const ws of open) ws.close()
      child.send({ cmd: 'close' })
      await new Promise((resolve) => child.once('exit', resolve))
      rows.push({
        mode: name,
        'client→server msg/s': Math.round(total / inSeconds),
        'server µs CPU/msg in': Number((inCpu * 1000 / total).toFixed(1)),
        'Redis µs CPU/msg in': Number((inRedis * 1000 / total).toFixed(1)),
        'server→client msg/s': Math.round(total / out.seconds),
        'server µs CPU/msg out': Number((out.cpuMs * 1000 / total).toFixed(1)),
        'Redis µs CPU/msg out': Number((out.redisMs * 1000 / total).toFixed(1)),
        'topic msg/s delivered': Math.round(total / topic.seconds),
        'server µs CPU/topic msg': Number((topic.cpuMs * 1000 / total).toFixed(1)),
        'Redis µs CPU/topic msg': Number((topic.redisMs * 1000 / total).toFixed(1))
      })
    }
  } finally {
    await redis.stop()
  }
  console.log(`${sessions} sessions × ${messages} messages of 64 B each way, then ${messages} topic messages to all ${sessions}, one a turn`)
  console.table(rows)
}
