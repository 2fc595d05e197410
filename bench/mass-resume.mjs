// `node bench/mass-resume.mjs [--sessions N] [--ends drain,crash] [--durable]` (after `npm run build`; needs redis-server)
// What the other instances go through when one that holds many sessions goes: three instances on one redis-server
// (sessions in RedisSessionStore, topics on the `redis` option), every client a ReliableWebSocket at the client's
// default backoff, all of them connected to the first instance; then that instance closes gracefully (`drain`: every
// session handed over) or is killed (`crash`: SIGKILL, nothing handed over), and each client comes back to one of the
// two others, in turn. Measured from the end of the first instance until every client is open again: how many
// resumed their session and how many began anew (with `--durable`, sessions with `resume.durable`: a crash loses none), the clients back per second, the busiest 100 ms, the survivors' CPU
// and event-loop delay, Redis's CPU and commands. Each instance and the clients run in processes of their own.
// Figures in bench/notes.md ("Mass resume").
import { fork } from 'node:child_process'
import { createRequire } from 'node:module'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { startRedis } from './redis.mjs'

const require = createRequire(import.meta.url)
const self = fileURLToPath(import.meta.url)
const [role] = process.argv.slice(2)

if (role === 'server') await server()
else if (role === 'clients') await clients()
else await orchestrate()

/** One instance: a route with sessions, CPU and loop delay sampled on request. */
async function server () {
  const Fastify = require('fastify')
  const { Redis } = require('ioredis')
  const reliableWs = require('../dist/index.js')
  const redisUrl = process.argv[3]
  const resume = process.argv[4] === 'durable' ? { durable: true } : true
  const app = Fastify()
  const client = new Redis(redisUrl)
  await app.register(reliableWs, { redis: redisUrl, sessionStore: new reliableWs.RedisSessionStore(client), limits: { maxSessionsPerIp: Infinity } })
  app.get('/s', { websocket: true, config: { reliable: { resume } } }, () => {})
  await app.listen({ port: 0, host: '127.0.0.1' })
  const delay = monitorEventLoopDelay({ resolution: 10 })
  let cpu = process.cpuUsage()
  process.on('message', async (message) => {
    if (message.cmd === 'mark') {
      delay.reset()
      delay.enable()
      cpu = process.cpuUsage()
      process.send({ id: message.id })
    } else if (message.cmd === 'sample') {
      const used = process.cpuUsage(cpu)
      process.send({ id: message.id, cpuMs: (used.user + used.system) / 1000, delayP99Ms: delay.percentile(99) / 1e6, delayMaxMs: delay.max / 1e6, sessions: app.wsStats.sessions })
    } else if (message.cmd === 'close') {
      await app.close()
      client.disconnect()
      process.send({ id: message.id, sessions: app.wsStats.sessions })
    }
  })
  process.send({ ready: true, port: app.server.address().port })
}

/** Every client, first to the first port; once it is gone, each one's next connection to the others, in turn. */
async function clients () {
  const WebSocket = require('ws')
  const { ReliableWebSocket } = require('../dist/lib/client/index.js')
  const [first, ...others] = JSON.parse(process.argv[3])
  const sessions = Number(process.argv[4])
  let survivors = null
  let turn = 0
  let back = []
  let lost = 0
  let spread = 0
  // Where the load balancer would send it: the first instance while it lives, then the others in turn. Source
  // addresses spread over 127.0.0.0/8 keep each below the ephemeral ports of one address.
  class Routed extends WebSocket {
    constructor (url, protocols, options) {
      const port = survivors === null ? first : survivors[turn++ % survivors.length]
      spread++
      super(url.replace(/:\d+\//, `:${port}/`), protocols, { ...options, localAddress: `127.0.${1 + (spread % 200)}.${2 + (spread % 50)}` })
    }
  }
  const all = []
  let open = 0
  for (let i = 0; i < sessions; i++) {
    const ws = new ReliableWebSocket(`ws://127.0.0.1:${first}/s`, { WebSocket: Routed })
    ws.addEventListener('open', () => {
      if (survivors === null) open++
      else back.push(performance.now())
    })
    ws.addEventListener('sessionlost', () => { lost++ })
    all.push(ws)
    if (i % 200 === 199) await new Promise((resolve) => setTimeout(resolve, 20))
  }
  while (open < sessions) await new Promise((resolve) => setTimeout(resolve, 50))
  process.send({ open })
  process.on('message', async (message) => {
    if (message.cmd !== 'gone') return
    survivors = others
    back = []
    lost = 0
    process.send({ id: message.id })
    const since = performance.now()
    while (back.length < sessions && performance.now() - since < 120_000) await new Promise((resolve) => setTimeout(resolve, 50))
    // A client whose session is lost reports it before it opens on its new one.
    process.send({ back: back.map((at) => at - since), resumed: back.length - lost, lost })
  })
}

async function orchestrate () {
  const { values: args } = parseArgs({ options: { sessions: { type: 'string', default: '10000' }, ends: { type: 'string', default: 'drain,crash' }, durable: { type: 'boolean', default: false } } })
  const sessions = Number(args.sessions)
  for (const end of args.ends.split(',')) console.log(JSON.stringify({ end, sessions, durable: args.durable, ...await run(end, sessions, args.durable) }))
}

function reply (child, message) {
  const id = Math.random()
  return new Promise((resolve, reject) => {
    const onMessage = (m) => {
      if (m.id !== id) return
      child.off('message', onMessage)
      resolve(m)
    }
    child.on('message', onMessage)
    child.once('exit', (code, signal) => reject(new Error(`exited (${code ?? signal}) before it answered ${message.cmd}`)))
    child.send({ ...message, id })
  })
}

function first (child, predicate) {
  return new Promise((resolve) => child.on('message', (m) => { if (predicate(m)) resolve(m) }))
}

async function run (end, sessions, durable) {
  const redis = await startRedis()
  const children = []
  try {
    const instances = [0, 1, 2].map(() => fork(self, ['server', redis.url, durable ? 'durable' : 'plain'], { stdio: 'inherit' }))
    children.push(...instances)
    const ports = (await Promise.all(instances.map((one) => first(one, (m) => m.ready)))).map((m) => m.port)
    const load = fork(self, ['clients', JSON.stringify(ports), String(sessions)], { stdio: 'inherit' })
    children.push(load)
    await first(load, (m) => m.open !== undefined)
    const { Redis } = require('ioredis')
    const admin = new Redis(redis.url)
    await admin.config('RESETSTAT')
    for (const survivor of instances.slice(1)) await reply(survivor, { cmd: 'mark' })
    const backs = first(load, (m) => m.back !== undefined)
    await reply(load, { cmd: 'gone' })
    const redisCpu = redis.cpuMs()
    const began = performance.now()
    const ended = end === 'drain' ? await reply(instances[0], { cmd: 'close' }) : instances[0].kill('SIGKILL')
    const { back, resumed, lost } = await backs
    const took = performance.now() - began
    const samples = await Promise.all(instances.slice(1).map((survivor) => reply(survivor, { cmd: 'sample' })))
    const stats = (await admin.info('commandstats')).split('\n').filter((line) => line.startsWith('cmdstat_'))
    // Redis counts the commands its scripts run too: the scripts themselves are the calls the instances made.
    const calls = (names) => stats.filter((line) => names === null || names.some((name) => line.startsWith(`cmdstat_${name}:`)))
      .reduce((total, line) => total + Number(/calls=(\d+)/.exec(line)[1]), 0)
    admin.disconnect()
    back.sort((a, b) => a - b)
    let busiest = 0
    for (let i = 0, j = 0; i < back.length; i++) {
      while (back[i] - back[j] > 100) j++
      busiest = Math.max(busiest, i - j + 1)
    }
    return {
      back: back.length,
      resumed,
      lost,
      handedOver: ended === true ? 0 : ended.sessions.handedOver,
      firstBackMs: Math.round(back[0]),
      lastBackMs: Math.round(back.at(-1)),
      perSecond: Math.round(back.length / ((back.at(-1) - back[0]) / 1000)),
      busiest100ms: busiest,
      survivorCpuMs: samples.map((s) => Math.round(s.cpuMs)),
      survivorDelayP99Ms: samples.map((s) => Number(s.delayP99Ms.toFixed(1))),
      survivorDelayMaxMs: samples.map((s) => Number(s.delayMaxMs.toFixed(1))),
      survivorSessions: samples.map((s) => ({ claimedRemote: s.sessions.claimedRemote, takenOver: s.sessions.takenOver, active: s.sessions.active, throttled: s.sessions.throttled, busy: s.sessions.busy, resumeRefused: s.sessions.resumeRefused })),
      redisCpuMs: Math.round(redis.cpuMs() - redisCpu),
      redisScripts: calls(['evalsha', 'eval']),
      redisCommands: calls(null),
      survivorCpuPerBackMs: Number((samples.reduce((total, sample) => total + sample.cpuMs, 0) / back.length).toFixed(3)),
      tookMs: Math.round(took)
    }
  } finally {
    for (const child of children) child.kill('SIGKILL')
    await redis.stop()
  }
}
