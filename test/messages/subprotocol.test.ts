// The server's side of the reliable subprotocol, seen by a plain ws client that speaks it by hand.
import t from 'tap'
import { once } from 'node:events'
import WebSocket from 'ws'
import { PROTOCOL } from '../../lib/protocol/protocol'
import { closeEvent, collect, connect, sleep, start, waitFor } from '../helpers/helpers'

const WELCOME = '\u0000{"t":"welcome"}'
const PING = '\u0000{"t":"ping"}'
const PONG = '\u0000{"t":"pong"}'

async function echoServer (t: { teardown: (fn: () => unknown) => void }, options = {}, route = {}): Promise<Awaited<ReturnType<typeof start>>> {
  const server = await start(options, (app) => {
    app.get('/echo', { websocket: true, config: { reliable: route } }, (socket) => {
      socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
    })
    app.get('/plain', { websocket: true, config: { reliable: false } }, () => {})
  })
  t.teardown(() => server.app.close())
  return server
}

/** Text frames exactly as they arrived, control frames included. */
function rawTexts (ws: WebSocket): string[] {
  const texts: string[] = []
  ws.on('message', (data, isBinary) => { if (!isBinary) texts.push(data.toString()) })
  return texts
}

t.test('a reliable route chooses the subprotocol when offered, and says welcome first', async (t) => {
  const { url } = await echoServer(t)
  const ws = new WebSocket(url('/echo'), ['chat', PROTOCOL])
  const texts = rawTexts(ws)
  await once(ws, 'open')
  t.equal(ws.protocol, PROTOCOL)
  await waitFor(() => texts.length === 1, 2000, 'welcome')
  t.same(texts, [WELCOME])
  ws.close()
})

t.test('clients that do not offer it are untouched: no welcome, no escaping', async (t) => {
  const { url } = await echoServer(t)
  const ws = await connect(url('/echo'), { protocol: 'chat' } as any)
  const plain = new WebSocket(url('/echo'))
  const texts = rawTexts(plain)
  await once(plain, 'open')
  plain.send('\u0000raw')
  await waitFor(() => texts.length === 1, 2000, 'echo')
  t.same(texts, ['\u0000raw'], 'a leading U+0000 is plain data without the subprotocol')
  ws.close()
  plain.close()
})

t.test('ping gets pong; control frames are invisible to the app and not counted', async (t) => {
  const { app, url } = await echoServer(t)
  const ws = new WebSocket(url('/echo'), PROTOCOL)
  const texts = rawTexts(ws)
  await once(ws, 'open')
  ws.send(PING)
  ws.send('hello')
  await waitFor(() => texts.length === 3, 2000, 'pong and echo')
  t.same(texts, [WELCOME, PONG, 'hello'], 'the pong comes back; the ping never reached the echo listener')
  const stats = app.wsStats
  t.equal(stats.messages.received, 1, 'only the data message is counted received')
  t.equal(stats.messages.sent, 1, 'welcome and pong are not counted sent')
  ws.close()
})

t.test('text starting with U+0000 is escaped both ways; binary is never touched', async (t) => {
  const { url, app } = await echoServer(t)
  const seen: unknown[] = []
  app.websocketServer.on('connection', (socket) => socket.on('message', (data: Buffer, isBinary: boolean) => seen.push([data.toString('hex'), isBinary])))
  const ws = new WebSocket(url('/echo'), PROTOCOL)
  const received: unknown[] = []
  ws.on('message', (data: Buffer, isBinary) => received.push([data.toString('hex'), isBinary]))
  await once(ws, 'open')
  ws.send('\u0000\u0000x') // the escaped form of '\u0000x'
  ws.send(Buffer.from([0, 1, 2]))
  ws.send(Buffer.from([0, 0]), { binary: false }) // escaped text '\u0000' sent as a buffer
  await waitFor(() => received.length === 4, 2000, 'echoes')
  t.same(seen, [['0078', false], ['000102', true], ['00', false]], 'the app saw each message unescaped')
  t.same(received.slice(1), [['000078', false], ['000102', true], ['0000', false]], 'and its replies were escaped again')
  ws.close()
})

t.test('what the app sends as text is escaped, strings and buffers alike', async (t) => {
  const { app, url } = await start({}, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.send(Buffer.from('\u0000a'), { binary: false })
      socket.send(Buffer.from('b'), { binary: false })
      socket.send('\u0000c')
    })
  })
  t.teardown(() => app.close())
  const ws = new WebSocket(url('/ws'), PROTOCOL)
  const texts = rawTexts(ws)
  await waitFor(() => texts.length === 4, 2000, 'messages')
  t.same(texts, [WELCOME, '\u0000\u0000a', 'b', '\u0000\u0000c'])
  ws.close()
})

t.test('a control frame that is not JSON closes with 1002, counted as a protocol error', async (t) => {
  const { app, url } = await echoServer(t)
  const ws = new WebSocket(url('/echo'), PROTOCOL)
  await once(ws, 'open')
  const other = await connect(url('/echo'))
  ws.send('\u0000{nope')
  const { code, reason } = await closeEvent(ws)
  t.equal(code, 1002)
  const array = new WebSocket(url('/echo'), PROTOCOL)
  await once(array, 'open')
  array.send('\u0000[1]')
  t.equal((await closeEvent(array)).code, 1002, 'nor is JSON that is not an object with a type')
  t.equal(reason, 'Invalid control frame')
  t.equal(app.wsStats.limits.protocolErrors, 2)
  other.send('still here')
  await waitFor(() => collect(other).length === 1, 2000, 'echo to the other client')
  other.close()
})

t.test('unknown control types are ignored, so a newer client can add some', async (t) => {
  const { url } = await echoServer(t)
  const ws = new WebSocket(url('/echo'), PROTOCOL)
  const texts = rawTexts(ws)
  await once(ws, 'open')
  ws.send('\u0000{"t":"future","x":1}')
  ws.send('after')
  await waitFor(() => texts.length === 2, 2000, 'echo')
  t.same(texts, [WELCOME, 'after'])
  t.equal(ws.readyState, WebSocket.OPEN)
  ws.close()
})

t.test('control frames count against the rate limit but do not reset the idle timeout', async (t) => {
  const { app, url } = await echoServer(t, {}, { limits: { messagesPerSecond: 5, burst: 3, onRateLimit: 'close', idleTimeoutMs: 150 } })
  const flooder = new WebSocket(url('/echo'), PROTOCOL)
  await once(flooder, 'open')
  for (let i = 0; i < 10; i++) flooder.send(PING)
  t.equal((await closeEvent(flooder)).code, 1008, 'a ping flood is rate limited')

  const idle = new WebSocket(url('/echo'), PROTOCOL)
  await once(idle, 'open')
  const pinging = setInterval(() => idle.send(PING), 40)
  t.teardown(() => clearInterval(pinging))
  const closed = await closeEvent(idle)
  clearInterval(pinging)
  t.same(closed, { code: 1000, reason: 'Idle timeout' }, 'pings alone do not keep a socket active')
  t.equal(app.wsStats.limits.idleTimeouts, 1)
})

t.test('a route that opted out never chooses the subprotocol', async (t) => {
  const { url } = await echoServer(t)
  const ws = new WebSocket(url('/plain'), [PROTOCOL, 'chat'])
  await once(ws, 'open')
  t.equal(ws.protocol, 'chat', "ws's default then picks the first other protocol")
  ws.close()
  const only = new WebSocket(url('/plain'), PROTOCOL)
  only.on('error', () => {})
  const [err] = await once(only, 'error')
  t.match(err.message, /no subprotocol/, 'offering only the subprotocol there gets none')
})

t.test("the app's own handleProtocols still decides everything else", async (t) => {
  const offered: string[][] = []
  const { app, url } = await start({
    websocket: {
      options: {
        handleProtocols (this: unknown, protocols: Set<string>) {
          // As ws calls it: a method of its options.
          if ((this as { handleProtocols?: unknown } | undefined)?.handleProtocols === undefined) throw new Error('this is not ws\'s options')
          offered.push([...protocols])
          return protocols.has('v2') ? 'v2' : false
        }
      }
    }
  }, (app) => {
    app.get('/ws', { websocket: true }, () => {})
    app.get('/plain', { websocket: true, config: { reliable: false } }, () => {})
  })
  t.teardown(() => app.close())
  const reliable = new WebSocket(url('/ws'), [PROTOCOL, 'v2'])
  await once(reliable, 'open')
  t.equal(reliable.protocol, PROTOCOL, 'the subprotocol wins on a reliable route')
  const mine = new WebSocket(url('/ws'), ['v1', 'v2'])
  await once(mine, 'open')
  t.equal(mine.protocol, 'v2')
  const plain = new WebSocket(url('/plain'), [PROTOCOL, 'v2'])
  await once(plain, 'open')
  t.equal(plain.protocol, 'v2')
  t.same(offered, [['v1', 'v2'], ['v2']], 'the app never sees the subprotocol offered')
  for (const ws of [reliable, mine, plain]) ws.close()
  await sleep(10)
})

t.test('a pong is held back while the app is mid-way through a fragmented message', async (t) => {
  let server: any
  const { app, url } = await start({}, (app) => {
    app.get('/ws', { websocket: true }, (socket) => { server = socket })
  })
  t.teardown(() => app.close())
  const ws = new WebSocket(url('/ws'), PROTOCOL)
  const texts = rawTexts(ws)
  await once(ws, 'open')
  await waitFor(() => server !== undefined && texts.length === 1, 2000, 'welcome')
  server.send('par', { fin: false })
  ws.send(PING)
  await sleep(50)
  server.send('t', { fin: true })
  ws.send(PING)
  await waitFor(() => texts.length === 3, 2000, 'message and pong')
  t.same(texts, [WELCOME, 'part', PONG], 'the fragmented message arrived whole, with one pong after it')
  ws.close()
})

t.test('a buffer the app sends with no options goes out as binary, untouched, even when it starts with 0x00', async (t) => {
  const { app, url } = await start({}, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.send(Buffer.from([0, 1, 2]))
      socket.send(new Uint8Array([0, 0]), () => {})
      socket.send(Buffer.from([0]), { binary: true })
    })
  })
  t.teardown(() => app.close())
  const ws = new WebSocket(url('/ws'), PROTOCOL)
  const binary: string[] = []
  ws.on('message', (data: Buffer, isBinary) => { if (isBinary) binary.push(data.toString('hex')) })
  await waitFor(() => binary.length === 3, 2000, 'three binary messages')
  t.same(binary, ['000102', '0000', '00'])
  ws.close()
})
