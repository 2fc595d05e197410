// The two health examples of docs/operations.md, run as written.
import t from 'tap'
import Fastify from 'fastify'
import underPressure from '@fastify/under-pressure'
import WebSocket from 'ws'
import reliableWs = require('../../index')
import { connect, RawPeer, waitFor } from '../helpers/helpers'

t.test("the app's own health route returns app.wsStats", async (t) => {
  const app = Fastify()
  await app.register(reliableWs)
  app.get('/ws', { websocket: true }, () => {})
  app.get('/healthz', async () => app.wsStats)
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const port = (app.server.address() as any).port
  const ws = await connect(`ws://127.0.0.1:${port}/ws`)
  const body = await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()
  t.equal(body.connections.active, 1)
  t.equal(body.draining, false)
  ws.close()
})

t.test('@fastify/under-pressure healthCheck fed from wsStats sheds new upgrades with 503', async (t) => {
  let limit = 10
  const app = Fastify()
  await app.register(reliableWs)
  await app.register(underPressure, {
    healthCheck: async () => {
      const { connections, backpressure, draining } = app.wsStats
      return !draining && connections.active < limit && backpressure.bufferedBytes < 64 * 1024 * 1024
    },
    healthCheckInterval: 20
  })
  app.get('/ws', { websocket: true }, () => {})
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const url = `ws://127.0.0.1:${(app.server.address() as any).port}/ws`
  const first = await connect(url)
  limit = 1
  await new Promise((resolve) => setTimeout(resolve, 100))
  const refused = await new Promise<any>((resolve) => {
    const ws = new WebSocket(url)
    ws.on('unexpected-response', (_req, res) => { resolve(res); res.resume() })
    ws.on('open', () => resolve(null))
    ws.on('error', () => {})
  })
  t.ok(refused, 'the upgrade was refused')
  t.equal(refused.statusCode, 503)
  t.ok(refused.headers['retry-after'], 'with Retry-After')
  first.close()
})

t.test("while app.close() drains: under-pressure's healthCheck turns false beside the plugin's health route's 503", async (t) => {
  const app = Fastify()
  await app.register(reliableWs, { health: true, shutdown: { timeoutMs: 5_000 } })
  const checks: boolean[] = []
  await app.register(underPressure, {
    healthCheck: async () => {
      const { connections, draining } = app.wsStats
      const healthy = !draining && connections.active < 50_000
      checks.push(healthy)
      return healthy
    },
    healthCheckInterval: 20
  })
  app.get('/ws', { websocket: true }, () => {})
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as any).port
  const health = async (): Promise<{ status: number, body: any }> => {
    const response = await fetch(`http://127.0.0.1:${port}/health/ws`)
    return { status: response.status, body: await response.json() }
  }
  // A peer that never answers the close frame keeps the server draining until it leaves.
  const peer = await RawPeer.connect(port, '/ws')
  t.equal(app.isUnderPressure(), false, 'healthy while serving')
  t.equal((await health()).status, 200)

  const closing = app.close()
  await waitFor(() => app.wsStats.draining, 3000, 'draining')
  checks.length = 0
  await waitFor(() => checks.length >= 1, 3000, 'a health check while draining')
  t.equal(checks.at(-1), false, 'the healthCheck answers false')
  t.equal(app.isUnderPressure(), true, 'under-pressure reports the app under pressure')
  const { status, body } = await health()
  t.equal(status, 503)
  t.equal(body.status, 'draining')
  t.equal(body.connections.active, 1, 'the peer is still being waited for')
  peer.destroy()
  await closing
})
