import { once } from 'node:events'
import net from 'node:net'
import zlib, { constants, deflateRawSync } from 'node:zlib'
import t from 'tap'
import type { Test } from 'tap'
import WebSocket from 'ws'
import type { FastifyInstance } from 'fastify'
import { bootWith, buildFrame, closeEvent, collect, connect, OPCODE, RawPeer, start, upgradeRequest, waitFor } from '../helpers/helpers'
import type { Options } from '../helpers/helpers'
import { PROTOCOL } from '../../lib/protocol/protocol'
import { kRoute } from '../../lib/core/symbols'

// rsv1, in buildFrame's RSV field: the frame's payload is compressed.
const RSV1 = 4
// What the preset adds to every answer: each message compressed on its own, both ways.
const NO_TAKEOVER = 'client_no_context_takeover; server_max_window_bits=15; server_no_context_takeover'

function echo (app: FastifyInstance): void {
  app.get('/ws', { websocket: true }, (socket) => {
    socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
  })
}

/** The status line and headers a server answers an upgrade request with `extra` header lines. */
async function handshake (port: number, path: string, extra: string[]): Promise<string> {
  const socket = net.connect(port, '127.0.0.1')
  socket.on('error', () => {})
  await once(socket, 'connect')
  socket.write(upgradeRequest(port, path, extra))
  let head = ''
  for await (const chunk of socket) {
    head += (chunk as Buffer).toString('latin1')
    if (head.includes('\r\n\r\n')) break
  }
  socket.destroy()
  return head.slice(0, head.indexOf('\r\n\r\n'))
}

/** The extension the server accepted, its parameters sorted (ws keeps the order of the offer's). */
function extensionsHeader (head: string): string | null {
  const header = /^sec-websocket-extensions: (.*)$/im.exec(head)?.[1]
  if (header === undefined) return null
  const [name, ...params] = header.split('; ')
  return [name, ...params.sort()].join('; ')
}

/** A raw deflate stream of `data` as one permessage-deflate message: without the 00 00 ff ff the RFC drops. */
function deflateMessage (data: Buffer): Buffer {
  const out = deflateRawSync(data, { finishFlush: constants.Z_SYNC_FLUSH })
  return out.subarray(0, out.length - 4)
}

t.test('per route: the plugin level applies, a route turns it off or on, opted-out routes never negotiate', async (t) => {
  const { app, url } = await start({ heartbeat: false, compression: true }, (app) => {
    const handler = (socket: WebSocket): void => { socket.send('hi') }
    app.get('/inherits', { websocket: true }, handler)
    app.get('/off', { websocket: true, config: { reliable: { compression: false } } }, handler)
    app.get('/tuned', { websocket: true, config: { reliable: { compression: { serverMaxWindowBits: 12, clientMaxWindowBits: 11 } } } }, handler)
    app.get('/opted-out', { websocket: true, config: { reliable: false } }, handler)
  })
  t.teardown(() => app.close())
  const negotiated = async (path: string): Promise<string> => {
    const ws = await connect(url(path))
    const extensions = ws.extensions
    ws.close()
    return extensions
  }
  t.equal(await negotiated('/inherits'), 'permessage-deflate', 'the plugin level')
  t.equal(await negotiated('/off'), '', 'declined on a route that turned it off')
  t.equal(await negotiated('/opted-out'), '', 'declined on a route the plugin does not handle')
  const port = (app.server.address() as net.AddressInfo).port
  const tuned = extensionsHeader(await handshake(port, '/tuned', ['Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits']))
  t.equal(tuned, 'permessage-deflate; client_max_window_bits=11; client_no_context_takeover; server_max_window_bits=12; server_no_context_takeover', "the route's windows")
  const preset = extensionsHeader(await handshake(port, '/inherits', ['Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits']))
  t.equal(preset, `permessage-deflate; client_max_window_bits=15; ${NO_TAKEOVER}`, "the preset's windows, no context takeover")
})

t.test('off at the plugin level (the default), a route may turn it on; with no offer nothing is negotiated', async (t) => {
  const { app, url } = await start({ heartbeat: false }, (app) => {
    app.get('/plain', { websocket: true }, () => {})
    app.get('/on', { websocket: true, config: { reliable: { compression: true } } }, () => {})
  })
  t.teardown(() => app.close())
  const plain = await connect(url('/plain'))
  t.equal(plain.extensions, '')
  const on = await connect(url('/on'))
  t.equal(on.extensions, 'permessage-deflate')
  const unoffered = await connect(url('/on'), { perMessageDeflate: false })
  t.equal(unoffered.extensions, '', 'a client that does not offer it gets none')
  await waitFor(() => app.wsStats.connections.active === 3)
  t.equal(app.wsStats.compression.sockets, 1)
  for (const ws of [plain, on, unoffered]) ws.close()
})

t.test("browsers' offers, and offers ws alone would refuse, are answered as the RFC says", async (t) => {
  const windows = { serverMaxWindowBits: 10, clientMaxWindowBits: 10 }
  const { app, port } = await start({ heartbeat: false, compression: windows, logging: { connections: false } }, echo)
  t.teardown(() => app.close())
  const answer = async (offer: string): Promise<{ status: string, extensions: string | null }> => {
    const head = await handshake(port, '/ws', [`Sec-WebSocket-Extensions: ${offer}`])
    return { status: head.slice(0, head.indexOf('\r\n')), extensions: extensionsHeader(head) }
  }
  // Chromium and Firefox send exactly this.
  t.same(await answer('permessage-deflate; client_max_window_bits'), {
    status: 'HTTP/1.1 101 Switching Protocols',
    extensions: 'permessage-deflate; client_max_window_bits=10; client_no_context_takeover; server_max_window_bits=10; server_no_context_takeover'
  }, "a browser's offer")
  t.same(await answer('permessage-deflate'), {
    status: 'HTTP/1.1 101 Switching Protocols', extensions: 'permessage-deflate; client_no_context_takeover; server_max_window_bits=10; server_no_context_takeover'
  }, 'no client_max_window_bits: the client keeps its window, which the shared inflater takes (ws alone answers 400)')
  t.same(await answer('permessage-deflate; server_max_window_bits=9; client_max_window_bits=12'), {
    status: 'HTTP/1.1 101 Switching Protocols',
    extensions: 'permessage-deflate; client_max_window_bits=10; client_no_context_takeover; server_max_window_bits=9; server_no_context_takeover'
  }, 'the smaller of each window (ws alone answers 400 to a server window below its own)')
  t.same(await answer('x-webkit-deflate-frame'), { status: 'HTTP/1.1 101 Switching Protocols', extensions: null }, 'another extension only: none')
  for (const offer of ['permessage-deflate; client_max_window_bits=8', 'permessage-deflate; server_max_window_bits=8']) {
    t.same(await answer(offer), { status: 'HTTP/1.1 101 Switching Protocols', extensions: null }, `${offer}: declined, as zlib cannot compress with 2^8`)
  }
  const rejectedBefore = app.wsStats.connections.rejected
  t.match((await answer('permessage-deflate; client_max_window_bits=99')).status, / 400 /, 'a window no zlib has: 400')
  t.match((await answer('permessage-deflate; ;;')).status, / 400 /, 'a header that does not parse: 400')
  await waitFor(() => app.wsStats.connections.rejected === rejectedBefore + 2)
  t.equal(app.wsStats.limits.protocolErrors, 2, 'both counted as malformed')
})

for (const takeover of [true, false]) {
  t.test(`messages go out compressed from the threshold on, ${takeover ? 'with' : 'without'} context takeover; the application may choose per message`, async (t) => {
    await thresholdApplies(t, takeover)
  })
}

async function thresholdApplies (t: Test, takeover: boolean): Promise<void> {
  const sends: Array<{ data: string | Buffer, options?: object }> = []
  const { app, url } = await start({ heartbeat: false, compression: { threshold: 300, serverNoContextTakeover: !takeover } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('message', () => {
        for (const { data, options } of sends.splice(0)) options === undefined ? socket.send(data) : socket.send(data, options)
      })
    })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  const messages = collect(ws)
  const run = async (batch: Array<{ data: string | Buffer, options?: object }>): Promise<number> => {
    const before = app.wsStats.compression.sent.messages
    const expected = messages.length + batch.length
    sends.push(...batch)
    ws.send('go')
    await waitFor(() => messages.length === expected, 3000, 'the messages')
    return app.wsStats.compression.sent.messages - before
  }
  t.equal(await run([{ data: 'a'.repeat(299) }]), 0, 'below the threshold: plain')
  t.equal(await run([{ data: 'a'.repeat(300) }]), 1, 'at the threshold: compressed')
  t.equal(await run([{ data: '€'.repeat(100) }]), 1, '100 characters, 300 bytes: compressed')
  t.equal(await run([{ data: '€'.repeat(99) }]), 0, '297 bytes: plain')
  t.equal(await run([{ data: Buffer.alloc(300) }, { data: Buffer.alloc(299), options: { binary: true } }]), 1, 'binary: by byte length')
  t.equal(await run([{ data: new ArrayBuffer(300) as any }, { data: new ArrayBuffer(299) as any }]), 1, 'an ArrayBuffer: by byte length')
  t.equal(await run([{ data: new Blob(['a'.repeat(300)]) as any }, { data: new Blob(['a'.repeat(299)]) as any }]), 1, 'a Blob: by size')
  t.equal(await run([{ data: Array(10).fill(97) as any }]), 1, 'an array of bytes: left to zlib')
  t.equal(await run([{ data: 'a'.repeat(4000), options: { compress: false } }, { data: 'ab', options: { compress: true } }]), 1, "the application's choice wins")
  t.equal(await run([{ data: 'b'.repeat(400), options: { binary: false } }]), 1, 'other options kept, compressed')
  t.equal(messages.at(-1), 'b'.repeat(400))
  t.equal(messages.at(-2), 'ab')
  const { sent } = app.wsStats.compression
  t.equal(sent.messages, 8)
  t.equal(sent.bytesIn, 300 + 300 + 300 + 300 + 300 + 10 + 2 + 400)
  t.ok(sent.bytesOut < sent.bytesIn / 2, `${sent.bytesIn} bytes compressed to ${sent.bytesOut}`)
  ws.close()
}

t.test("wire bytes, messages and zlib's work are counted both ways, in wsStats and the metrics", async (t) => {
  const { Registry } = await import('prom-client')
  const registry = new Registry()
  const { app, url } = await start({ heartbeat: false, compression: true, metrics: { registry } }, echo)
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  const messages = collect(ws)
  const json = JSON.stringify(Array.from({ length: 200 }, (_, i) => ({ id: i, user: `user-${i % 7}`, text: 'hello there', at: 1_700_000_000 + i })))
  ws.send(json)
  await waitFor(() => messages.length === 1, 3000, 'the echo')
  t.same(messages[0], JSON.parse(json))
  const stats = app.wsStats
  const length = Buffer.byteLength(json)
  t.equal(stats.compression.sockets, 1)
  t.same(stats.compression.received, { messages: 1, bytesIn: stats.compression.received.bytesIn, bytesOut: length })
  t.same(stats.compression.sent, { messages: 1, bytesIn: length, bytesOut: stats.compression.sent.bytesOut })
  t.ok(stats.compression.sent.bytesOut < length * 0.4, `${length} bytes of JSON sent as ${stats.compression.sent.bytesOut}`)
  t.ok(stats.bytes.sent < length * 0.4, `wsStats.bytes counts the wire: ${stats.bytes.sent}`)
  t.ok(stats.bytes.received < length * 0.4)
  const text = await registry.metrics()
  t.match(text, /^ws_compression_sockets 1$/m)
  t.match(text, /^ws_compression_messages_total\{direction="sent"\} 1$/m)
  t.match(text, new RegExp(`^ws_compression_bytes_in_total\\{direction="sent"\\} ${length}$`, 'm'))
  t.match(text, new RegExp(`^ws_compression_bytes_out_total\\{direction="sent"\\} ${stats.compression.sent.bytesOut}$`, 'm'))
  t.match(text, new RegExp(`^ws_compression_bytes_out_total\\{direction="received"\\} ${length}$`, 'm'))
  ws.close()
  await waitFor(() => app.wsStats.connections.active === 0)
  t.equal(app.wsStats.compression.sockets, 0)
  t.equal(app.wsStats.compression.sent.messages, 1, 'counters outlive their sockets')
})

t.test('the subprotocol: session messages are compressed from the threshold too, control frames never', async (t) => {
  const { app, url } = await start({ heartbeat: false, resume: true, compression: { threshold: 64 } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.send('x'.repeat(2000))
      socket.send('short')
    })
  })
  t.teardown(() => app.close())
  const ws = new WebSocket(url('/ws'), PROTOCOL)
  const messages = collect(ws)
  // The welcome (with the session's id and secret, over 64 bytes), the two messages.
  await waitFor(() => messages.length === 3, 3000, 'the welcome and both messages')
  t.match(messages[0], '"t":"welcome"')
  t.ok(Buffer.byteLength(messages[0] as string) > 64)
  t.equal(app.wsStats.compression.sent.messages, 1, 'the long one only')
  t.equal(app.wsStats.compression.sent.bytesIn, 2000)
  ws.close()
})

t.test('a compression bomb: 64 MiB of zeros in 64 KB on the wire is closed with 1009 and never inflated whole', async (t) => {
  // The plugin allows 64 MiB; the route 64 KiB, which must also stop zlib itself.
  const { app, port } = await start({ heartbeat: false, compression: true, limits: { maxPayload: 64 * 2 ** 20 } }, (app) => {
    app.get('/ws', { websocket: true, config: { reliable: { limits: { maxPayload: 65_536 } } } }, () => {})
  })
  t.teardown(() => app.close())
  const bomb = deflateMessage(Buffer.alloc(64 * 2 ** 20))
  t.ok(bomb.length < 70_000, `${bomb.length} bytes on the wire`)
  const peer = await RawPeer.connect(port, '/ws', ['Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits'])
  const baseline = process.memoryUsage().arrayBuffers
  let peak = baseline
  const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().arrayBuffers) }, 1)
  t.teardown(() => clearInterval(sampler))
  peer.socket.write(buildFrame({ opcode: OPCODE.binary, payload: bomb, rsv: RSV1 }))
  await waitFor(() => peer.closeCode() !== null, 5000, 'the close frame')
  clearInterval(sampler)
  t.equal(peer.closeCode(), 1009)
  t.ok(peak - baseline < 16 * 2 ** 20, `buffers grew by ${((peak - baseline) / 2 ** 20).toFixed(1)} MiB at most`)
  await waitFor(() => app.wsStats.limits.payloadTooLarge === 1)
  t.equal(app.wsStats.compression.received.messages, 0)
  peer.destroy()
})

t.test('a compressed message in fragments is bounded by maxPayload as a whole, after inflation', async (t) => {
  const { app, port } = await start({ heartbeat: false, compression: true, limits: { maxPayload: 65_536 } }, echo)
  t.teardown(() => app.close())
  const extension = ['Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits']
  const fragments = (data: Buffer): Buffer => {
    const message = deflateMessage(data)
    const third = Math.ceil(message.length / 3)
    return Buffer.concat([
      buildFrame({ opcode: OPCODE.binary, payload: message.subarray(0, third), rsv: RSV1, fin: false }),
      buildFrame({ opcode: 0, payload: message.subarray(third, 2 * third), fin: false }),
      buildFrame({ opcode: 0, payload: message.subarray(2 * third) })
    ])
  }
  const good = await RawPeer.connect(port, '/ws', extension)
  good.socket.write(fragments(Buffer.alloc(65_536, 'a')))
  await waitFor(() => good.count(OPCODE.binary) === 1, 3000, 'the echo of exactly maxPayload')
  const bad = await RawPeer.connect(port, '/ws', extension)
  bad.socket.write(fragments(Buffer.alloc(65_537, 'a')))
  await waitFor(() => bad.closeCode() !== null, 3000, 'the close frame')
  t.equal(bad.closeCode(), 1009)
  await waitFor(() => app.wsStats.limits.payloadTooLarge === 1)
  t.equal(good.closeCode(), null, 'the other client is still served')
  good.destroy()
  bad.destroy()
})

t.test('a compressed frame on a socket that did not negotiate it is a protocol error (1002)', async (t) => {
  const { app, port } = await start({ heartbeat: false }, echo)
  t.teardown(() => app.close())
  const peer = await RawPeer.connect(port, '/ws')
  peer.socket.write(buildFrame({ opcode: OPCODE.text, payload: deflateMessage(Buffer.from('hello')), rsv: RSV1 }))
  await waitFor(() => peer.closeCode() !== null, 3000, 'the close frame')
  t.equal(peer.closeCode(), 1002)
  await waitFor(() => app.wsStats.limits.protocolErrors === 1)
  peer.destroy()
})

t.test('backpressure with compression: a slow reader is held to highWaterMark while ws still compresses', async (t) => {
  const results: boolean[] = []
  const { app, url } = await start({ heartbeat: false, compression: true, backpressure: { highWaterMark: 262_144, lowWaterMark: 0 } }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('message', () => {
        // Compressible, as JSON is: each compresses to a few KB, so only the queue before zlib can pass the mark.
        for (let i = 0; i < 40; i++) results.push(socket.send(JSON.stringify({ i, rows: 'row,'.repeat(16_000) })))
      })
    })
  })
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  ws.send('go')
  await waitFor(() => results.length === 40, 3000, 'the sends')
  const accepted = results.filter(Boolean).length
  t.ok(accepted <= 5, `${accepted} of 40 accepted: the queued compressions count`)
  t.equal(app.wsStats.messages.dropped, 40 - accepted)
  const messages = collect(ws)
  await waitFor(() => messages.length === accepted, 3000, 'the accepted messages')
  ws.close()
})

t.test('invalid compression options are refused at registration', async (t) => {
  const invalid: Array<[Options, RegExp]> = [
    [{ compression: 'yes' as any }, /compression": must be an object/],
    [{ compression: { level: 10 } }, /compression\.level": must be an integer from 0 to 9, got 10/],
    [{ compression: { memLevel: 0 } }, /compression\.memLevel": must be an integer from 1 to 9/],
    [{ compression: { serverMaxWindowBits: 8 } }, /compression\.serverMaxWindowBits": must be an integer from 9 to 15/],
    [{ compression: { clientMaxWindowBits: 16 } }, /compression\.clientMaxWindowBits": must be an integer from 9 to 15/],
    [{ compression: { threshold: -1 } }, /compression\.threshold": must be an integer from 0/],
    [{ compression: { serverNoContextTakeover: 1 as any } }, /compression\.serverNoContextTakeover": must be a boolean/],
    [{ compression: { concurrencyLimit: 0 } }, /compression\.concurrencyLimit": must be an integer from 1 to 1024/],
    [{ compression: { windowBits: 10 } as any }, /compression\.windowBits": unknown option/],
    [{ websocket: { options: { perMessageDeflate: true } } }, /websocket\.options\.perMessageDeflate": use the `compression` option/]
  ]
  for (const [options, message] of invalid) {
    await t.rejects(bootWith(options), { code: 'FST_RELIABLE_WS_INVALID_OPTION', message }, JSON.stringify(options))
  }
  const route = (compression: unknown) => (app: FastifyInstance) => {
    app.get('/ws', { websocket: true, config: { reliable: { compression } as any } }, () => {})
  }
  await t.rejects(bootWith({}, route({ concurrencyLimit: 4 })), { code: 'FST_RELIABLE_WS_INVALID_OPTION', message: /compression\.concurrencyLimit": ws's zlib limit is shared by the whole process/ })
  await t.rejects(bootWith({}, route({ level: -1 })), { code: 'FST_RELIABLE_WS_INVALID_OPTION', message: /config\.reliable of \/ws\.compression\.level/ })
})

t.test('a client that keeps context and cannot be held to the route\'s window is declined', async (t) => {
  const { app, port } = await start({ heartbeat: false, compression: { clientMaxWindowBits: 10, clientNoContextTakeover: false } }, echo)
  t.teardown(() => app.close())
  t.equal(extensionsHeader(await handshake(port, '/ws', ['Sec-WebSocket-Extensions: permessage-deflate'])), null,
    'no client_max_window_bits: the socket would inflate with 2^15 bytes of its own')
  t.equal(extensionsHeader(await handshake(port, '/ws', ['Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits'])),
    'permessage-deflate; client_max_window_bits=10; server_max_window_bits=15; server_no_context_takeover')
})

t.test('a route that allows the client a window of 2^15 (the preset) accepts an offer without client_max_window_bits', async (t) => {
  const { app, port } = await start({ heartbeat: false, compression: { clientMaxWindowBits: 15 } }, echo)
  t.teardown(() => app.close())
  t.equal(extensionsHeader(await handshake(port, '/ws', ['Sec-WebSocket-Extensions: permessage-deflate'])), `permessage-deflate; ${NO_TAKEOVER}`)
  t.equal(extensionsHeader(await handshake(port, '/ws', ['Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits'])),
    `permessage-deflate; client_max_window_bits=15; ${NO_TAKEOVER}`)
})

t.test('the preset compresses each message on its own, both ways', async (t) => {
  const { app, port, url } = await start({ heartbeat: false }, (app) => {
    app.get('/ws', { websocket: true, config: { reliable: { compression: { threshold: 0 } } } }, (socket) => {
      socket.on('message', (data) => socket.send(data))
    })
  })
  t.teardown(() => app.close())
  const header = extensionsHeader(await handshake(port, '/ws', ['Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits']))
  t.equal(header, `permessage-deflate; client_max_window_bits=15; ${NO_TAKEOVER}`)
  const ws = await connect(url('/ws'))
  const messages = collect(ws)
  const sizes: number[] = []
  for (let i = 1; i <= 2; i++) {
    const before = app.wsStats.compression.sent.bytesOut
    ws.send('the same message, again and again; '.repeat(10))
    await waitFor(() => messages.length === i, 3000, 'the echo')
    sizes.push(app.wsStats.compression.sent.bytesOut - before)
  }
  // With context takeover the second would be a few bytes: a reference to the first.
  t.equal(sizes[1], sizes[0], `each compressed on its own: ${sizes.join(' and ')} bytes`)
  ws.close()
})

t.test("a route's object applies over the plugin's settings, field by field", async (t) => {
  const { app, port } = await start({ heartbeat: false, compression: { serverMaxWindowBits: 13, threshold: 0 } }, (app) => {
    app.get('/ws', { websocket: true, config: { reliable: { compression: { clientMaxWindowBits: 12 } } } }, (socket) => {
      socket.on('message', () => socket.send('a'))
    })
  })
  t.teardown(() => app.close())
  const header = extensionsHeader(await handshake(port, '/ws', ['Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits']))
  t.equal(header, 'permessage-deflate; client_max_window_bits=12; client_no_context_takeover; server_max_window_bits=13; server_no_context_takeover')
  const ws = await connect(`ws://127.0.0.1:${port}/ws`)
  const closed = closeEvent(ws)
  ws.send('go')
  await once(ws, 'message')
  t.same(app.wsStats.compression.sent, { messages: 1, bytesIn: 1, bytesOut: app.wsStats.compression.sent.bytesOut }, "the plugin's threshold of 0: even one byte is compressed")
  ws.close()
  await closed
})

/** The zlib streams ws made for a server-side socket itself (null: none), read from ws's extension object. */
function ownStreams (socket: WebSocket): { deflate: unknown, inflate: unknown } {
  const extension = (socket as any)._extensions['permessage-deflate']
  return { deflate: extension._deflate, inflate: extension._inflate }
}

t.test('without context takeover a socket holds no zlib stream: the route shares a few, and a broadcast is compressed once', async (t) => {
  const { app, url } = await start({ heartbeat: false, compression: true }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('message', (data) => socket.send(data))
    })
  })
  t.teardown(() => app.close())
  const clients = await Promise.all(Array.from({ length: 20 }, () => connect(url('/ws'))))
  const payload = JSON.stringify(Array.from({ length: 100 }, (_, i) => ({ id: i, name: `user ${i % 9}`, online: i % 3 === 0 })))
  for (const client of clients) client.send(payload)
  await waitFor(() => clients.every((client) => collect(client).length === 1), 3000, 'the echoes')
  for (const client of clients) t.same(collect(client)[0], JSON.parse(payload))
  const sockets = [...app.websocketServer.clients]
  t.same(sockets.map(ownStreams), sockets.map(() => ({ deflate: null, inflate: null })), 'no socket has a zlib stream of its own')
  const { compression } = app.wsStats
  t.equal(compression.received.messages, 20)
  t.equal(compression.sent.messages, 20)

  // The same message to every socket, as a broadcast sends it.
  const pool = (sockets[0] as any)[kRoute].deflate.compressors.get(15)
  const run = pool.run
  let runs = 0
  pool.run = function (...args: unknown[]) { runs++; return run.apply(this, args) }
  const zlibWrites: unknown[] = []
  for (const lane of pool.lanes) {
    const write = lane.stream.write
    lane.stream.write = function (chunk: unknown, ...rest: unknown[]) { zlibWrites.push(chunk); return write.call(this, chunk, ...rest) }
  }
  const broadcast = payload.repeat(3)
  for (const socket of sockets) socket.send(broadcast)
  await waitFor(() => clients.every((client) => collect(client).length === 2), 3000, 'the broadcast')
  for (const client of clients) t.equal(collect(client)[1], broadcast)
  t.equal(runs, 20, 'each socket handed it to the shared compressor')
  t.equal(zlibWrites.filter((chunk) => chunk === broadcast).length, 1, 'which compressed it once')
  // Sent again once that is done: the last result is kept.
  sockets[0].send(broadcast)
  await waitFor(() => collect(clients[0]).length === 3, 3000, 'the broadcast again')
  t.equal(collect(clients[0])[2], broadcast)
  t.equal(zlibWrites.filter((chunk) => chunk === broadcast).length, 1, 'still compressed once')
  t.same(pool.last.waiters, [], 'the result is kept, not the sockets it went to')
  for (const client of clients) client.close()
})

t.test('messages sent and received in fragments go through ws\'s own zlib stream for that socket', async (t) => {
  const { app, port } = await start({ heartbeat: false, compression: true }, (app) => {
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('message', (data) => {
        const text = data.toString()
        socket.send(text.slice(0, 2000), { fin: false })
        socket.send(text.slice(2000), { fin: true })
      })
    })
  })
  t.teardown(() => app.close())
  const peer = await RawPeer.connect(port, '/ws', ['Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits'])
  const text = 'abcdefgh'.repeat(500)
  const message = deflateMessage(Buffer.from(text))
  peer.socket.write(Buffer.concat([
    buildFrame({ opcode: OPCODE.text, payload: message.subarray(0, 10), rsv: RSV1, fin: false }),
    buildFrame({ opcode: 0, payload: message.subarray(10) })
  ]))
  await waitFor(() => peer.frames.length === 2, 3000, 'the echo, in two frames')
  const [first, last] = peer.frames
  t.equal(first.opcode, OPCODE.text)
  t.equal(last.opcode, 0)
  const inflated = zlib.inflateRawSync(Buffer.concat([first.payload, last.payload, Buffer.from([0, 0, 0xff, 0xff])]), { finishFlush: zlib.constants.Z_SYNC_FLUSH })
  t.equal(inflated.toString(), text, 'the fragmented reply inflates to the message')
  t.equal(app.wsStats.compression.received.messages, 1)
  t.equal(app.wsStats.compression.sent.messages, 1)
  const [socket] = app.websocketServer.clients
  t.equal(ownStreams(socket).inflate, null, 'the inflater ws made for the fragments is let go of once the message is in')
  peer.destroy()
})

t.test('a compressed message in fragments whose last frame is corrupt closes its socket with 1007', async (t) => {
  const { app, port } = await start({ heartbeat: false, compression: true }, echo)
  t.teardown(() => app.close())
  const peer = await RawPeer.connect(port, '/ws', ['Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits'])
  // The first frame ends on a block boundary; the last starts a block of the reserved type.
  peer.socket.write(Buffer.concat([
    buildFrame({ opcode: OPCODE.binary, payload: deflateMessage(Buffer.from('abcdefgh'.repeat(500))), rsv: RSV1, fin: false }),
    buildFrame({ opcode: 0, payload: Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff]) })
  ]))
  await waitFor(() => peer.closeCode() !== null, 3000, 'the close frame')
  t.equal(peer.closeCode(), 1007)
  t.equal(app.wsStats.compression.received.messages, 0)
  peer.destroy()
})

t.test("one client's compressed message never reaches into another's: each inflates from nothing on the shared stream", async (t) => {
  // One shared inflater, so the two clients' messages take turns on the same stream; every echo compressed.
  const { app, port } = await start({ heartbeat: false, compression: { concurrencyLimit: 1, threshold: 0 } }, echo)
  t.teardown(() => app.close())
  const extension = ['Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits']
  const victim = await RawPeer.connect(port, '/ws', extension)
  const attacker = await RawPeer.connect(port, '/ws', extension)
  const inflate = (payload: Buffer): string => zlib.inflateRawSync(Buffer.concat([payload, Buffer.from([0, 0, 0xff, 0xff])]), { finishFlush: zlib.constants.Z_SYNC_FLUSH }).toString()
  const echoes = (peer: RawPeer): string[] => peer.frames.filter((frame) => frame.opcode === OPCODE.text).map((frame) => inflate(frame.payload))

  // A back-reference to whatever the stream last inflated: with the window kept, it would copy the victim's secret.
  const secret = 'SECRET-token=' + 'f00d'.repeat(10)
  const guess = Buffer.alloc(secret.length, 'x')
  victim.socket.write(buildFrame({ opcode: OPCODE.text, payload: deflateMessage(Buffer.from(secret)), rsv: RSV1 }))
  await waitFor(() => echoes(victim).length === 1, 3000, "the victim's echo")
  const backReference = zlib.deflateRawSync(guess, { dictionary: guess, finishFlush: zlib.constants.Z_SYNC_FLUSH })
  attacker.socket.write(buildFrame({ opcode: OPCODE.text, payload: backReference.subarray(0, backReference.length - 4), rsv: RSV1 }))
  await waitFor(() => attacker.closeCode() !== null, 3000, "the attacker's close")
  t.equal(attacker.closeCode(), 1007, 'a reference to nothing before it is corrupt')
  t.equal(attacker.count(OPCODE.text), 0, 'nothing came back to it')

  // A stored block left open would swallow the next client's message as its own bytes.
  const swallower = await RawPeer.connect(port, '/ws', extension)
  swallower.socket.write(buildFrame({ opcode: OPCODE.binary, payload: Buffer.from([0x00, 0xff, 0x00, 0x00, 0xff]), rsv: RSV1 }))
  victim.socket.write(buildFrame({ opcode: OPCODE.text, payload: deflateMessage(Buffer.from('hello again')), rsv: RSV1 }))
  await waitFor(() => victim.count(OPCODE.text) === 2, 3000, "the victim's second echo")
  t.same(echoes(victim), [secret, 'hello again'])
  for (const peer of [victim, attacker, swallower]) peer.destroy()
})

t.test('a client asking for a smaller server window gets 2^9: a route compresses with streams of two sizes at most', async (t) => {
  const { app, port } = await start({ heartbeat: false, compression: true }, echo)
  t.teardown(() => app.close())
  for (const bits of [12, 9, 15]) {
    const head = await handshake(port, '/ws', [`Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=${bits}; client_max_window_bits`])
    t.match(extensionsHeader(head), `server_max_window_bits=${bits === 15 ? 15 : 9}`, `asked for ${bits}`)
  }
})

t.test('a corrupt compressed message closes its socket with 1007; the shared inflater goes on for the others', async (t) => {
  const { app, port, url } = await start({ heartbeat: false, compression: true }, echo)
  t.teardown(() => app.close())
  const good = await connect(url('/ws'))
  const peer = await RawPeer.connect(port, '/ws', ['Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits'])
  peer.socket.write(buildFrame({ opcode: OPCODE.binary, payload: Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff]), rsv: RSV1 }))
  await waitFor(() => peer.closeCode() !== null, 3000, 'the close frame')
  t.equal(peer.closeCode(), 1007)
  for (let i = 0; i < 3; i++) good.send('still compressed, and still inflated by the shared stream. '.repeat(30))
  await waitFor(() => collect(good).length === 3, 3000, 'the echoes')
  t.equal(app.wsStats.compression.received.messages, 3)
  good.close()
  peer.destroy()
})

t.test('a compressed message that ends its deflate stream (a final block) is inflated, and so is the next one', async (t) => {
  const { app, port } = await start({ heartbeat: false, compression: true }, echo)
  t.teardown(() => app.close())
  const peer = await RawPeer.connect(port, '/ws', ['Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits'])
  // A client may finish each message's stream: a final block, then the four bytes the RFC has it drop.
  const finished = (text: string): Buffer => deflateRawSync(Buffer.from(text))
  peer.socket.write(buildFrame({ opcode: OPCODE.text, payload: finished('first '.repeat(300)), rsv: RSV1 }))
  peer.socket.write(buildFrame({ opcode: OPCODE.text, payload: finished('second '.repeat(300)), rsv: RSV1 }))
  await waitFor(() => peer.count(OPCODE.text) === 2, 3000, 'both echoes')
  const texts = peer.frames.filter((frame) => frame.opcode === OPCODE.text)
    .map((frame) => zlib.inflateRawSync(Buffer.concat([frame.payload, Buffer.from([0, 0, 0xff, 0xff])]), { finishFlush: zlib.constants.Z_SYNC_FLUSH }).toString())
  t.same(texts, ['first '.repeat(300), 'second '.repeat(300)])
  t.equal(app.wsStats.compression.received.messages, 2)
  peer.destroy()
})

t.test('with context takeover asked of the client, its messages are inflated by a stream of the socket\'s own', async (t) => {
  const { app, url } = await start({ heartbeat: false, compression: { clientNoContextTakeover: false } }, echo)
  t.teardown(() => app.close())
  const ws = await connect(url('/ws'))
  const messages = collect(ws)
  // ws's client compresses every message with takeover: the second refers back to the first.
  for (let i = 0; i < 2; i++) ws.send('a sentence the client says twice, word for word. '.repeat(30))
  await waitFor(() => messages.length === 2, 3000, 'the echoes')
  t.equal(messages[1], messages[0])
  const [socket] = app.websocketServer.clients
  const streams = ownStreams(socket)
  t.not(streams.inflate, null, 'the socket inflates with its own stream')
  t.equal(streams.deflate, null, 'and compresses with the shared ones')
  t.equal(app.wsStats.compression.received.messages, 2)
  ws.close()
})

t.test('the shared streams are made as messages overlap, never more than concurrencyLimit', async (t) => {
  const { app, url } = await start({ heartbeat: false, compression: { concurrencyLimit: 2 } }, echo)
  t.teardown(() => app.close())
  const clients = await Promise.all(Array.from({ length: 12 }, () => connect(url('/ws'))))
  clients.forEach((client, i) => client.send(`message ${i} `.repeat(400)))
  await waitFor(() => clients.every((client) => collect(client).length === 1), 3000, 'the echoes')
  clients.forEach((client, i) => t.equal(collect(client)[0], `message ${i} `.repeat(400)))
  // The echoes go out as their messages are inflated, which a loaded machine may spread out: sent in one turn of the
  // loop, these twelve overlap for sure.
  for (const socket of app.websocketServer.clients) socket.send('to all '.repeat(400))
  await waitFor(() => clients.every((client) => collect(client).length === 2), 3000, 'the messages to all')
  t.ok(clients.every((client) => collect(client)[1] === 'to all '.repeat(400)))
  const route = ([...app.websocketServer.clients][0] as any)[kRoute]
  t.equal(route.deflate.compressors.get(15).lanes.length, 2, 'two compressors')
  t.equal(route.deflate.inflater.lanes.length, 2, 'two inflaters')
  for (const client of clients) client.close()
})
