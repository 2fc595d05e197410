import t from 'tap'
import type { FastifyInstance } from 'fastify'
import type WebSocket from 'ws'
import { closeEvent, connect, RawPeer, sleep, start, waitFor } from '../helpers/helpers'
import type { Options } from '../helpers/helpers'

type Line = Record<string, any>

/** Starts an app whose pino logger writes every line, parsed, into `lines`. */
async function logged (options: Options, routes: (app: FastifyInstance) => void, level = 'info') {
  const lines: Line[] = []
  const stream = { write (line: string) { lines.push(JSON.parse(line)) } }
  const started = await start(options, routes, { logger: { level, stream } })
  return { ...started, lines, find: (msg: string) => lines.filter((line) => line.msg === msg) }
}

const INFO = 30
const WARN = 40
const DEBUG = 20

const CHUNK = Buffer.alloc(64 * 1024, 7)

function floodRoute (app: FastifyInstance): void {
  app.get('/flood', { websocket: true }, (socket) => {
    socket.on('message', () => { for (let i = 0; i < 200; i++) socket.send(CHUNK) })
  })
}

async function stalled (url: string): Promise<WebSocket> {
  const ws = await connect(url)
  ;(ws as any)._socket.pause()
  ws.send('go')
  return ws
}

t.test('open and close lines at info through the request logger: reqId, socket id, route, address, code, reason, cause, duration', async (t) => {
  const ids: string[] = []
  const { app, url, find } = await logged({ heartbeat: false }, (app) => {
    app.get('/rooms/:id', { websocket: true }, (socket) => { ids.push(socket.id) })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/rooms/7'))
  await waitFor(() => find('websocket opened').length === 1)
  const [opened] = find('websocket opened')
  t.match(opened, { level: INFO, socketId: ids[0], route: '/rooms/:id', ip: '127.0.0.1' })
  t.type(opened.reqId, 'string', "the request's child logger: reqId is on the line")
  const incoming = find('incoming request').find((line) => line.req.url === '/rooms/7')
  t.equal(opened.reqId, incoming?.reqId, 'the same reqId as the upgrade request')
  const closed = closeEvent(ws)
  ws.close(4001, 'done here')
  await closed
  await waitFor(() => find('websocket closed').length === 1)
  const [line] = find('websocket closed')
  t.match(line, { level: INFO, reqId: opened.reqId, socketId: ids[0], route: '/rooms/:id', ip: '127.0.0.1', code: 4001, reason: 'done here', cause: 'client' })
  t.ok(line.durationMs >= 0 && line.durationMs < 5000, `durationMs ${line.durationMs}`)
})

t.test('a configured level: debug lines appear at debug and vanish at a higher logger level', async (t) => {
  const debug = await logged({ heartbeat: false, logging: { connections: 'debug' } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => { socket.close(1000) })
  }, 'debug')
  t.teardown(() => debug.app.close())
  await closeEvent(await connect(debug.url('/ws')))
  await waitFor(() => debug.find('websocket closed').length === 1)
  t.equal(debug.find('websocket opened')[0].level, DEBUG)
  t.match(debug.find('websocket closed')[0], { level: DEBUG, code: 1000, cause: 'server' })

  const info = await logged({ heartbeat: false, logging: { connections: 'debug' } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => { socket.close(1000) })
  }, 'info')
  t.teardown(() => info.app.close())
  await closeEvent(await connect(info.url('/ws')))
  await waitFor(() => info.app.wsStats.connections.closed === 1)
  t.equal(info.find('websocket opened').length + info.find('websocket closed').length, 0)
})

t.test('connections: false logs no connection lines (and onDisconnect still runs)', async (t) => {
  const disconnects: number[] = []
  const { app, url, find } = await logged({ heartbeat: false, logging: { connections: false }, onDisconnect: (_socket, info) => { disconnects.push(info.code) } }, (app) => {
    app.get('/ws', { websocket: true }, () => {})
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  const closed = closeEvent(ws)
  ws.close(1000)
  await closed
  await waitFor(() => disconnects.length === 1)
  t.same(disconnects, [1000])
  t.equal(find('websocket opened').length + find('websocket closed').length, 0)
})

t.test('heartbeat timeouts warn, at most warningsPerSecond lines a second; the next line counts those held back', async (t) => {
  const { app, port, lines } = await logged({ heartbeat: { intervalMs: 30 }, logging: { connections: false, warningsPerSecond: 2 } }, (app) => {
    app.get('/ws', { websocket: true }, () => {})
  })
  t.teardown(() => app.close())
  const MSG = 'websocket peer missed its heartbeat: terminated'
  const warnings = (): Line[] => lines.filter((line) => line.msg === MSG)
  const storm = await Promise.all(Array.from({ length: 8 }, () => RawPeer.connect(port, '/ws')))
  await waitFor(() => app.wsStats.heartbeat.timeouts === 8, 3000, 'eight timeouts')
  const inStorm = warnings().length
  t.ok(inStorm >= 1 && inStorm <= 4, `${inStorm} lines for 8 timeouts (2 per second)`)
  t.match(warnings()[0], { level: WARN, route: '/ws', timeoutMs: 30 })
  t.type(warnings()[0].socketId, 'string')
  t.type(warnings()[0].reqId, 'undefined', 'no request logger kept when connection lines are off')
  await sleep(1100)
  const late = await RawPeer.connect(port, '/ws')
  await waitFor(() => warnings().length === inStorm + 1, 3000, 'the next line')
  const suppressed = warnings().reduce((sum, line) => sum + (line.suppressed ?? 0), 0)
  t.equal(inStorm + suppressed, 8, 'every timeout of the storm is either logged or counted as suppressed')
  t.ok(warnings().at(-1)!.suppressed > 0, 'the count rides on the next line')
  for (const peer of [...storm, late]) peer.destroy()
})

t.test('backpressure warns, with the request logger when connection lines are on', async (t) => {
  const { app, url, find } = await logged({ heartbeat: false, backpressure: { highWaterMark: 128 * 1024, lowWaterMark: 0 } }, floodRoute)
  t.teardown(() => app.close())
  const ws = await stalled(url('/flood'))
  await waitFor(() => find('websocket backpressure: buffered bytes above highWaterMark').length === 1)
  const [line] = find('websocket backpressure: buffered bytes above highWaterMark')
  t.match(line, { level: WARN, route: '/flood', highWaterMark: 128 * 1024 })
  t.ok(line.bufferedBytes > 128 * 1024)
  t.equal(line.reqId, find('websocket opened')[0].reqId, 'reqId of the upgrade request')
  t.equal(line.socketId, find('websocket opened')[0].socketId)
  ws.terminate()
})

t.test('a slow consumer closed with 1013 warns', async (t) => {
  const { app, url, find } = await logged({ heartbeat: false, backpressure: { highWaterMark: 128 * 1024, lowWaterMark: 0, onLimit: 'close' } }, floodRoute)
  t.teardown(() => app.close())
  const ws = await stalled(url('/flood'))
  await waitFor(() => find('websocket slow consumer: closing with 1013').length === 1)
  t.match(find('websocket slow consumer: closing with 1013')[0], { level: WARN, route: '/flood', highWaterMark: 128 * 1024 })
  ws.terminate()
})

t.test('warningsPerSecond: 0 writes no warning', async (t) => {
  const { app, url, lines } = await logged({ heartbeat: false, backpressure: { highWaterMark: 128 * 1024, lowWaterMark: 0 }, logging: { warningsPerSecond: 0 } }, floodRoute)
  t.teardown(() => app.close())
  const ws = await stalled(url('/flood'))
  await waitFor(() => app.wsStats.backpressure.events === 1)
  t.equal(lines.filter((line) => line.level === WARN).length, 0)
  ws.terminate()
})
