// `npm run bench [-- --quick | --smoke] [--out DIR] [--only SCENARIO,...] [--contenders NAME,...] [--rounds N]`
// Each round starts every contender's server in a fresh process (A B A B …),
// drives it from a separate load process, and keeps the medians.
import { fork } from 'node:child_process'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { KINDS } from './payloads.mjs'
import { redisSkipReason, startRedis } from './redis.mjs'
import { renderMarkdown, slowConsumerViolations } from './report.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    smoke: { type: 'boolean', default: false },
    out: { type: 'string' },
    only: { type: 'string' },
    rounds: { type: 'string' },
    contenders: { type: 'string' }
  }
})
const mode = args.smoke ? 'smoke' : args.quick ? 'quick' : 'full'
const outDir = args.out ?? here

const CONTENDERS = args.contenders?.split(',') ?? ['plugin', 'fastify-websocket', 'ws', 'timer', 'sweep', 'socket.io']
// A reference rather than a contender: the least any heartbeat can cost (server.mjs, pingFloor). Keep-alive only.
const KEEPALIVE_CONTENDERS = args.contenders === undefined ? [...CONTENDERS, 'floor'] : CONTENDERS
// Compression: the plugin off (its clients still offer the extension) and with its preset, against bare
// @fastify/websocket with the guide's `perMessageDeflate: true` (ws's defaults) and without.
const COMPRESSION_CONTENDERS = args.contenders?.split(',') ?? ['plugin', 'plugin-compression', 'fastify-websocket-deflate', 'fastify-websocket']
// Publish to one topic: the plugin's wsPublish, a loop of ws.send over the plugin's same sockets, Socket.IO's room,
// and the floor under any of them: the frame's bytes written to each TCP socket and nothing else.
const PUBLISH_CONTENDERS = args.contenders?.split(',') ?? ['plugin', 'ws-loop', 'socket.io', 'write-floor']
// Publish across three instances through one redis-server: the plugin's `redis` option against Socket.IO with each of
// its two Redis adapters.
const CLUSTER_CONTENDERS = args.contenders?.split(',') ?? ['plugin', 'socket.io-redis', 'socket.io-redis-streams']
// Idle sockets with heartbeats across three instances: the plugin, and bare @fastify/websocket (no heartbeat) for scale.
const IDLE_CLUSTER_CONTENDERS = args.contenders?.split(',') ?? ['plugin', 'fastify-websocket']

const SLOW_STOP_AT_RSS = 1.5 * 2 ** 30
// Sizes per mode: full is what BENCHMARKS.md reports; quick finishes in about a
// minute; smoke runs every code path once so the harness cannot rot.
// Attacks: sessions opened and closed, half-sent requests, unfinished messages; the ping flood is bounded by bytes.
const SIZES = {
  full: { compressionIdle: 10_000, compressionActive: 1_000, compressionWarmSeconds: 5, compressionSoakSeconds: 60, rounds: 5, echoSeconds: 3, idle: [10_000, 50_000], idleCluster: 50_000, idleClusterSeconds: 10, keepalive: 10_000, keepaliveSeconds: 10, heartbeatMs: 1000, fanout: 5_000, fanoutRounds: 20, publishSubscribers: 5_000, publishes: 20, clusterSubscribers: 4_500, clusterPublishes: 100, clusterRate: 5, slowSeconds: 3, attackRounds: 3, attackSessions: 5_000, attackHalfSent: 2_000, attackFragments: 200, attackHoldSeconds: 35 },
  quick: { compressionIdle: 1_000, compressionActive: 200, compressionWarmSeconds: 1, compressionSoakSeconds: 5, rounds: 1, echoSeconds: 0.5, idle: [1_000], idleCluster: 3_000, idleClusterSeconds: 2, keepalive: 1_000, keepaliveSeconds: 1, heartbeatMs: 250, fanout: 500, fanoutRounds: 5, publishSubscribers: 5_000, publishes: 5, clusterSubscribers: 4_500, clusterPublishes: 25, clusterRate: 5, slowSeconds: 0.5, attackRounds: 1, attackSessions: 5_000, attackHalfSent: 2_000, attackFragments: 200, attackHoldSeconds: 35 },
  smoke: { compressionIdle: 20, compressionActive: 10, compressionWarmSeconds: 0.2, compressionSoakSeconds: 0.3, rounds: 1, echoSeconds: 0.2, idle: [20], idleCluster: 30, idleClusterSeconds: 0.3, keepalive: 20, keepaliveSeconds: 0.3, heartbeatMs: 100, fanout: 20, fanoutRounds: 2, publishSubscribers: 20, publishes: 2, clusterSubscribers: 30, clusterPublishes: 5, clusterRate: 20, slowSeconds: 0.2, attackRounds: 1, attackSessions: 50, attackHalfSent: 20, attackFragments: 10, attackHoldSeconds: 1 }
}[mode]
// Compression's active runs are long (a soak each): one round unless asked for more.
SIZES.compressionRounds = args.rounds === undefined ? 1 : Number(args.rounds)
if (args.rounds !== undefined) SIZES.rounds = Number(args.rounds)

function scenarios () {
  const list = []
  const smoke = mode === 'smoke'
  for (const bytes of [64, 4096]) {
    list.push({
      key: `echo-${bytes}`,
      name: 'echo',
      connections: smoke ? 4 : 50,
      inFlight: smoke ? 2 : 16,
      bytes,
      seconds: SIZES.echoSeconds,
      warmupSeconds: { full: 1, quick: 0.3, smoke: 0.1 }[mode],
      rounds: SIZES.rounds
    })
  }
  for (const connections of SIZES.idle) {
    const skipped = idleSkipReason(connections)
    list.push({ key: `idle-${connections}`, name: 'idle', connections, settleSeconds: smoke ? 0.1 : 1, rounds: Math.min(SIZES.rounds, 3), skipped })
  }
  // The same idle sockets spread over three server processes, each with a load process of its own, so no process
  // holds more than a third of the descriptors; the heartbeat's CPU is read once every instance has all its sockets.
  list.push({
    key: `idle-3x-${SIZES.idleCluster}`,
    name: 'idle-cluster',
    instances: 3,
    loadPerInstance: true,
    connections: SIZES.idleCluster,
    skipped: idleSkipReason(Math.ceil(SIZES.idleCluster / 3)),
    heartbeatMs: SIZES.heartbeatMs,
    // Past the first interval, as in keep-alive.
    settleSeconds: smoke ? 0.1 : 2 * SIZES.heartbeatMs / 1000,
    seconds: SIZES.idleClusterSeconds,
    rounds: Math.min(SIZES.rounds, 3),
    contenders: IDLE_CLUSTER_CONTENDERS
  })
  list.push({
    key: `keepalive-${SIZES.keepalive}`,
    name: 'keepalive',
    connections: SIZES.keepalive,
    seconds: SIZES.keepaliveSeconds,
    // Past the first interval, so every contender is in its steady state.
    settleSeconds: smoke ? 0.1 : 2 * SIZES.heartbeatMs / 1000,
    heartbeatMs: SIZES.heartbeatMs,
    rounds: Math.min(SIZES.rounds, 3),
    contenders: KEEPALIVE_CONTENDERS
  })
  list.push({ key: `fanout-${SIZES.fanout}`, name: 'fanout', connections: SIZES.fanout, rounds: Math.min(SIZES.rounds, 3), broadcasts: SIZES.fanoutRounds, bytes: 64 })
  // The scenario is its size: 5,000 subscribers in quick runs too, with fewer publishes.
  for (const bytes of [100, 16_384]) {
    list.push({
      key: `publish-${SIZES.publishSubscribers}-${bytes}`,
      name: 'publish',
      connections: SIZES.publishSubscribers,
      publishes: SIZES.publishes,
      warmups: smoke ? 1 : 3,
      bytes,
      rounds: Math.min(SIZES.rounds, 3),
      contenders: PUBLISH_CONTENDERS
    })
  }
  // Three instances and one redis-server (fresh for every run, so no contender meets another's streams or keys),
  // subscribers spread evenly over the instances, one publisher on the first instance. Full size as quick, fewer
  // publishes in quick; 5 publishes/s to 4,500 subscribers stays below what 2 cores can deliver for every contender.
  const redisSkipped = redisSkipReason()
  for (const bytes of [100, 16_384]) {
    list.push({
      key: `publish-3x-redis-${bytes}`,
      name: 'publish-cluster',
      instances: 3,
      redis: true,
      skipped: redisSkipped,
      connections: SIZES.clusterSubscribers,
      publishes: SIZES.clusterPublishes,
      rate: SIZES.clusterRate,
      warmups: smoke ? 1 : 5,
      settleSeconds: smoke ? 0.1 : 1,
      maxWaitSeconds: smoke ? 5 : 10,
      bytes,
      rounds: Math.min(SIZES.rounds, 3),
      contenders: CLUSTER_CONTENDERS
    })
  }
  list.push({ key: 'slow', name: 'slow', seconds: SIZES.slowSeconds, bytes: 16_384, stopAtRss: SLOW_STOP_AT_RSS, rounds: Math.min(SIZES.rounds, 2) })
  // Every client offers permessage-deflate as browsers do (with client_max_window_bits, ws's default offer).
  list.push({
    key: `compression-idle-${SIZES.compressionIdle}`,
    name: 'compression-idle',
    connections: SIZES.compressionIdle,
    settleSeconds: smoke ? 0.1 : 1,
    rounds: Math.min(SIZES.rounds, 3),
    offerDeflate: true,
    contenders: COMPRESSION_CONTENDERS
  })
  // The server broadcasts one kind of message; each client sends a chat message up for every uploadEvery it gets.
  // The soak is long enough (in full) for the RSS to show what churning zlib's buffers leaves behind.
  for (const kind of KINDS) {
    list.push({
      key: `compression-active-${SIZES.compressionActive}-${kind}`,
      name: 'compression-active',
      kind,
      connections: SIZES.compressionActive,
      warmSeconds: SIZES.compressionWarmSeconds,
      soakSeconds: SIZES.compressionSoakSeconds,
      uploadEvery: 5,
      rounds: SIZES.compressionRounds,
      offerDeflate: true,
      contenders: COMPRESSION_CONTENDERS
    })
  }
  // Hostile clients, all from 127.0.0.1, against the plugin at its default options: each attack against a server
  // process of its own, measured against that server's idle memory just before it.
  const attack = { name: 'attacks', rounds: Math.min(SIZES.rounds, SIZES.attackRounds), contenders: CONTENDERS.includes('plugin') ? ['plugin'] : [], attacks: true }
  list.push({ ...attack, key: 'attack-ping-flood', attack: 'pingFlood', maxUploadBytes: 64e6, maxSeconds: 30 })
  list.push({ ...attack, key: 'attack-sessions', attack: 'sessions', connections: SIZES.attackSessions, concurrency: 16, sessionBytes: 65_536, maxSeconds: 110 })
  // The plugin's default handshakeTimeoutMs; the count still open is taken 2 s after it.
  list.push({ ...attack, key: 'attack-half-sent', attack: 'halfSent', connections: SIZES.attackHalfSent, settleSeconds: smoke ? 0.2 : 1, handshakeTimeoutMs: 10_000, graceSeconds: 2 })
  // Held past one interval of the default 30 s heartbeat (except in smoke), so the peers have pings to answer.
  list.push({ ...attack, key: 'attack-fragments', attack: 'fragments', connections: SIZES.attackFragments, bytes: 2 ** 20 - 1024, holdSeconds: SIZES.attackHoldSeconds, maxSeconds: 60 })
  const only = args.only?.split(',')
  return only ? list.filter((s) => only.includes(s.key) || only.includes(s.name)) : list
}

// Each process (server and load) holds one descriptor per connection.
function idleSkipReason (connections) {
  const limits = readFileSync('/proc/self/limits', 'utf8').match(/Max open files\s+(\d+|unlimited)/)
  const max = limits === null || limits[1] === 'unlimited' ? Infinity : Number(limits[1])
  return connections + 1_000 > max ? `needs ${connections + 1_000} file descriptors per process; the limit here is ${max}` : null
}

function once (child, predicate) {
  return new Promise((resolve, reject) => {
    const onMessage = (message) => {
      if (!predicate(message)) return
      child.off('message', onMessage)
      child.off('exit', onExit)
      resolve(message)
    }
    const onExit = (code) => reject(new Error(`${child.spawnargs.slice(-3).join(' ')} exited with ${code}`))
    child.on('message', onMessage)
    child.on('exit', onExit)
  })
}

/** The medians of the runs' figures, metric by metric (and instance by instance); a flag is set if any run set it. */
function medianOf (values) {
  const [first] = values
  if (typeof first === 'boolean') return values.includes(true)
  if (Array.isArray(first)) return first.map((_, i) => medianOf(values.map((v) => v[i])))
  if (first !== null && typeof first === 'object') return Object.fromEntries(Object.keys(first).map((key) => [key, medianOf(values.map((v) => v[key]))]))
  return median(values)
}

let runs = 0

function exited (child) {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((resolve) => child.once('exit', resolve))
}

async function runOnce (contender, scenario) {
  const redis = scenario.redis ? await startRedis() : null
  const serverConfig = { heartbeatMs: scenario.heartbeatMs ?? null, attacks: scenario.attacks === true, sink: scenario.name.startsWith('compression'), topic: scenario.name.startsWith('publish'), redis: redis?.url ?? null, loopDelay: scenario.name === 'keepalive' || scenario.name === 'idle-cluster' }
  const servers = Array.from({ length: scenario.instances ?? 1 }, () => fork(join(here, 'server.mjs'), [contender, JSON.stringify(serverConfig)], { execArgv: ['--expose-gc'], stdio: 'inherit' }))
  let loads = []
  try {
    const started = await Promise.all(servers.map((server) => once(server, (m) => m.ready || m.unsupported)))
    const unsupported = started.find((m) => m.unsupported)
    if (unsupported) return { unsupported: unsupported.unsupported }
    // One load process for all the instances, or (loadPerInstance) one for each, with its share of the connections.
    const perInstance = scenario.loadPerInstance === true
    const jobs = perInstance
      ? started.map((m, i) => [String(m.port), { ...scenario, connections: Math.floor(scenario.connections / servers.length) + (i < scenario.connections % servers.length ? 1 : 0) }])
      : [[started.map((m) => m.port).join(','), scenario]]
    loads = jobs.map(([ports, job]) => fork(join(here, 'load.mjs'), [contender, ports, JSON.stringify(job), String(runs++)], { stdio: 'inherit' }))
    // A barrier: released once every load process has reached it.
    let waiting = []
    // The load processes ask the servers for samples and actions through us (and us for Redis's CPU).
    loads.forEach((load, index) => load.on('message', async (message) => {
      if (message.done) return
      if (message.cmd === 'redisCpu') {
        load.send({ id: message.id, cpuMs: redis.cpuMs() })
        return
      }
      if (message.cmd === 'barrier') {
        waiting.push(() => load.send({ id: message.id }))
        if (waiting.length === loads.length) {
          for (const release of waiting) release()
          waiting = []
        }
        return
      }
      const server = servers[perInstance ? index : message.instance]
      server.send(message)
      const reply = await once(server, (m) => m.id === message.id)
      load.send(reply)
    }))
    const results = (await Promise.all(loads.map((load) => once(load, (m) => m.done)))).map((m) => m.result)
    return perInstance ? combineInstances(results) : results[0]
  } finally {
    for (const load of loads) load.kill()
    for (const server of servers) server.kill()
    // The next run starts once the kernel has let go of this one's sockets and processes.
    await Promise.all([...loads.map(exited), ...servers.map(exited)])
    await redis?.stop()
  }
}

/** Each instance's figures (one load process each) and the totals over them: the loop delay is the worst instance's. */
function combineInstances (instances) {
  const sum = (metric) => instances.reduce((total, r) => total + r[metric], 0)
  const max = (metric) => Math.max(...instances.map((r) => r[metric]))
  return {
    connections: sum('connections'),
    connectionsLeft: sum('connectionsLeft'),
    rssBytes: sum('rssBytes'),
    rssPerConnection: sum('rssGrowthBytes') / sum('opened'),
    heapPerConnection: sum('heapGrowthBytes') / sum('opened'),
    serverCpuMsPerSecond: sum('serverCpuMsPerSecond'),
    loopDelayP99Ms: max('loopDelayP99Ms'),
    loopDelayMaxMs: max('loopDelayMaxMs'),
    loadCpuMsPerSecond: sum('loadCpuMsPerSecond'),
    instances
  }
}

function median (values) {
  const sorted = values.filter((v) => typeof v === 'number').sort((a, b) => a - b)
  if (sorted.length === 0) return null
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

const results = { mode, date: new Date().toISOString(), node: process.version, cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, memoryGiB: Math.round(totalmem() / 2 ** 30), command: `npm run bench${mode === 'full' ? '' : ` -- --${mode}`}`, scenarios: {} }

for (const scenario of scenarios()) {
  const entry = { ...scenario, contenders: {} }
  results.scenarios[scenario.key] = entry
  if (scenario.skipped) {
    console.log(`${scenario.key}: skipped (${scenario.skipped})`)
    continue
  }
  const contenders = scenario.contenders ?? CONTENDERS
  const rounds = Object.fromEntries(contenders.map((c) => [c, []]))
  for (let round = 0; round < scenario.rounds; round++) {
    // Alternate the order too, so no contender always runs first in a round.
    const order = round % 2 === 0 ? contenders : [...contenders].reverse()
    for (const contender of order) {
      const result = await runOnce(contender, scenario)
      if (result.unsupported) {
        entry.unsupported = { ...entry.unsupported, [contender]: result.unsupported }
        console.log(`${scenario.key}, ${contender}: not measured (${result.unsupported})`)
      } else {
        rounds[contender].push(result)
      }
      process.stdout.write('.')
    }
  }
  for (const contender of contenders) {
    const runs = rounds[contender]
    if (runs.length === 0) continue
    entry.contenders[contender] = { median: medianOf(runs), runs }
  }
  console.log(` ${scenario.key} done`)
}

mkdirSync(outDir, { recursive: true })
writeFileSync(join(outDir, `results-${mode}.json`), JSON.stringify(results, null, 2) + '\n')
const markdown = renderMarkdown(results)
console.log('\n' + markdown)
// Only a complete run replaces BENCHMARKS.md: one of some scenarios or contenders would drop the others' figures.
if (mode === 'full' && args.out === undefined && args.only === undefined && args.contenders === undefined) {
  writeFileSync(join(here, '..', 'BENCHMARKS.md'), markdown)
} else if (mode === 'full' && args.out === undefined) {
  console.log(`A partial run: BENCHMARKS.md left as it is (figures in ${join(outDir, 'results-full.json')})`)
}

const violations = slowConsumerViolations(results)
if (violations.length > 0) {
  console.error(`slow consumer: the plugin did not hold its backpressure bound: ${violations.join('; ')}`)
  process.exitCode = 1
}
