// The recipes of docs/recipes.md, run as written against the build (`npm test` builds first): a recipe can compile and
// still be wrong (a hook that runs before the schema it relies on), so these are driven over real sockets. Each block
// is transpiled as it stands; the test only appends an export of what it declares, and points a client's
// ws://127.0.0.1:3000 at the app under test.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import t from 'tap'
import ts from 'typescript'
import WebSocket from 'ws'

const root = join(__dirname, '..', '..')
const recipes = readFileSync(join(root, 'docs/recipes.md'), 'utf8')
const blocks = [...recipes.matchAll(/^```ts\n([\s\S]*?)^```/gm)].map((match) => match[1])
const dir = mkdtempSync(join(tmpdir(), 'docs-run-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

// The block holding `marker`: failing to find it means the recipe changed, and this test must follow.
function block (marker: string): string {
  const found = blocks.filter((code) => code.includes(marker))
  if (found.length !== 1) throw new Error(`expected one recipe with ${JSON.stringify(marker)}, found ${found.length}`)
  return found[0]
}

// The package resolves to its build, anything else to this repository's node_modules, by absolute URL: the module
// lives in a temporary directory.
function specifier (name: string): string {
  if (name === 'fastify-reliable-ws') return pathToFileURL(join(root, 'dist/index.js')).href
  if (name === 'fastify-reliable-ws/client') return pathToFileURL(join(root, 'dist/lib/client/index.js')).href
  return name.startsWith('node:') ? name : pathToFileURL(require.resolve(name, { paths: [root] })).href
}

let count = 0
async function load (code: string, exports: string): Promise<any> {
  const { outputText } = ts.transpileModule(`${code}\nexport { ${exports} }\n`, {
    compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 }
  })
  const file = join(dir, `recipe-${count++}.mjs`)
  writeFileSync(file, outputText.replace(/from '([^']+)'/g, (_match, name: string) => `from '${specifier(name)}'`))
  return await import(pathToFileURL(file).href)
}

// What an upgrade gets: its HTTP status when refused, else the first message.
function probe (url: string, options?: WebSocket.ClientOptions): Promise<number | string> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, options)
    ws.on('unexpected-response', (_request, response) => { resolve(response.statusCode ?? 0); ws.terminate() })
    ws.on('message', (data) => { resolve(String(data)); ws.close() })
    ws.on('error', () => {})
  })
}

t.test('authentication with a token: header or query, typed and validated before the hook, 401 without', async (t) => {
  const { app } = await load(block('preHandler: async (request, reply)'), 'app')
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const url = `ws://127.0.0.1:${app.server.address().port}/chat`
  t.equal(await probe(url), 401, 'no token')
  t.equal(await probe(`${url}?token=nope`), 401, 'a wrong token')
  t.equal(await probe(`${url}?token=let-me-in`), 'hello alice', 'a token in the query string')
  t.equal(await probe(`${url}?token=let-me-in&token=let-me-in`), 400, 'two tokens: refused by the schema before the hook')
  t.equal(await probe(url, { headers: { authorization: 'Bearer let-me-in' } }), 'hello alice', 'a token in the Authorization header')
  t.equal(app.wsStats.connections.rejected, 3, 'the three refusals count as rejected upgrades')

  // The Node client with headers, pointed at this app.
  const client = block('class AuthorizedWebSocket extends WebSocket').replace('ws://127.0.0.1:3000/', `ws://127.0.0.1:${app.server.address().port}/`)
  const { ws } = await load(client, 'ws')
  const greeting = await new Promise((resolve) => ws.addEventListener('message', (event: MessageEvent) => resolve(event.data)))
  t.equal(String(greeting), 'hello alice', 'the client subclass sends its Authorization header')
  ws.close()
})

t.test('rooms with sessions: a member away keeps its place, and gets what the room said meanwhile once it is back', async (t) => {
  const { app, rooms } = await load(block('const member: Member = socket.session ?? socket'), 'app, rooms')
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(() => app.close())
  const { ReliableWebSocket } = await import(pathToFileURL(join(root, 'dist/lib/client/index.js')).href)
  const url = `ws://127.0.0.1:${app.server.address().port}/rooms/a`
  const until = async (done: () => boolean): Promise<void> => {
    for (const deadline = Date.now() + 3000; !done() && Date.now() < deadline;) await new Promise((resolve) => setTimeout(resolve, 10))
  }
  // Away for 300 ms after a drop: long enough for the room to speak while it is gone.
  const reliable = new ReliableWebSocket(url, { WebSocket, backoff: { initialDelayMs: 300, maxDelayMs: 300, jitter: 'none' } })
  const received: unknown[] = []
  reliable.addEventListener('message', (event: MessageEvent) => received.push(JSON.parse(String(event.data)).message.text))
  const opened = new Promise((resolve) => reliable.addEventListener('open', resolve, { once: true }))
  const plain = await new Promise<WebSocket>((resolve) => { const ws = new WebSocket(url); ws.once('open', () => resolve(ws)) })
  await opened
  t.ok(reliable.session, 'the reliable client has a session')

  plain.send(JSON.stringify({ text: 'one' }))
  await until(() => received.length === 1)
  // The reliable client's connection dies; the room speaks while it is away.
  const back = new Promise((resolve) => reliable.addEventListener('reconnected', resolve, { once: true }))
  const [socket] = [...app.websocketServer.clients].filter((socket: any) => socket.session !== null) as any[]
  const session = socket.session
  socket.terminate()
  await until(() => !session.connected)
  plain.send(JSON.stringify({ text: 'two' }))
  await back
  plain.send(JSON.stringify({ text: 'three' }))
  await until(() => received.length >= 3)
  t.same(received, ['one', 'two', 'three'], 'what was said while it was away arrives once, in order')
  t.equal(rooms.get('a').size, 2, 'one member per client, however often it reconnects')
  reliable.close()
  plain.close()
})

t.test('testing routes without a port: the injectWS recipe runs to its end', async (t) => {
  const lines: unknown[] = []
  const log = console.log
  console.log = (...args: unknown[]) => { lines.push(args.join(' ')) }
  try {
    await load(block('app.injectWS('), 'app')
  } finally {
    console.log = log
  }
  t.same(lines, ['{"echo":{"hi":1}}'])
})
