import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import net from 'node:net'
import Fastify from 'fastify'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import WebSocket, { WebSocketServer } from 'ws'
import reliableWs = require('../../index')
import { PROTOCOL } from '../../lib/protocol/protocol'

export type Options = Parameters<typeof reliableWs>[1]

/** Registers the plugin, lets `routes` declare routes, listens on a random localhost port. */
export async function start (
  options: Options,
  routes: (app: FastifyInstance) => void,
  serverOptions: FastifyServerOptions = {}
): Promise<{ app: FastifyInstance, url: (path: string) => string, port: number }> {
  const app = Fastify(serverOptions)
  await app.register(reliableWs, options)
  routes(app)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const port = (app.server.address() as net.AddressInfo).port
  return { app, port, url: (path) => `ws://127.0.0.1:${port}${path}` }
}

/** Registers the plugin and declares routes without listening: for errors raised at boot. */
export async function bootWith (options: Options, routes: (app: FastifyInstance) => void = () => {}): Promise<void> {
  const app = Fastify()
  try {
    await app.register(reliableWs, options)
    routes(app)
    await app.ready()
  } finally {
    await app.close().catch(() => {})
  }
}

/** Opens a client; what it receives is collected from the start (a server may send before 'open' is seen). */
export async function connect (url: string, options?: WebSocket.ClientOptions): Promise<WebSocket> {
  const ws = new WebSocket(url, options)
  collect(ws)
  await once(ws, 'open')
  return ws
}

const received = new WeakMap<WebSocket, unknown[]>()

/** Every message a client receives, parsed as JSON when it can be. */
export function collect (ws: WebSocket): unknown[] {
  let messages = received.get(ws)
  if (messages !== undefined) return messages
  messages = []
  received.set(ws, messages)
  ws.on('message', (data, isBinary) => {
    const text = isBinary ? data : data.toString()
    try {
      messages!.push(JSON.parse(text as string))
    } catch {
      messages!.push(text)
    }
  })
  return messages
}

/** Counts the pings a client receives (and answers) and notes whether it closed. */
export function watch (ws: WebSocket): { pings: number, closed: boolean } {
  const seen = { pings: 0, closed: false }
  ws.on('ping', () => { seen.pings++ })
  ws.on('close', () => { seen.closed = true })
  return seen
}

export function closeEvent (ws: WebSocket): Promise<{ code: number, reason: string }> {
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })))
}

export async function waitFor (condition: () => boolean, timeoutMs = 3000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

/**
 * Starts measuring how long this process's event loop is held up (a machine busy with other test files, GC, a
 * stall); the function returned stops and gives the hold-ups summed, in ms. An upper bound on a deadline adds it:
 * load stretches the bound instead of failing the test, while a deadline missed for any other reason still fails.
 * Not for bounds on how long the code itself may hold the loop (it would excuse the very thing judged).
 */
export function loopDelay (): () => number {
  const histogram = monitorEventLoopDelay({ resolution: 10 })
  histogram.enable()
  return () => {
    histogram.disable()
    // All the time the loop was held up, not its longest stall: a starved process loses it in many short slices.
    return histogram.count * histogram.mean / 1e6
  }
}

/** The most values of `sorted` (ascending) that fall within any `span`. */
export function busiest (sorted: number[], span: number): number {
  let most = 0
  for (let i = 0, j = 0; i < sorted.length; i++) {
    while (sorted[i] - sorted[j] >= span) j++
    most = Math.max(most, i - j + 1)
  }
  return most
}

/** mulberry32: a small seeded generator, so a run can be replayed exactly. */
export function generator (state: number): () => number {
  return () => {
    state = (state + 0x6d2b79f5) | 0
    let x = Math.imul(state ^ (state >>> 15), 1 | state)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32
  }
}

export function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

export interface Frame { opcode: number, payload: Buffer }

/**
 * A WebSocket peer written on a bare TCP socket: it never answers pings by
 * itself, so a test decides exactly which frames the server sees.
 */
export class RawPeer {
  readonly frames: Frame[] = []
  private buffer = Buffer.alloc(0)
  ended = false

  private constructor (readonly socket: net.Socket) {}

  static async connect (port: number, path: string, extra: string[] = []): Promise<RawPeer> {
    const socket = net.connect(port, '127.0.0.1')
    await once(socket, 'connect')
    const peer = new RawPeer(socket)
    socket.write(upgradeRequest(port, path, extra))
    let head = Buffer.alloc(0)
    await new Promise<void>((resolve, reject) => {
      const onData = (chunk: Buffer): void => {
        head = Buffer.concat([head, chunk])
        const end = head.indexOf('\r\n\r\n')
        if (end === -1) return
        socket.off('data', onData)
        const status = head.subarray(0, head.indexOf('\r\n')).toString()
        if (!status.includes(' 101 ')) return reject(new Error(`upgrade refused: ${status}`))
        peer.onData(head.subarray(end + 4))
        socket.on('data', (data: Buffer) => peer.onData(data))
        resolve()
      }
      socket.on('data', onData)
    })
    socket.on('end', () => { peer.ended = true })
    socket.on('close', () => { peer.ended = true })
    socket.on('error', () => {})
    return peer
  }

  /** Sends one masked frame, as a client must. */
  send (opcode: number, payload: Buffer | string = Buffer.alloc(0)): void {
    this.socket.write(buildFrame({ opcode, payload }))
  }

  count (opcode: number): number {
    return this.frames.filter((frame) => frame.opcode === opcode).length
  }

  /** The code of the first close frame the server sent, or null. */
  closeCode (): number | null {
    const close = this.frames.find((frame) => frame.opcode === OPCODE.close)
    return close === undefined ? null : close.payload.readUInt16BE(0)
  }

  destroy (): void {
    this.socket.destroy()
  }

  private onData (data: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, data])
    while (this.buffer.length >= 2) {
      let length = this.buffer[1] & 0x7f
      let offset = 2
      if (length === 126) {
        if (this.buffer.length < 4) return
        length = this.buffer.readUInt16BE(2)
        offset = 4
      } else if (length === 127) {
        if (this.buffer.length < 10) return
        length = Number(this.buffer.readBigUInt64BE(2))
        offset = 10
      }
      if (this.buffer.length < offset + length) return
      this.frames.push({ opcode: this.buffer[0] & 0x0f, payload: this.buffer.subarray(offset, offset + length) })
      this.buffer = this.buffer.subarray(offset + length)
    }
  }
}

export const OPCODE = { text: 0x1, binary: 0x2, close: 0x8, ping: 0x9, pong: 0xa } as const

export interface FrameFields {
  opcode: number
  payload?: Buffer | string
  fin?: boolean
  /** The three RSV bits, as a number from 0 to 7. */
  rsv?: number
  mask?: boolean
  /** The length the header declares, when it should not be the payload's. */
  length?: number
}

/** A frame with every field a peer controls, so a test can send what no well-behaved client would. */
export function buildFrame ({ opcode, payload = Buffer.alloc(0), fin = true, rsv = 0, mask = true, length }: FrameFields): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload) : payload
  const declared = length ?? data.length
  const first = (fin ? 0x80 : 0) | (rsv << 4) | opcode
  const maskBit = mask ? 0x80 : 0
  let header: Buffer
  if (declared < 126) {
    header = Buffer.from([first, maskBit | declared])
  } else if (declared < 0x10000) {
    header = Buffer.from([first, maskBit | 126, declared >> 8, declared & 0xff])
  } else {
    header = Buffer.alloc(10)
    header[0] = first
    header[1] = maskBit | 127
    header.writeBigUInt64BE(BigInt(declared), 2)
  }
  if (!mask) return Buffer.concat([header, data])
  const key = randomBytes(4)
  return Buffer.concat([header, key, Buffer.from(data.map((byte, i) => byte ^ key[i % 4]))])
}

/**
 * Writes `request` (anything: a handshake, half of one, garbage) on a bare
 * TCP connection and resolves with everything the server sent back once it
 * has closed the connection.
 */
export async function rawExchange (port: number, request: string | Buffer): Promise<string> {
  const socket = net.connect(port, '127.0.0.1')
  const chunks: Buffer[] = []
  socket.on('data', (chunk: Buffer) => chunks.push(chunk))
  socket.on('error', () => {})
  socket.write(request)
  await once(socket, 'close')
  return Buffer.concat(chunks).toString()
}

/** An upgrade request as a browser would send it, with `extra` header lines. */
export function upgradeRequest (port: number, path: string, extra: string[] = []): string {
  return [
    `GET ${path} HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'Upgrade: websocket', 'Connection: Upgrade',
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`, 'Sec-WebSocket-Version: 13', ...extra, '', ''
  ].join('\r\n')
}

/**
 * A bare ws server on loopback that chooses the reliable subprotocol, for tests that play the server's side of
 * it frame by frame; every client is cut and the server closed at teardown.
 */
export async function subprotocolServer (t: { teardown: (fn: () => unknown) => void }): Promise<WebSocketServer> {
  const server = new WebSocketServer({ port: 0, host: '127.0.0.1', handleProtocols: () => PROTOCOL })
  await once(server, 'listening')
  t.teardown(() => new Promise((resolve) => { for (const c of server.clients) c.terminate(); server.close(resolve) }))
  return server
}
