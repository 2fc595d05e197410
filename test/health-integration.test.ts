// The two health examples of the README, run as written.
import t from 'tap'
import Fastify from 'fastify'
import underPressure from '@fastify/under-pressure'
import WebSocket from 'ws'
import reliableWs = require('../index')
import { connect } from './helpers'

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
