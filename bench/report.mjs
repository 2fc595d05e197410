// Turns run.mjs's results into BENCHMARKS.md: the targets and where each stands, then every figure.
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const BARE = 'fastify-websocket'
const LABELS = {
  plugin: 'fastify-reliable-ws (defaults, heartbeat on)',
  'fastify-websocket': 'bare @fastify/websocket',
  ws: 'raw ws',
  timer: '@fastify/websocket + one setInterval per connection',
  sweep: '@fastify/websocket + one sweep over wss.clients',
  'socket.io': 'Socket.IO 4 (websocket transport only)',
  floor: 'floor: raw ws, each ping\'s 2 bytes written straight, pongs ignored',
  'plugin-compression': 'fastify-reliable-ws, `compression: true`',
  'fastify-websocket-deflate': 'bare @fastify/websocket, `perMessageDeflate: true` (ws\'s defaults)',
  'ws-loop': 'the plugin\'s server, a loop of `ws.send` over the same sockets',
  'write-floor': 'floor: the plugin\'s server, each TCP socket written the whole frame (one Buffer built once), nothing else',
  'socket.io-redis': 'Socket.IO 4 + @socket.io/redis-adapter (ioredis)',
  'socket.io-redis-streams': 'Socket.IO 4 + @socket.io/redis-streams-adapter (ioredis)'
}
// The plugin's publish against the others', per message size: server CPU per publish at most these fractions.
export const PUBLISH_TARGETS = { 'ws-loop': 0.6, 'socket.io': 0.5 }
// Across instances through Redis, against Socket.IO with each adapter: delivered messages per server CPU-second at
// least this multiple, delivery latency p99 at most this one.
export const CLUSTER_AGAINST = ['socket.io-redis', 'socket.io-redis-streams']
export const CLUSTER_THROUGHPUT_RATIO = 2
export const CLUSTER_P99_RATIO = 1
// The compression targets: the preset against the plugin with compression off.
export const COMPRESSION_RSS_BUDGET = 16_000
export const COMPRESSION_SOAK_RATIO = 1.2
export const COMPRESSION_WIRE_RATIO = 0.4
// The one backpressure limit the slow-consumer check holds the plugin to (its default highWaterMark).
export const HIGH_WATER_MARK = 1_048_576
// Past the queued bytes, RSS also carries the strings the flood makes and GC has not reclaimed yet.
export const SLOW_RSS_BOUND = 64 * 2 ** 20

const COLUMNS = {
  echo: [
    ['serverCpuUsPerMessage', 'server CPU / msg (µs)', 2],
    ['messagesPerSecond', 'msg/s', 0],
    ['rttP50Ms', 'RTT p50 (ms)', 2],
    ['rttP99Ms', 'RTT p99 (ms)', 2],
    ['loadCpuUsPerMessage', 'load CPU / msg (µs)', 2]
  ],
  idle: [
    ['rssPerConnection', 'RSS / conn (B)', 0],
    ['heapPerConnection', 'heap / conn (B)', 0],
    ['setupPerSecond', 'setup (conn/s)', 0],
    ['connections', 'connections', 0]
  ],
  keepalive: [
    ['serverCpuMsPerSecond', 'server CPU (ms/s)', 1],
    ['loopDelayP99Ms', 'loop delay p99 (ms)', 2],
    ['loopDelayMaxMs', 'loop delay max (ms)', 1],
    ['loadCpuMsPerSecond', 'load CPU (ms/s)', 1],
    ['connectionsLeft', 'connections left', 0]
  ],
  fanout: [
    ['lastReceiptMs', 'last receipt (ms)', 2],
    ['serverCpuMsPerBroadcast', 'server CPU / broadcast (ms)', 2]
  ],
  'compression-idle': [
    ['rssPerConnection', 'RSS / conn (B)', 0],
    ['heapPerConnection', 'heap / conn (B)', 0],
    ['setupPerSecond', 'setup (conn/s)', 0],
    ['connections', 'connections', 0],
    ['negotiated', 'negotiated', null]
  ],
  'compression-active': [
    ['serverCpuUsPerMessage', 'server CPU / msg (µs)', 1],
    ['wireBytesPerMessage', 'wire B / msg sent', 0],
    ['plainBytesPerMessage', 'JSON B / msg', 0],
    ['warmRssPerConnection', 'RSS / conn, warm (B)', 0],
    ['soakRssPerConnection', 'RSS / conn, soak (B)', 0],
    ['soakOverWarm', 'soak / warm', 2],
    ['messagesSent', 'msgs sent', 0],
    ['uploadBacklog', 'uploads waiting at the end', 0],
    ['negotiated', 'negotiated', null]
  ],
  publish: [
    ['serverCpuMsPerPublish', 'server CPU / publish (ms)', 2],
    ['serverCpuUsPerDelivery', 'server CPU / subscriber (µs)', 2],
    ['lastReceiptMs', 'last receipt (ms)', 1],
    ['subscribers', 'subscribers', 0]
  ],
  'publish-cluster': [
    ['deliveredPerCpuSecond', 'delivered / server CPU-s', 0],
    ['latencyP50Ms', 'latency p50 (ms)', 2],
    ['latencyP99Ms', 'latency p99 (ms)', 2],
    ['serverCpuUsPerDelivery', 'server CPU / delivery (µs)', 2],
    ['redisCpuMs', 'Redis CPU (ms)', 0],
    ['loadCpuUsPerDelivery', 'load CPU / delivery (µs)', 2],
    ['lost', 'lost', 0],
    ['subscribers', 'subscribers', 0]
  ],
  slow: [
    ['peakRssGrowthBytes', 'peak RSS growth (MiB)', 1, 2 ** 20],
    ['peakQueuedBytes', 'peak queued (KiB)', 0, 1024],
    ['sent', 'messages sent', 0],
    ['dropped', 'dropped', 0],
    ['stoppedEarly', 'stopped at the RSS cap', null]
  ]
}

function value (results, key, contender, metric) {
  return results.scenarios[key]?.contenders[contender]?.median[metric] ?? null
}

function ratio (results, key, metric, contender, against) {
  const a = value(results, key, contender, metric)
  const b = value(results, key, against, metric)
  return a === null || b === null || b === 0 ? null : a / b
}

/** Every target of the benchmark issue, each as { target, measured, met }. */
export function evaluateTargets (results) {
  const rows = []
  const check = (target, measured, limit, atMost = true) => {
    rows.push({ target, measured, met: measured === null ? null : atMost ? measured <= limit : measured >= limit })
  }
  for (const bytes of [64, 4096]) {
    const key = `echo-${bytes}`
    check(`echo ${bytes} B: server CPU / msg ≤ 1.05× bare`, ratio(results, key, 'serverCpuUsPerMessage', 'plugin', BARE), 1.05)
    check(`echo ${bytes} B: msg/s ≥ 0.95× bare`, ratio(results, key, 'messagesPerSecond', 'plugin', BARE), 0.95, false)
    check(`echo ${bytes} B: RTT p99 ≤ 1.1× bare`, ratio(results, key, 'rttP99Ms', 'plugin', BARE), 1.1)
    check(`echo ${bytes} B: server CPU / msg ≤ 0.65× Socket.IO`, ratio(results, key, 'serverCpuUsPerMessage', 'plugin', 'socket.io'), 0.65)
  }
  const idle = Object.keys(results.scenarios).find((key) => results.scenarios[key].name === 'idle' && !results.scenarios[key].skipped)
  for (const [metric, label] of [['rssPerConnection', 'RSS'], ['heapPerConnection', 'heap']]) {
    check(`idle: ${label} / connection ≤ 1.15× bare`, ratio(results, idle, metric, 'plugin', BARE), 1.15)
    check(`idle: ${label} / connection ≤ 0.6× Socket.IO`, ratio(results, idle, metric, 'plugin', 'socket.io'), 0.6)
  }
  const keepalive = Object.keys(results.scenarios).find((key) => key.startsWith('keepalive-'))
  check('keep-alive: server CPU ≤ 0.6× one timer per connection', ratio(results, keepalive, 'serverCpuMsPerSecond', 'plugin', 'timer'), 0.6)
  check('keep-alive: loop delay p99 ≤ 1× one timer per connection', ratio(results, keepalive, 'loopDelayP99Ms', 'plugin', 'timer'), 1)
  const fanout = Object.keys(results.scenarios).find((key) => key.startsWith('fanout-'))
  check('fan-out: last receipt ≤ 1.1× raw ws', ratio(results, fanout, 'lastReceiptMs', 'plugin', 'ws'), 1.1)
  for (const [key, scenario] of Object.entries(results.scenarios)) {
    if (scenario.name !== 'publish') continue
    for (const [against, limit] of Object.entries(PUBLISH_TARGETS)) {
      check(`publish ${scenario.bytes} B to ${scenario.connections.toLocaleString('en-US')}: server CPU / publish ≤ ${limit}× ${against === 'ws-loop' ? 'a loop of ws.send' : 'Socket.IO'}`, ratio(results, key, 'serverCpuMsPerPublish', 'plugin', against), limit)
    }
  }
  for (const [key, scenario] of Object.entries(results.scenarios)) {
    if (scenario.name !== 'publish-cluster') continue
    for (const against of CLUSTER_AGAINST) {
      const name = `publish ${scenario.bytes} B across ${scenario.instances} instances: `
      check(`${name}delivered / server CPU-s ≥ ${CLUSTER_THROUGHPUT_RATIO}× ${LABELS[against]}`, ratio(results, key, 'deliveredPerCpuSecond', 'plugin', against), CLUSTER_THROUGHPUT_RATIO, false)
      check(`${name}latency p99 ≤ ${CLUSTER_P99_RATIO}× ${LABELS[against]}`, ratio(results, key, 'latencyP99Ms', 'plugin', against), CLUSTER_P99_RATIO)
    }
  }
  rows.push(...compressionTargets(results))
  return rows
}

/** The compression preset's targets, per kind of message, as { target, measured, met, unit }. */
export function compressionTargets (results) {
  const rows = []
  for (const [key, scenario] of Object.entries(results.scenarios)) {
    if (scenario.name !== 'compression-active') continue
    const { kind } = scenario
    const on = value(results, key, 'plugin-compression', 'warmRssPerConnection')
    const off = value(results, key, 'plugin', 'warmRssPerConnection')
    const extra = on === null || off === null ? null : on - off
    rows.push({ target: `${kind}: RSS / active socket ≤ plugin off + ${COMPRESSION_RSS_BUDGET / 1000} KB`, measured: extra, unit: 'B', met: extra === null ? null : extra <= COMPRESSION_RSS_BUDGET })
    const soak = value(results, key, 'plugin-compression', 'soakOverWarm')
    rows.push({ target: `${kind}: RSS after the soak ≤ ${COMPRESSION_SOAK_RATIO}× after warm-up`, measured: soak, met: soak === null ? null : soak <= COMPRESSION_SOAK_RATIO })
    if (kind !== 'chat') {
      const wire = ratio(results, key, 'wireBytesPerMessage', 'plugin-compression', 'plugin')
      rows.push({ target: `${kind}: wire bytes ≤ ${COMPRESSION_WIRE_RATIO}× uncompressed`, measured: wire, met: wire === null ? null : wire <= COMPRESSION_WIRE_RATIO })
    }
  }
  return rows
}

/** The slow-consumer bound the plugin must hold; returns the reasons it does not (empty when it holds). */
export function slowConsumerViolations (results) {
  const runs = results.scenarios.slow?.contenders.plugin?.runs ?? []
  const problems = []
  for (const run of runs) {
    // One message may cross the mark; it is sent, then everything is dropped until the buffer drains.
    if (run.peakQueuedBytes > HIGH_WATER_MARK + results.scenarios.slow.bytes) problems.push(`queued ${run.peakQueuedBytes} B`)
    if (run.peakRssGrowthBytes > SLOW_RSS_BOUND) problems.push(`RSS grew ${run.peakRssGrowthBytes} B`)
    if (run.stoppedEarly) problems.push('hit the RSS cap')
  }
  return problems
}

function format (n, digits, scale = 1) {
  if (n === null || n === undefined) return '—'
  if (typeof n === 'boolean') return n ? 'yes' : 'no'
  return (n / scale).toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

export function renderMarkdown (results) {
  const lines = []
  lines.push('# Benchmarks', '')
  lines.push(`Generated by \`${results.command}\` on ${results.date.slice(0, 10)}: ${results.cores} × ${results.cpu}, ${results.memoryGiB} GiB, Node ${results.node}.`)
  lines.push('Every server runs in its own process and samples its own CPU (`process.cpuUsage`), memory (`process.memoryUsage`, after GC) and event-loop delay (`monitorEventLoopDelay`); the load runs in another process and reports its own CPU. Contenders are alternated round by round; figures are medians over the rounds. On 2 cores the load costs about as much per message as the server, so server CPU per message is the figure to compare servers by; msg/s is a joint limit of both ends.', '')
  lines.push('## Targets', '', '| target | measured | status |', '|---|---|---|')
  for (const row of evaluateTargets(results)) {
    const measured = row.measured === null ? '—' : row.unit === 'B' ? `${format(row.measured, 0)} B` : row.measured.toFixed(2) + '×'
    lines.push(`| ${row.target} | ${measured} | ${row.met === null ? 'not measured' : row.met ? 'met' : '**missed**'} |`)
  }
  const violations = slowConsumerViolations(results)
  if (results.scenarios.slow) {
    lines.push(`| slow consumer: queued ≤ highWaterMark + one message, RSS growth ≤ ${SLOW_RSS_BOUND / 2 ** 20} MiB | ${violations.length === 0 ? 'held' : violations.join('; ')} | ${violations.length === 0 ? 'met' : '**missed**'} |`)
  }
  lines.push('')
  let attacksRendered = false
  for (const [key, scenario] of Object.entries(results.scenarios)) {
    if (scenario.name === 'attacks') {
      // The attacks are one scenario each (each its own server process) and one section together.
      if (!attacksRendered) lines.push(...renderAttacks(results))
      attacksRendered = true
      continue
    }
    lines.push(`## ${describe(scenario)}`, '')
    if (scenario.skipped) {
      const spread = Object.values(results.scenarios).find((s) => s.name === 'idle-cluster' && s.connections === scenario.connections && !s.skipped)
      lines.push(`Not run: ${scenario.skipped}${scenario.name === 'idle' && spread ? `; the same ${scenario.connections.toLocaleString('en-US')} connections across ${spread.instances} instances are in the next section` : ''}.`, '')
      continue
    }
    if (scenario.name === 'idle-cluster') {
      lines.push(...renderIdleCluster(scenario))
      continue
    }
    const columns = COLUMNS[scenario.name]
    // Each row's first figure over the reference's; across instances, over each Socket.IO adapter's, with p99 too.
    const ratioColumns = scenario.name === 'publish-cluster'
      ? CLUSTER_AGAINST.flatMap((against) => [[columns[0], against], [columns[2], against]])
      : [[columns[0], scenario.name === 'fanout' ? 'ws' : scenario.name === 'publish' ? 'ws-loop' : scenario.name === 'keepalive' ? 'timer' : scenario.name.startsWith('compression') ? 'plugin' : BARE]]
    for (const [contender, reason] of Object.entries(scenario.unsupported ?? {})) lines.push(`${LABELS[contender]}: not measured (${reason}).`, '')
    lines.push(`| contender | ${columns.map((c) => c[1]).join(' | ')} | ${ratioColumns.map(([column, against]) => `${column[1]} vs ${LABELS[against]}`).join(' | ')} |`)
    lines.push(`|---|${columns.map(() => '---:').join('|')}|${ratioColumns.map(() => '---:').join('|')}|`)
    for (const contender of Object.keys(scenario.contenders)) {
      const cells = columns.map(([metric, , digits, scale]) => format(value(results, key, contender, metric), digits, scale))
      const ratios = ratioColumns.map(([[metric], against]) => ratio(results, key, metric, contender, against))
      lines.push(`| ${LABELS[contender]} | ${cells.join(' | ')} | ${ratios.map((r) => r === null ? '—' : r.toFixed(2) + '×').join(' | ')} |`)
    }
    lines.push('')
  }
  const notes = join(dirname(fileURLToPath(import.meta.url)), 'notes.md')
  lines.push(readFileSync(notes, 'utf8'))
  return lines.join('\n')
}

const IDLE_CLUSTER_COLUMNS = [
  ['connections', 'connections', 0],
  ['rssPerConnection', 'RSS / conn (B)', 0],
  ['heapPerConnection', 'heap / conn (B)', 0],
  ['rssBytes', 'RSS (MB)', 1, 1e6],
  ['serverCpuMsPerSecond', 'server CPU (ms/s)', 1],
  ['loopDelayP99Ms', 'loop delay p99 (ms)', 2],
  ['loopDelayMaxMs', 'loop delay max (ms)', 1],
  ['connectionsLeft', 'connections left', 0]
]

/** Idle sockets across instances: a row per instance and one for them all, for each contender. */
function renderIdleCluster (scenario) {
  const lines = [
    `| contender | instance | ${IDLE_CLUSTER_COLUMNS.map((c) => c[1]).join(' | ')} |`,
    `|---|---|${IDLE_CLUSTER_COLUMNS.map(() => '---:').join('|')}|`
  ]
  const row = (contender, instance, m) => `| ${LABELS[contender]} | ${instance} | ${IDLE_CLUSTER_COLUMNS.map(([metric, , digits, scale]) => format(m[metric], digits, scale)).join(' | ')} |`
  for (const [contender, { median }] of Object.entries(scenario.contenders)) {
    median.instances.forEach((m, i) => lines.push(row(contender, String(i + 1), m)))
    lines.push(row(contender, `all ${median.instances.length}`, median))
  }
  lines.push('', 'Per instance: memory after GC over its own baseline just before its clients connected; the row of all instances sums connections, RSS and CPU and takes the worst loop delay. Bare @fastify/websocket has no heartbeat: its rows are the sockets\' cost alone.', '')
  return lines
}

const KIND_SIZES = { chat: '~200 B', state: '~2 KiB', snapshot: '~32 KiB' }

const ATTACK_NAMES = {
  pingFlood: 'subprotocol ping flood from a peer that never reads',
  sessions: 'session flood',
  halfSent: 'half-sent HTTP requests',
  fragments: 'unfinished fragmented messages'
}

function count (n) {
  return n === null || n === undefined ? '—' : Math.round(n).toLocaleString('en-US')
}

function mb (bytes) {
  return format(bytes, 1, 1e6)
}

/** What the attacker did and what the server did about it, in words, from one attack's medians. */
function attackStory (scenario, m) {
  switch (scenario.attack) {
    case 'pingFlood':
      return [
        `\`\\u0000{"t":"ping"}\` frames, reading nothing, up to ${mb(scenario.maxUploadBytes)} MB`,
        m.terminated ? `terminated it after ${mb(m.uploadedBytes)} MB uploaded (pingFloods ${count(m.pingFloods)})` : `did not terminate it: ${mb(m.uploadedBytes)} MB uploaded`
      ]
    case 'sessions':
      return [
        `${count(m.opened)} connections to a route with \`resume: true\` (64 KiB sent to each), each closed after its welcome`,
        `kept ${count(m.sessionsActive)} sessions (${mb(m.sessionBufferedBytes)} MB unacknowledged), evicted ${count(m.sessionsEvicted)}, rejected ${count(m.sessionsRejected)}`
      ]
    case 'halfSent':
      return [
        `${count(scenario.connections)} TCP connections sending \`GET / HTTP/1.1\\r\\nHost: x\\r\\n\` and nothing more`,
        `held ${count(m.openWhileHeld)}; ${count(m.openAfterTimeout)} still open ${scenario.graceSeconds} s past handshakeTimeoutMs (${count(m.handshakeTimeouts)} handshake timeouts), RSS then ${mb(m.rssGrowthAfterTimeoutBytes)} MB over the baseline`
      ]
    case 'fragments':
      return [
        `${count(scenario.connections)} websockets each sending a first text fragment (FIN=0) of ${count(scenario.bytes)} B, then only answering pings`,
        `held ${m.allReceived ? 'every' : '**not every**'} fragment (${mb(m.fragmentBytesHeld)} MB); ${count(m.openAfterHold)} of ${count(m.openWhileHeld)} sockets still open ${scenario.holdSeconds} s later, having answered ${count(m.pongs)} pings`
      ]
    default:
      return [scenario.attack, '—']
  }
}

/** The attacks' section: one row per attack, growth over each server's own idle baseline (after GC). */
export function renderAttacks (results) {
  const attacks = Object.values(results.scenarios).filter((s) => s.name === 'attacks')
  if (attacks.length === 0) return []
  const rounds = attacks[0].rounds
  const lines = [
    '## Attacks from one address, default options', '',
    'The plugin registered with no options at all, every attack from 127.0.0.1 against a server process of its own; ' +
    'growth is the server\'s memory after GC while the attack is held (the ping flood: once it is over) less its idle baseline just before, ' +
    `peak RSS the highest seen every 10 ms (no GC). MB = 10⁶ B; medians over ${rounds} round${rounds === 1 ? '' : 's'}.`, '',
    '| attack | what the server did | idle baseline RSS (MB) | RSS growth (MB) | heap growth (MB) | peak RSS growth (MB) |',
    '|---|---|---:|---:|---:|---:|'
  ]
  for (const scenario of attacks) {
    const m = scenario.contenders.plugin?.median
    if (m === undefined) {
      lines.push(`| ${ATTACK_NAMES[scenario.attack]} | not run (the plugin was not among the contenders) | — | — | — | — |`)
      continue
    }
    const [what, did] = attackStory(scenario, m)
    lines.push(`| ${ATTACK_NAMES[scenario.attack]}: ${what} | ${did} | ${mb(m.baselineRssBytes)} | ${mb(m.rssGrowthBytes)} | ${mb(m.heapGrowthBytes)} | ${mb(m.peakRssGrowthBytes)} |`)
  }
  lines.push('')
  return lines
}

function describe (scenario) {
  switch (scenario.name) {
    case 'echo': return `Echo, ${scenario.bytes} B: ${scenario.connections} connections × ${scenario.inFlight} in flight, ${scenario.seconds} s × ${scenario.rounds} rounds`
    case 'idle': return `Idle connections: ${scenario.connections.toLocaleString('en-US')}, memory after GC`
    case 'idle-cluster': return `Idle connections across ${scenario.instances} instances: ${scenario.connections.toLocaleString('en-US')}, one load process per instance, ${scenario.heartbeatMs} ms heartbeat, ${scenario.seconds} s × ${scenario.rounds} round${scenario.rounds === 1 ? '' : 's'}`
    case 'keepalive': return `Keep-alive: ${scenario.connections.toLocaleString('en-US')} idle connections, ${scenario.heartbeatMs} ms heartbeat, ${scenario.seconds} s × ${scenario.rounds} rounds`
    case 'compression-idle': return `Compression, idle: ${scenario.connections.toLocaleString('en-US')} connections whose clients offer permessage-deflate, memory after GC`
    case 'compression-active': return `Compression, active: ${scenario.connections.toLocaleString('en-US')} connections, ${scenario.kind} messages (${KIND_SIZES[scenario.kind]}) broadcast for ${scenario.warmSeconds} s of warm-up and a ${scenario.soakSeconds} s soak, one chat message up per ${scenario.uploadEvery} received, × ${scenario.rounds} round${scenario.rounds === 1 ? '' : 's'}`
    case 'publish': return `Publish to ${scenario.connections.toLocaleString('en-US')} local subscribers of one topic: ${scenario.bytes.toLocaleString('en-US')} B text, ${scenario.publishes} publishes (after ${scenario.warmups} unmeasured) × ${scenario.rounds} round${scenario.rounds === 1 ? '' : 's'}`
    case 'publish-cluster': return `Publish across ${scenario.instances} instances through one redis-server: ${scenario.connections.toLocaleString('en-US')} subscribers spread evenly over them, one publisher on the first, ${scenario.bytes.toLocaleString('en-US')} B text, ${scenario.publishes} publishes at ${scenario.rate}/s (after ${scenario.warmups}+ unmeasured) × ${scenario.rounds} round${scenario.rounds === 1 ? '' : 's'}`
    case 'fanout': return `Fan-out: one ${scenario.bytes} B message to ${scenario.connections.toLocaleString('en-US')} connections, ${scenario.broadcasts} broadcasts × ${scenario.rounds} rounds`
    default: return `Slow consumer: a client that stops reading, ${scenario.bytes / 1024} KiB messages for ${scenario.seconds} s`
  }
}
