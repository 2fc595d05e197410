/* global uPlot */
// Draws app.wsStats, pushed once a second over /ws/stats, as charts of the last five minutes.
'use strict'

const HISTORY_S = 300
const CAUSES = ['client', 'server', 'heartbeat', 'backpressure', 'shutdown', 'error', 'rateLimit', 'idle', 'replaced', 'session']
const COLORS = ['#2563eb', '#16a34a', '#dc2626', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#64748b', '#854d0e', '#0f766e']

const time = []
const columns = {
  active: [],
  received: [],
  sent: [],
  bytesIn: [],
  bytesOut: [],
  p50: [],
  p99: [],
  dropped: [],
  invalid: [],
  timeouts: [],
  ...Object.fromEntries(CAUSES.map((cause) => [cause, []]))
}

function chart (id, names) {
  const element = document.getElementById(id)
  // eslint-disable-next-line new-cap -- uPlot is the library's own name for its constructor
  const plot = new uPlot({
    width: element.clientWidth,
    height: 200,
    legend: { live: false },
    scales: { x: { time: true }, y: { range: (_u, min, max) => [0, Math.max(1, max * 1.1)] } },
    axes: [{}, { size: 60 }],
    series: [{}, ...names.map(([label], i) => ({ label, stroke: COLORS[i % COLORS.length], width: 2, points: { show: false } }))]
  }, [time, ...names.map(() => [])], element)
  return { plot, element, keys: names.map(([, key]) => key) }
}

const charts = [
  chart('chart-connections', [['active', 'active']]),
  chart('chart-messages', [['received', 'received'], ['sent', 'sent']]),
  chart('chart-bytes', [['in', 'bytesIn'], ['out', 'bytesOut']]),
  chart('chart-latency', [['p50', 'p50'], ['p99', 'p99']]),
  chart('chart-drops', [['dropped', 'dropped'], ['invalid', 'invalid'], ['heartbeat timeouts', 'timeouts']]),
  chart('chart-closes', CAUSES.map((cause) => [cause, cause]))
]

window.addEventListener('resize', () => {
  for (const { plot, element } of charts) plot.setSize({ width: element.clientWidth, height: 200 })
})

let previous = null

/** Counters become rates: the change since the last snapshot, per second. */
function rate (now, before, dt) {
  return before === undefined ? 0 : Math.max(0, now - before) / dt
}

function add ({ at, stats }) {
  const dt = previous === null ? 1 : Math.max(0.001, (at - previous.at) / 1000)
  const last = previous?.stats
  const point = {
    active: stats.connections.active,
    received: rate(stats.messages.received, last?.messages.received, dt),
    sent: rate(stats.messages.sent, last?.messages.sent, dt),
    bytesIn: rate(stats.bytes.received, last?.bytes.received, dt) / 1024,
    bytesOut: rate(stats.bytes.sent, last?.bytes.sent, dt) / 1024,
    p50: stats.heartbeat.latencyMs.p50,
    p99: stats.heartbeat.latencyMs.p99,
    dropped: rate(stats.messages.dropped, last?.messages.dropped, dt),
    invalid: rate(stats.messages.invalid, last?.messages.invalid, dt),
    timeouts: rate(stats.heartbeat.timeouts, last?.heartbeat.timeouts, dt)
  }
  for (const cause of CAUSES) point[cause] = rate(stats.closeCauses[cause] ?? 0, last === undefined ? undefined : (last.closeCauses[cause] ?? 0), dt)
  previous = { at, stats }

  time.push(at / 1000)
  for (const [key, values] of Object.entries(columns)) values.push(point[key])
  while (time.length > 0 && time[0] < time[time.length - 1] - HISTORY_S) {
    time.shift()
    for (const values of Object.values(columns)) values.shift()
  }
  for (const { plot, keys } of charts) plot.setData([time, ...keys.map((key) => columns[key])])
  show(stats, point)
}

function show (stats, point) {
  const ms = (value) => value === null ? '–' : value.toFixed(2)
  const text = {
    'tile-active': String(stats.connections.active),
    'tile-peak': String(stats.connections.peak),
    'tile-in': point.received.toFixed(0),
    'tile-out': point.sent.toFixed(0),
    'tile-p50': ms(stats.heartbeat.latencyMs.p50),
    'tile-p99': ms(stats.heartbeat.latencyMs.p99),
    'tile-dropped': String(stats.messages.dropped),
    'tile-timeouts': String(stats.heartbeat.timeouts),
    'tile-closed': String(stats.connections.closed)
  }
  for (const [id, value] of Object.entries(text)) document.getElementById(id).textContent = value
}

const status = document.getElementById('status')
const button = document.getElementById('load')

function connect () {
  const ws = new WebSocket(location.origin.replace(/^http/, 'ws') + '/ws/stats')
  ws.onopen = () => { status.textContent = 'live'; status.className = 'status live' }
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data)
    button.disabled = message.load
    add(message)
  }
  ws.onclose = (event) => {
    status.textContent = `disconnected (${event.code}), retrying…`
    status.className = 'status down'
    setTimeout(connect, 1000)
  }
}

button.onclick = async () => {
  button.disabled = true
  await fetch('/dashboard/load', { method: 'POST' })
}

connect()
