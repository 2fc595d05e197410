// A JSON chat room, an echo route, a health route, Prometheus metrics and a live dashboard, on one register() call,
// and a chat page whose client reconnects and resumes its session (fastify-reliable-ws/client, bundled for browsers
// by the build). Run it with `npm start` (which builds the plugin first); PORT and HOST are honoured. `npm run load`
// gives the dashboard something to show.
import { readFileSync } from 'node:fs'
import fastify from 'fastify'
import { register } from 'prom-client'
import reliableWs from 'fastify-reliable-ws'
import { dashboard } from './dashboard.mjs'

const port = Number(process.env.PORT ?? 3000)
const host = process.env.HOST ?? '127.0.0.1'

const app = fastify({ logger: { level: process.env.LOG_LEVEL ?? 'info' } })

await app.register(reliableWs, {
  heartbeat: { intervalMs: 25_000, timeoutMs: 10_000 },
  health: { path: '/health/ws' },
  // prom-client's default registry, served at /metrics below.
  metrics: true,
  // Connection lines at debug: a load test would otherwise write two info lines per connection.
  logging: { connections: 'debug' }
})

const room = new Set()

app.get('/chat', {
  websocket: true,
  config: {
    reliable: {
      // Clients speaking the reliable subprotocol (the page below) get a session that survives a dropped connection.
      // A member away keeps at most the last 100 messages (64 KiB) for a minute; the plugin's limits bound all
      // sessions together (maxSessions, maxSessionsPerIp, sessionBufferBytes).
      resume: { ttlMs: 60_000, maxBufferedMessages: 100, maxBufferedBytes: 64 * 1024 },
      messageSchema: {
        type: 'object',
        properties: { name: { type: 'string', maxLength: 32 }, text: { type: 'string', minLength: 1, maxLength: 500 } },
        required: ['name', 'text'],
        additionalProperties: false
      }
    }
  }
}, (socket) => {
  // A session outlives its connections: it stays in the room while its client is away, and gets what it missed
  // when the client is back. A plain WebSocket client is in the room while it is connected.
  const member = socket.session ?? socket
  room.add(member)
  if (member === socket) socket.on('close', () => room.delete(socket))
  socket.on('json', ({ name, text }) => {
    const message = { name, text, at: new Date().toISOString() }
    // Backpressure per member: a stalled plain client misses messages, a session that falls too far behind ends
    // (its client is told, and starts afresh); neither grows the heap.
    for (const peer of room) {
      if (peer.ended) room.delete(peer)
      else peer.sendJSON(message)
    }
  })
})

// The route the load generator uses: a short heartbeat, so the dashboard shows round trips and finds vanished
// peers within seconds, and a small send buffer, so a reader that stops reading shows up as drops.
app.get('/echo', {
  websocket: true,
  config: { reliable: { json: true, heartbeat: { intervalMs: 2_000, timeoutMs: 1_000 }, backpressure: { highWaterMark: 256 * 1024, lowWaterMark: 64 * 1024 } } }
}, (socket) => {
  socket.on('json', (message) => socket.sendJSON({ echo: message }))
})

app.get('/metrics', async (_request, reply) => reply.type(register.contentType).send(await register.metrics()))

await app.register(dashboard)

app.get('/', (_request, reply) => {
  reply.type('text/html').send(PAGE)
})

// An application with its own bundler imports 'fastify-reliable-ws/client' instead.
const client = readFileSync(new URL('../dist/browser/client.mjs', import.meta.url))
app.get('/client.mjs', (_request, reply) => {
  reply.type('text/javascript').send(client)
})

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    app.log.info(`${signal}: closing every websocket with 1001, then exiting`)
    app.close().then(() => process.exit(0), () => process.exit(1))
  })
}

await app.listen({ port, host })
const base = `http://${host.includes(':') ? `[${host}]` : host}:${app.server.address().port}`
console.log(`Chat page:  ${base}/`)
console.log(`WebSockets: ${base.replace('http', 'ws')}/chat and ${base.replace('http', 'ws')}/echo`)
console.log(`Health:     ${base}/health/ws`)
console.log(`Metrics:    ${base}/metrics`)
console.log(`Dashboard:  ${base}/dashboard`)

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>fastify-reliable-ws chat</title>
<style>body{font:16px system-ui;max-width:40em;margin:2em auto}#log{height:20em;overflow:auto;border:1px solid #ccc;padding:.5em}</style>
<h1>Chat</h1>
<div id="log"></div>
<form id="form"><input id="name" value="guest" size="8"> <input id="text" size="40" autofocus> <button>Send</button></form>
<script type="module">
import { ReliableWebSocket } from '/client.mjs'
const log = document.getElementById('log')
const line = (text) => { const p = document.createElement('div'); p.textContent = text; log.append(p); log.scrollTop = log.scrollHeight }
const ws = new ReliableWebSocket(location.origin.replace('http', 'ws') + '/chat', { backoff: { initialDelayMs: 500, maxDelayMs: 10_000 } })
ws.onopen = () => line('connected')
ws.addEventListener('reconnecting', (event) => line('connection lost (' + event.code + '), retrying in ' + Math.round(event.delayMs) + ' ms'))
ws.addEventListener('reconnected', () => line('reconnected'))
ws.addEventListener('giveup', (event) => line('gave up (' + event.reason + ', ' + event.code + ')'))
ws.addEventListener('drop', (event) => line('not sent: ' + event.data))
ws.addEventListener('sessionlost', (event) => line('session lost; ' + event.unconfirmed.length + ' message(s) may not have arrived'))
ws.onclose = (event) => { if (!event.willReconnect) line('closed: ' + event.code + ' ' + event.reason) }
ws.onmessage = (event) => {
  const message = JSON.parse(event.data)
  line(message.type === 'error' ? 'error: ' + message.message : message.name + ': ' + message.text)
}
document.getElementById('form').onsubmit = (event) => {
  event.preventDefault()
  // Sent now, or kept while the connection is down and sent in order once it is back: once, whatever the drops.
  ws.sendJSON({ name: document.getElementById('name').value, text: document.getElementById('text').value })
  document.getElementById('text').value = ''
}
</script>
`
