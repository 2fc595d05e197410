// The live dashboard: a page at /dashboard that draws app.wsStats, pushed once a second over /ws/stats (a
// websocket route of the plugin itself), and POST /dashboard/load to start the local load in this process.
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { runLoad } from './load.mjs'

const require = createRequire(import.meta.url)
const page = new URL('./dashboard/', import.meta.url)
// uPlot (a small, dependency-free canvas chart) from node_modules: the page needs no network beyond this server.
const ASSETS = {
  'index.html': ['text/html; charset=utf-8', new URL('index.html', page)],
  'dashboard.js': ['text/javascript; charset=utf-8', new URL('dashboard.js', page)],
  'uPlot.min.js': ['text/javascript; charset=utf-8', require.resolve('uplot/dist/uPlot.iife.min.js')],
  'uPlot.min.css': ['text/css; charset=utf-8', require.resolve('uplot/dist/uPlot.min.css')]
}
const LOAD_SECONDS = 30

/** @param {import('fastify').FastifyInstance} app */
export async function dashboard (app) {
  const viewers = new Set()
  let load = null

  app.get('/ws/stats', { websocket: true }, (socket) => {
    viewers.add(socket)
    socket.on('close', () => viewers.delete(socket))
    socket.send(snapshot())
  })

  function snapshot () {
    return JSON.stringify({ at: Date.now(), load: load !== null, stats: app.wsStats })
  }

  // One timer for every viewer, unref'd so it never keeps the process up, and gone with the app.
  const timer = setInterval(() => {
    if (viewers.size === 0) return
    const text = snapshot()
    // send() applies backpressure: a stalled viewer misses frames instead of growing the heap.
    for (const viewer of viewers) viewer.send(text)
  }, 1000)
  timer.unref()
  app.addHook('onClose', async () => clearInterval(timer))

  app.get('/dashboard', (_request, reply) => serve(reply, 'index.html'))
  app.get('/dashboard/:asset', (request, reply) => {
    if (!Object.hasOwn(ASSETS, request.params.asset)) return reply.code(404).send({ message: 'Not found' })
    return serve(reply, request.params.asset)
  })

  app.post('/dashboard/load', async (request, reply) => {
    if (load !== null) return reply.code(409).send({ running: true })
    const { address, family, port } = app.server.address()
    const host = address === '0.0.0.0' || address === '::' ? '127.0.0.1' : family === 'IPv6' ? `[${address}]` : address
    load = runLoad({ base: `http://${host}:${port}`, seconds: LOAD_SECONDS })
    load.then((done) => request.log.info(done, 'dashboard load finished'), (err) => request.log.error({ err }, 'dashboard load failed'))
      .finally(() => { load = null })
    return reply.code(202).send({ running: true, seconds: LOAD_SECONDS })
  })
}

async function serve (reply, name) {
  const [type, file] = ASSETS[name]
  return reply.type(type).send(await readFile(file))
}
