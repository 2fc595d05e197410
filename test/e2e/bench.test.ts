import { execFile } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { find, needs, REDIS } from '../helpers/programs'

// The benchmark harness (`npm run bench`) at tiny sizes: every scenario's code
// path runs once against every contender, so the harness cannot rot. It checks
// that numbers came out, never what they are: timings belong to the benchmark.

// Six contenders × six scenarios (and the floor in keep-alive), two idle contenders across three instances (three
// servers and three load processes each), four publish contenders × two scenarios, three
// cross-instance publish contenders × two scenarios (three servers and a redis-server each), four compression
// contenders × four scenarios, then the plugin under four attacks (one waits out the 10 s handshake timeout), a server
// and a load process each.
// 160 s alone on a busy machine, more than 240 s with the suite at double parallelism.
t.setTimeout(600_000)

const CONTENDERS = ['plugin', 'fastify-websocket', 'ws', 'timer', 'sweep', 'socket.io']
const COMPRESSION_CONTENDERS = ['plugin', 'plugin-compression', 'fastify-websocket-deflate', 'fastify-websocket']
const PUBLISH_CONTENDERS = ['plugin', 'ws-loop', 'socket.io', 'write-floor']
const CLUSTER_CONTENDERS = ['plugin', 'socket.io-redis', 'socket.io-redis-streams']
const IDLE_CLUSTER_CONTENDERS = ['plugin', 'fastify-websocket']
const IDLE_CLUSTER_FIGURES = ['connections', 'rssPerConnection', 'heapPerConnection', 'serverCpuMsPerSecond', 'loopDelayP99Ms', 'loopDelayMaxMs', 'connectionsLeft']

const PRIMARY: Record<string, string[]> = {
  echo: ['serverCpuUsPerMessage', 'messagesPerSecond', 'rttP50Ms', 'rttP99Ms', 'loadCpuUsPerMessage'],
  idle: ['rssPerConnection', 'heapPerConnection', 'setupPerSecond', 'connections'],
  'idle-cluster': [...IDLE_CLUSTER_FIGURES, 'rssBytes'],
  keepalive: ['serverCpuMsPerSecond', 'loopDelayP99Ms', 'loadCpuMsPerSecond', 'connectionsLeft'],
  fanout: ['lastReceiptMs', 'serverCpuMsPerBroadcast'],
  publish: ['serverCpuMsPerPublish', 'serverCpuUsPerDelivery', 'lastReceiptMs', 'subscribers'],
  'publish-cluster': ['deliveredPerCpuSecond', 'latencyP50Ms', 'latencyP99Ms', 'serverCpuUsPerDelivery', 'redisCpuMs', 'loadCpuUsPerDelivery', 'delivered', 'lost', 'subscribers'],
  slow: ['peakRssGrowthBytes', 'sent'],
  'compression-idle': ['rssPerConnection', 'heapPerConnection', 'setupPerSecond', 'connections'],
  'compression-active': ['serverCpuUsPerMessage', 'wireBytesPerMessage', 'plainBytesPerMessage', 'warmRssPerConnection', 'soakRssPerConnection', 'soakOverWarm', 'messagesSent', 'messagesReceived'],
  attacks: ['baselineRssBytes', 'rssGrowthBytes', 'heapGrowthBytes', 'peakRssGrowthBytes']
}

t.test('smoke test of npm run bench -- --smoke: every scenario, contender and figure yields a number; timings are not judged', async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'bench-smoke-'))
  t.teardown(() => rmSync(out, { recursive: true, force: true }))
  // The cross-instance scenarios start redis-server where the tests find it; without it (and not on CI) they are
  // reported skipped, and everything else still runs.
  const redis = needs(REDIS).skip === undefined ? find(REDIS) : null
  const env = { ...process.env, REDIS_SERVER_PATH: redis ?? '/nonexistent/redis-server' }
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, [join(__dirname, '..', '..', 'bench', 'run.mjs'), '--smoke', '--out', out], { env }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${err.message}\n${stderr}`))
      else resolve(stdout)
    })
  })
  const results = JSON.parse(readFileSync(join(out, 'results-smoke.json'), 'utf8'))
  const scenarios = Object.values(results.scenarios) as any[]
  t.same(scenarios.map((s) => s.name), ['echo', 'echo', 'idle', 'idle-cluster', 'keepalive', 'fanout', 'publish', 'publish', 'publish-cluster', 'publish-cluster', 'slow', 'compression-idle', 'compression-active', 'compression-active', 'compression-active', 'attacks', 'attacks', 'attacks', 'attacks'])
  for (const scenario of scenarios) {
    if (scenario.name === 'publish-cluster' && redis === null) {
      t.match(scenario.skipped, /^needs redis-server/, `${scenario.key}: skipped without redis-server`)
      continue
    }
    const contenders = Object.entries(scenario.contenders) as Array<[string, any]>
    // Keep-alive also measures the floor under every heartbeat: the ping's bytes written straight, nothing else.
    // The attacks are aimed at the plugin alone.
    const expected = scenario.name === 'attacks'
      ? ['plugin']
      : scenario.name.startsWith('compression')
        ? COMPRESSION_CONTENDERS
        : scenario.name === 'publish' ? PUBLISH_CONTENDERS : scenario.name === 'publish-cluster' ? CLUSTER_CONTENDERS : scenario.name === 'idle-cluster' ? IDLE_CLUSTER_CONTENDERS : [...CONTENDERS, ...(scenario.name === 'keepalive' ? ['floor'] : [])]
    t.same(contenders.map(([name]) => name).sort(), expected.sort(), `${scenario.key}: every contender ran`)
    for (const [contender, { median }] of contenders) {
      const missing = PRIMARY[scenario.name].filter((metric) => !Number.isFinite(median[metric]))
      t.same(missing, [], `${scenario.key}, ${contender}: every figure is a number`)
    }
  }
  t.equal(results.scenarios.slow.contenders.plugin.median.peakQueuedBytes <= 1_048_576 + 16_384, true, 'the slow-consumer bound is checked on real figures')
  t.match(stdout, /^# Benchmarks$/m, 'the markdown report is rendered')
  t.match(stdout, /^## Attacks from one address, default options$/m, 'the attacks have their section')
  t.equal(results.scenarios['attack-ping-flood'].contenders.plugin.median.terminated, true, 'the ping flooder was terminated')
  t.match(stdout, /\| keep-alive: server CPU ≤ 0\.6× one timer per connection \| \d+\.\d+× \|/, 'targets are evaluated from the figures')
  // The clients offer permessage-deflate: it is negotiated exactly where the server has it on.
  for (const scenario of scenarios.filter((s) => s.name.startsWith('compression'))) {
    const negotiated = Object.fromEntries(Object.entries(scenario.contenders).map(([name, { median }]: [string, any]) => [name, median.negotiated]))
    t.same(negotiated, { plugin: false, 'plugin-compression': true, 'fastify-websocket-deflate': true, 'fastify-websocket': false }, `${scenario.key}: negotiated where on`)
  }
  // Every subscriber of the topic (the room) got every publish: the load process checks each message's size.
  for (const scenario of scenarios.filter((s) => s.name === 'publish')) {
    for (const [name, { median }] of Object.entries(scenario.contenders) as Array<[string, any]>) {
      t.equal(median.subscribers, scenario.connections, `${scenario.key}, ${name}: every socket subscribed`)
    }
  }
  // Across instances: every subscriber on every instance got every measured message, in order, each with its latency.
  for (const scenario of scenarios.filter((s) => s.name === 'publish-cluster' && redis !== null)) {
    for (const [name, { median }] of Object.entries(scenario.contenders) as Array<[string, any]>) {
      t.same([median.subscribers, median.delivered, median.lost, median.misordered], [scenario.connections, scenario.publishes * scenario.connections, 0, 0], `${scenario.key}, ${name}: every message reached every subscriber once, in order`)
    }
  }
  // Idle across instances: each instance held its share (one load process each), and the totals add up.
  const idleCluster = scenarios.find((s) => s.name === 'idle-cluster')
  for (const [name, { median }] of Object.entries(idleCluster.contenders) as Array<[string, any]>) {
    t.same(median.instances.map((m: any) => [m.connections, m.connectionsLeft]), [[10, 10], [10, 10], [10, 10]], `${idleCluster.key}, ${name}: each instance held its share`)
    t.same(median.instances.map((m: any) => IDLE_CLUSTER_FIGURES.filter((metric) => !Number.isFinite(m[metric]))), [[], [], []], `${idleCluster.key}, ${name}: every instance's figure is a number`)
    t.equal(median.connections, idleCluster.connections, `${idleCluster.key}, ${name}: the total is every connection`)
  }
  t.match(stdout, /^\| fastify-reliable-ws \(defaults, heartbeat on\) \| all 3 \| 30 \|/m, 'the instances\' table has its totals row')
  if (redis !== null) t.match(stdout, /\| publish 100 B across 3 instances: delivered \/ server CPU-s ≥ 2× Socket\.IO 4 \+ @socket\.io\/redis-adapter \(ioredis\) \| \d+\.\d+× \|/, 'the cross-instance targets are evaluated')
  t.match(stdout, /\| publish 100 B to 20: server CPU \/ publish ≤ 0\.6× a loop of ws\.send \| \d+\.\d+× \|/, 'the publish targets are evaluated')
  t.match(stdout, /\| snapshot: wire bytes ≤ 0\.4× uncompressed \| \d+\.\d+× \|/, 'the compression targets are evaluated')
})

t.test('smoke test of bench/mass-resume.mjs: 20 sessions, graceful then crash; the counts, never the timings', needs(REDIS), async (t) => {
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, [join(__dirname, '..', '..', 'bench', 'mass-resume.mjs'), '--sessions', '20'], { env: { ...process.env, REDIS_SERVER_PATH: find(REDIS)! } }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${err.message}\n${stderr}`))
      else resolve(stdout)
    })
  })
  const [drain, crash] = stdout.trim().split('\n').map((line) => JSON.parse(line))
  t.match(drain, { end: 'drain', back: 20, resumed: 20, lost: 0, handedOver: 20 }, 'handed over: every session resumed')
  t.match(crash, { end: 'crash', back: 20, resumed: 0, lost: 20, handedOver: 0 }, 'crashed: every session begun anew')
  for (const run of [drain, crash]) {
    const figures = [run.perSecond, run.busiest100ms, run.redisCpuMs, run.redisScripts, run.survivorCpuPerBackMs, ...run.survivorCpuMs, ...run.survivorDelayP99Ms]
    t.ok(figures.every(Number.isFinite), `${run.end}: every figure is a number`)
  }
})

t.test('smoke test of bench/mass-resume.mjs --durable: 20 durable sessions survive the SIGKILL of their instance', needs(REDIS), async (t) => {
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, [join(__dirname, '..', '..', 'bench', 'mass-resume.mjs'), '--sessions', '20', '--ends', 'crash', '--durable'], { env: { ...process.env, REDIS_SERVER_PATH: find(REDIS)! } }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${err.message}\n${stderr}`))
      else resolve(stdout)
    })
  })
  const crash = JSON.parse(stdout.trim())
  t.match(crash, { end: 'crash', durable: true, back: 20, resumed: 20, lost: 0, handedOver: 0 }, 'every session resumed on the survivors')
  t.equal(crash.survivorSessions.reduce((total: number, one: { takenOver: number }) => total + one.takenOver, 0), 20, 'each taken over from what the dead instance kept')
})

t.test('smoke test of bench/durable.mjs: 3 sessions × 20 messages, every mode; the rows, never the figures', needs(REDIS), async (t) => {
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(process.execPath, [join(__dirname, '..', '..', 'bench', 'durable.mjs'), '--sessions', '3', '--messages', '20'], { env: { ...process.env, REDIS_SERVER_PATH: find(REDIS)! } }, (err, stdout, stderr) => {
      if (err !== null) reject(new Error(`${err.message}\n${stderr}`))
      else resolve(stdout)
    })
  })
  t.match(stdout, /^3 sessions × 20 messages of 64 B each way, then 20 topic messages to all 3, one a turn$/m)
  for (const mode of ['memory', 'redis', 'durable', 'durable-window-1']) {
    t.match(stdout, new RegExp(`│ '${mode}' +│ \\d+ +│ [\\d.]+ +│ [\\d.]+ +│ \\d+ +│ [\\d.]+ +│ [\\d.]+ +│ \\d+ +│ [\\d.]+ +│ [\\d.]+ +│`), `${mode}: a row of figures`)
  }
})
