// Needs the build (`npm test` runs it first): checks the published entry point
// from CommonJS and from an ES module, the way an application loads it.
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'

const root = join(__dirname, '..', '..')
const run = promisify(execFile)

const app = (load: string): string => `
${load}
const fastify = require('fastify')
const WebSocket = require('ws')
async function main () {
  const app = fastify()
  await app.register(reliableWs, { health: { path: '/health/ws' } })
  app.get('/chat', { websocket: true, config: { reliable: { json: true } } }, (socket) => {
    socket.on('json', (msg) => socket.sendJSON({ echo: msg }))
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const ws = new WebSocket('ws://127.0.0.1:' + app.server.address().port + '/chat')
  ws.on('open', () => ws.send('{"hi":1}'))
  const reply = await new Promise((resolve) => ws.on('message', (data) => resolve(data.toString())))
  await app.close()
  console.log(reply, typeof reliableWs.default, typeof reliableWs.fastifyReliableWs)
}
main()
`

t.test('the build exists', async (t) => {
  t.ok(existsSync(join(root, 'dist/index.js')), 'run `npm run build` first (npm test does)')
  t.ok(existsSync(join(root, 'dist/index.d.ts')), '.d.ts emitted')
})

t.test('require() loads the plugin', async (t) => {
  const { stdout } = await run(process.execPath, ['-e', app("const reliableWs = require('fastify-reliable-ws')")], { cwd: root })
  t.equal(stdout.trim(), '{"echo":{"hi":1}} function function')
})

t.test('import loads the plugin as the default export', async (t) => {
  const source = app("import reliableWs from 'fastify-reliable-ws'\nimport { createRequire } from 'node:module'\nconst require = createRequire(import.meta.url)")
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', source], { cwd: root })
  t.equal(stdout.trim(), '{"echo":{"hi":1}} function function')
})

// prom-client is an optional peer dependency: an app without it must still load, and asking for metrics must say what is missing.
const withoutPromClient = (options: string): string => `
const Module = require('node:module')
const resolve = Module._resolveFilename
Module._resolveFilename = function (request, ...rest) {
  if (request === 'prom-client') throw Object.assign(new Error("Cannot find module 'prom-client'"), { code: 'MODULE_NOT_FOUND' })
  return resolve.call(this, request, ...rest)
}
const reliableWs = require('fastify-reliable-ws')
const app = require('fastify')()
app.register(reliableWs, ${options})
app.ready().then(() => console.log('ready'), (err) => console.log(err.code, err.message)).finally(() => app.close())
`

t.test('without prom-client installed, metrics: true fails registration with a coded error', async (t) => {
  const { stdout } = await run(process.execPath, ['-e', withoutPromClient('{ metrics: true }')], { cwd: root })
  t.match(stdout.trim(), /^FST_RELIABLE_WS_PROM_CLIENT_MISSING The `metrics` option needs prom-client, an optional peer dependency: npm install prom-client$/)
})

t.test('without prom-client installed, the plugin without metrics never loads it', async (t) => {
  const { stdout } = await run(process.execPath, ['-e', withoutPromClient('{}')], { cwd: root })
  t.equal(stdout.trim(), 'ready')
})

const clientScript = (load: string): string => `
${load}
const ws = new ReliableWebSocket('ws://127.0.0.1:9/', { WebSocket: WS, backoff: { maxRetries: 0 } })
ws.addEventListener('giveup', (event) => console.log(PROTOCOL, event.reason))
`

t.test('the client loads from fastify-reliable-ws/client, with require() and import', async (t) => {
  const required = await run(process.execPath, ['-e', clientScript("const { ReliableWebSocket, PROTOCOL } = require('fastify-reliable-ws/client')\nconst WS = require('ws')")], { cwd: root })
  t.equal(required.stdout.trim(), 'reliable-ws.v1 maxRetries')
  const imported = await run(process.execPath, ['--input-type=module', '-e', clientScript("import { ReliableWebSocket, PROTOCOL } from 'fastify-reliable-ws/client'\nimport WS from 'ws'")], { cwd: root })
  t.equal(imported.stdout.trim(), 'reliable-ws.v1 maxRetries')
})

t.test('the browser build of the client is one self-contained module', async (t) => {
  const source = `import { ReliableWebSocket } from '${join(root, 'dist/browser/client.mjs')}'\nconsole.log(typeof ReliableWebSocket)`
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', source], { cwd: root })
  t.equal(stdout.trim(), 'function')
})
