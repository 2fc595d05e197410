import t from 'tap'
import { bootWith, closeEvent, collect, connect, sleep, start, waitFor } from '../helpers/helpers'

const INVALID = { type: 'error', message: 'Invalid message' }

t.test('json: true parses text messages, answers invalid ones and stays open', async (t) => {
  const seen: unknown[] = []
  const { app, url } = await start({ heartbeat: false }, (app) => {
    app.get('/chat', { websocket: true, config: { reliable: { json: true } } }, (socket) => {
      socket.on('json', (message) => {
        seen.push(message)
        socket.sendJSON({ echo: message })
      })
    })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/chat'))
  const replies = collect(ws)
  ws.send(JSON.stringify({ hello: 'world' }))
  ws.send('{not json')
  ws.send(Buffer.from('{"binary":true}'), { binary: true })
  ws.send('[1,2,3]')
  ws.send('"just a string"')
  await waitFor(() => replies.length === 5)
  t.same(replies, [{ echo: { hello: 'world' } }, INVALID, INVALID, { echo: [1, 2, 3] }, { echo: 'just a string' }])
  t.same(seen, [{ hello: 'world' }, [1, 2, 3], 'just a string'])
  const stats = app.wsStats
  t.equal(stats.messages.received, 5)
  t.equal(stats.messages.invalid, 2)
  t.equal(stats.messages.sent, 5, 'error replies are messages sent too')
  t.equal(ws.readyState, ws.OPEN)
  ws.close()
})

t.test('messageSchema validates with Ajv: no coercion, nothing removed, errors in the reply', async (t) => {
  const seen: unknown[] = []
  const schema = {
    type: 'object',
    properties: { type: { const: 'say' }, text: { type: 'string' }, count: { type: 'number' } },
    required: ['type', 'text'],
    additionalProperties: false
  }
  const { app, url } = await start({ heartbeat: false }, (app) => {
    app.get('/chat', { websocket: true, config: { reliable: { messageSchema: schema } } }, (socket) => {
      socket.on('json', (message) => { seen.push(message); socket.sendJSON({ ok: true }) })
    })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/chat'))
  const replies = collect(ws) as any[]
  ws.send(JSON.stringify({ type: 'say', text: 'hi', count: 2 }))
  ws.send(JSON.stringify({ type: 'say', text: 'hi', count: '2' }))
  ws.send(JSON.stringify({ type: 'say' }))
  ws.send(JSON.stringify({ type: 'say', text: 'hi', extra: 1 }))
  ws.send('nope')
  await waitFor(() => replies.length === 5)
  t.same(replies[0], { ok: true })
  for (const [i, keyword] of [[1, 'type'], [2, 'required'], [3, 'additionalProperties']] as const) {
    t.equal(replies[i].type, 'error')
    t.equal(replies[i].message, 'Invalid message')
    t.equal(replies[i].errors[0].keyword, keyword, `reply ${i} names the failing keyword`)
  }
  t.same(replies[4], INVALID, 'unparseable text gets the plain error')
  t.same(seen, [{ type: 'say', text: 'hi', count: 2 }], 'only the valid message reached the handler, unchanged')
  t.equal(app.wsStats.messages.invalid, 4)
  ws.close()
})

t.test('a message schema Ajv cannot compile fails the route at declaration', async (t) => {
  await t.rejects(bootWith({}, (app) => {
    app.get('/bad', { websocket: true, config: { reliable: { messageSchema: { type: 'nonsense' } } } }, () => {})
  }), { code: 'FST_RELIABLE_WS_INVALID_OPTION', message: /config\.reliable of \/bad\.messageSchema/ })
})

t.test("a 'json' listener that throws closes that socket with 1011; others are untouched", async (t) => {
  const disconnects: any[] = []
  const { app, url } = await start({ heartbeat: false, onDisconnect: (_s, info) => { disconnects.push(info) } }, (app) => {
    app.get('/chat', { websocket: true, config: { reliable: { json: true } } }, (socket) => {
      socket.on('json', (message: any) => {
        if (message.explode) throw new Error('listener bug')
        socket.sendJSON(message)
      })
    })
  })
  t.teardown(() => app.close())
  const victim = await connect(url('/chat'))
  const bystander = await connect(url('/chat'))
  const bystanderReplies = collect(bystander)
  const closed = closeEvent(victim)
  victim.send(JSON.stringify({ explode: true }))
  const { code, reason } = await closed
  t.equal(code, 1011)
  t.equal(reason, 'Internal server error', 'no internals leak to the peer')
  bystander.send(JSON.stringify({ n: 1 }))
  await waitFor(() => bystanderReplies.length === 1)
  t.same(bystanderReplies, [{ n: 1 }])
  await waitFor(() => disconnects.length === 1)
  t.equal(disconnects[0].cause, 'error')
  t.equal(app.wsStats.errors, 1)
  bystander.close()
})

t.test('routes without json do not parse', async (t) => {
  let jsonEvents = 0
  const { app, url } = await start({ heartbeat: false }, (app) => {
    app.get('/raw', { websocket: true }, (socket) => {
      socket.on('json', () => jsonEvents++)
      socket.on('message', (data) => socket.send(data.toString()))
    })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/raw'))
  const replies = collect(ws)
  ws.send('{"a":1}')
  ws.send('not json')
  await waitFor(() => replies.length === 2)
  await sleep(20)
  t.equal(jsonEvents, 0)
  t.equal(app.wsStats.messages.invalid, 0)
  ws.close()
})
