import { IncomingMessage, ServerResponse } from 'node:http'
import type { Server } from 'node:http'
import { Socket } from 'node:net'
import { PassThrough } from 'node:stream'
import { Server as TlsServer, TLSSocket } from 'node:tls'
import WebSocket from 'ws'
import { FST_RELIABLE_WS_UNSUPPORTED_DEPENDENCY } from './errors'
import { kErrorListeners } from './symbols'

/*
 * Everything the plugin reads or writes of ws, @fastify/websocket, Fastify and
 * Node beyond their documented APIs, and nowhere else. Each use names the
 * versions its source was read in (ws 8.23.0, @fastify/websocket 11.3.7,
 * fastify 5.0.0 to 5.12.8, Node 20.20).
 * The fields are checked once, at registration, on a socket built from the
 * class ws will build every socket from (checkInternals): a ws release that
 * renames one fails registration with a coded error instead of switching a
 * limit off, or miscounting closes, without a word.
 */

/** ws's parser state between two frames (GET_INFO in lib/receiver.js, ws 8.23.0). */
const GET_INFO = 0
const PING = 0x9

/** The frame parser's fields read here (lib/receiver.js, ws 8.23.0). */
interface Receiver {
  // The limit every frame's declared length and every inflated message are checked against; 0 means none.
  _maxPayload: number
  // Set once the parser has refused a frame; it reads nothing more.
  _errored: boolean
  _state: number
  _bufferedBytes: number
  // The opcode of a fragmented message begun, 0 when none.
  _fragmented: number
  // The opcode of the frame being handled.
  _opcode: number
}

type Callback = (err: Error | null, data?: Buffer) => void

/** A socket's permessage-deflate (lib/permessage-deflate.js, ws 8.23.0): its methods the sender and parser call. */
export interface Deflate {
  // The limit of one frame's inflated bytes, which stops zlib at it (the parser checks a message's total).
  _maxPayload: number
  // Made on the first compressed message received, then kept (null until then, and after an error).
  _inflate: { close (): void } | null
  // The parameters agreed at the upgrade; the plugin always sets the server's window.
  params: { server_no_context_takeover?: true, client_no_context_takeover?: true, server_max_window_bits: number }
  compress (data: Buffer | string, fin: boolean, callback: Callback): void
  decompress (data: Buffer, fin: boolean, callback: Callback): void
}

/** The frame writer's fields used here (lib/sender.js, ws 8.23.0). */
interface Sender {
  // DEFAULT (0) while nothing is queued: a frame written now keeps the order of the messages sent before it.
  _state: number
  sendFrame (list: Buffer[], cb?: (err?: Error) => void): void
}

/** ws's Sender.frame (lib/sender.js, ws 8.23.0), which ws exports as `WebSocket.Sender`. */
type FrameBuilder = (data: Buffer, options: { fin: boolean, opcode: number, mask: boolean, readOnly: boolean, rsv1: boolean }) => Buffer[]

// The sender's state while it is neither compressing nor reading a Blob (DEFAULT in lib/sender.js, ws 8.23.0).
const SENDER_IDLE = 0
const TEXT = 0x1
const BINARY = 0x2

/** The socket's fields read here (lib/websocket.js, ws 8.23.0). */
interface WsFields {
  _sender: Sender
  // The extensions negotiated at the upgrade, by name; `{}` for none.
  _extensions: { 'permessage-deflate'?: Deflate }
  _receiver: Receiver
  _closeFrameReceived: boolean
  // Both only exist when autoPong is on (ws's default).
  _pendingAutoPongs?: number
  _maxPendingAutoPongs?: number
  setSocket: (socket: PassThrough, head: Buffer, options: { maxPayload: number }) => void
}

function ws (socket: WebSocket): WsFields {
  return socket as unknown as WsFields
}

/**
 * A route's maxPayload, lower than the server's: set in the socket's parser,
 * which checks it against every frame's declared length and every inflated
 * message at no cost per message. ws has a per-server limit only. Called
 * before the parser has read anything (ws reads from a later tick).
 */
export function setMaxPayload (socket: WebSocket, maxPayload: number): void {
  const fields = ws(socket)
  fields._receiver._maxPayload = maxPayload
  // Else one compressed frame would inflate up to the server's limit before the parser saw the route's.
  const deflate = fields._extensions['permessage-deflate']
  if (deflate !== undefined) deflate._maxPayload = maxPayload
}

/** Closes the socket's own inflater, as ws does after an error: ws makes a new one for the next message that needs it. */
export function releaseInflater (deflate: Deflate): void {
  deflate._inflate!.close()
  deflate._inflate = null
}

/** The socket's permessage-deflate, if the upgrade negotiated it. */
export function deflateOf (socket: WebSocket): Deflate | undefined {
  return ws(socket)._extensions['permessage-deflate']
}

/**
 * A Sec-WebSocket-Extensions header as ws parses it (lib/extension.js, ws 8.23.0, which ws exports as
 * `WebSocket.extension`): offers by extension name, each a record of parameter values. Throws on a malformed one.
 */
export function parseExtensionOffers (header: string): Record<string, unknown[]> {
  return (WebSocket as unknown as { extension: { parse (header: string): Record<string, unknown[]> } }).extension.parse(header)
}

interface UpgradingServer {
  options: { perMessageDeflate?: unknown }
  handleUpgrade (request: IncomingMessage, ...rest: unknown[]): void
}

/**
 * ws negotiates permessage-deflate with one server-wide option, `perMessageDeflate`, which handleUpgrade reads
 * (and copies into the new socket's extension) synchronously as it begins (lib/websocket-server.js, ws 8.23.0).
 * Setting it from the request just before makes it the request's own: `choose` reads what the route allowed.
 */
export function negotiateDeflatePerRequest (server: WebSocket.WebSocketServer, choose: (request: IncomingMessage) => object | false): void {
  const wss = server as unknown as UpgradingServer
  const handleUpgrade = wss.handleUpgrade
  wss.handleUpgrade = function (request, ...rest) {
    this.options.perMessageDeflate = choose(request)
    handleUpgrade.call(this, request, ...rest)
  }
}

function frameBuilder (): FrameBuilder | undefined {
  return (WebSocket as unknown as { Sender?: { frame?: FrameBuilder } }).Sender?.frame
}

/**
 * A whole data frame for `data`, unmasked and uncompressed as a server sends it, with ws's own Sender.frame's header,
 * in one Buffer: the same frame can be written to any number of sockets, and ws's sender hands a one-Buffer frame to
 * the connection in one write, where header and payload apart take a corked write of two, which costs more per
 * socket than copying `data` once per frame (bench/notes.md, "Publish to 5,000 subscribers").
 */
export function frameMessage (data: Buffer, binary: boolean): Buffer[] {
  return [Buffer.concat(frameBuilder()!(data, { fin: true, opcode: binary ? BINARY : TEXT, mask: false, readOnly: false, rsv1: false }))]
}

/**
 * Writes a frame built by frameMessage to the socket as ws's sender writes the frames it builds (straight to the
 * connection, counted in bufferedAmount through it). False, writing nothing, while the sender is busy
 * (compressing a message, reading a Blob): a frame written then would overtake the messages queued in it.
 */
export function writeFrame (socket: WebSocket, frame: Buffer[]): boolean {
  const sender = ws(socket)._sender
  if (sender._state !== SENDER_IDLE) return false
  sender.sendFrame(frame)
  return true
}

/** The peer's close frame has arrived (ws then calls close() itself, to answer it). */
export function closeFrameReceived (socket: WebSocket): boolean {
  return ws(socket)._closeFrameReceived
}

/** ws's parser refused a frame (it sent its close frame, 1002/1007/1008/1009, and reads nothing more). */
export function parserErrored (socket: WebSocket): boolean {
  return ws(socket)._receiver._errored
}

/** The parser is inside a message: a frame's header or payload partly read, or a fragmented message begun. */
export function midMessage (socket: WebSocket): boolean {
  const receiver = ws(socket)._receiver
  return receiver._state !== GET_INFO || receiver._bufferedBytes !== 0 || receiver._fragmented !== 0
}

/**
 * ws is handling a peer's ping while `maxPendingAutoPongs` of its automatic
 * pongs are still unsent, the condition under which receiverOnPing (lib/websocket.js,
 * ws 8.23.0) terminates the peer. With autoPong off the fields are undefined
 * and the comparisons false.
 */
export function pingBacklogFull (socket: WebSocket): boolean {
  const fields = ws(socket)
  return (fields._maxPendingAutoPongs as number) > 0 && (fields._pendingAutoPongs as number) >= (fields._maxPendingAutoPongs as number) &&
    fields._receiver._opcode === PING
}

/**
 * Behind TLS, a request's socket is the TLS socket; the TCP connection under
 * it is its `_parent` (lib/_tls_wrap.js, Node 20.20). Node documents no
 * link between the two.
 */
export function tcpUnder (socket: Socket): Socket {
  return (socket as Socket & { _parent?: Socket | null })._parent ?? socket
}

/**
 * Whether a response on this connection has started to go out (socketOnError
 * in Node's lib/_http_server.js reads the same fields, Node 20.20): an
 * error answer must not be written into the middle of it.
 */
export function responseUnderway (socket: Socket): boolean {
  return (socket as Socket & { _httpMessage?: { _headerSent: boolean } | null })._httpMessage?._headerSent === true
}

type Listener = (...args: any[]) => void

/**
 * A 'connection' listener on ws's server: notes how many 'error' listeners
 * the socket has when @fastify/websocket emits 'connection', just before it
 * adds its own (handleUpgrade's callback in its index.js, 11.3.7).
 */
export function noteErrorListeners (socket: WebSocket & { [kErrorListeners]: number }): void {
  socket[kErrorListeners] = socket.listenerCount('error')
}

/**
 * The 'error' listener @fastify/websocket added between 'connection' and the
 * route's handler (a closure over request and reply that hands socket errors
 * to its errorHandler), or null when that is not exactly one listener: an
 * application's own listener is never taken for it.
 */
export function fastifyWebsocketErrorListener (socket: WebSocket & { [kErrorListeners]: number }): Listener | null {
  const listeners = socket.listeners('error')
  return listeners.length === socket[kErrorListeners] + 1 ? listeners[listeners.length - 1] as Listener : null
}

/**
 * @fastify/websocket routes an upgrade request with a ServerResponse it
 * assigns the TCP socket to (onUpgrade in its index.js, 11.3.7), which keeps
 * the response (and through it the request, reply and headers) alive as long
 * as the socket. ServerResponse#detachSocket, the counterpart of assignSocket
 * (lib/_http_server.js, Node 20.20), drops both links. Node's
 * documentation has neither; checked at registration.
 */
export function detachResponse (response: ServerResponse): void {
  response.detachSocket(response.socket!)
}

/**
 * The ServerResponse @fastify/websocket routed an upgrade request with: ServerResponse#assignSocket links it to the
 * socket as `_httpMessage` (checked at registration), and nothing public leads from an upgrade's socket to it.
 */
export function upgradeResponse (socket: Socket): ServerResponse | null {
  return (socket as { _httpMessage?: ServerResponse | null })._httpMessage as ServerResponse | null
}

/**
 * Fastify answers every request with its own 503 once close() has begun, from
 * its one 'request' listener on its server (fastify 5.x). Puts `listener` in
 * front of those present now: it receives each request with a function that
 * hands it on to them.
 */
export function interceptRequests (server: Server, listener: (request: IncomingMessage, response: ServerResponse, next: () => void) => void): void {
  const previous = server.listeners('request') as RequestListener[]
  for (const fn of previous) server.removeListener('request', fn)
  server.on('request', function (this: Server, request: IncomingMessage, response: ServerResponse) {
    listener(request, response, () => {
      for (const fn of previous) fn.call(this, request, response)
    })
  })
}

type RequestListener = (this: Server, request: IncomingMessage, response: ServerResponse) => void

/**
 * Checks, on a socket built from `SocketClass` as ws's server builds one
 * (`new WebSocket(null, undefined, options)` then `setSocket`, lib/websocket-server.js),
 * that every field read above is there with the value a fresh socket has.
 * The socket reads from a stream of its own that is never written to, and is
 * dropped before this returns. Throws FST_RELIABLE_WS_UNSUPPORTED_DEPENDENCY naming
 * the first field missing and ws's installed version.
 */
export function checkInternals (SocketClass: typeof WebSocket, version: string, server: Server, serverOptions: object, zlibConcurrency: number): void {
  checkNodeInternals(server)
  const maxPayload = 1234
  // The first PerMessageDeflate of the process sets ws's process-wide zlib limit: this one, with the plugin's.
  const { PerMessageDeflate } = SocketClass as unknown as { PerMessageDeflate?: new (options: object) => Partial<Deflate> }
  if (typeof PerMessageDeflate !== 'function') fail(version, 'WebSocket.PerMessageDeflate')
  const deflate = new PerMessageDeflate({ isServer: true, maxPayload, concurrencyLimit: zlibConcurrency })
  if (deflate._maxPayload !== maxPayload) fail(version, 'PerMessageDeflate#_maxPayload')
  if (deflate._inflate !== null) fail(version, 'PerMessageDeflate#_inflate')
  if (typeof deflate.compress !== 'function' || typeof deflate.decompress !== 'function') fail(version, 'PerMessageDeflate#compress')
  if (typeof (WebSocket as { extension?: { parse?: unknown } }).extension?.parse !== 'function') fail(version, 'WebSocket.extension.parse')
  if (typeof frameBuilder() !== 'function') fail(version, 'WebSocket.Sender.frame')
  const frame = frameMessage(Buffer.from('a'), false)
  if (!frame[0].equals(Buffer.from([0x80 | TEXT, 1, 0x61]))) fail(version, 'WebSocket.Sender.frame')
  // With the application's own server options, as ws passes them: a subclass of its own may read them.
  const probe = new SocketClass(null as unknown as string, undefined, { ...serverOptions, autoPong: true, maxPendingAutoPongs: 3 } as WebSocket.ClientOptions)
  const fields = ws(probe)
  const stream = new PassThrough()
  try {
    if (typeof fields.setSocket !== 'function') fail(version, 'WebSocket#setSocket')
    fields.setSocket(stream, Buffer.alloc(0), { maxPayload })
    if (fields._closeFrameReceived !== false) fail(version, 'WebSocket#_closeFrameReceived')
    const sender = fields._sender as Partial<Sender> | null | undefined
    if (sender == null) fail(version, 'WebSocket#_sender')
    if (sender._state !== SENDER_IDLE) fail(version, 'Sender#_state')
    if (typeof sender.sendFrame !== 'function') fail(version, 'Sender#sendFrame')
    if (typeof fields._extensions !== 'object' || fields._extensions === null) fail(version, 'WebSocket#_extensions')
    if (fields._pendingAutoPongs !== 0) fail(version, 'WebSocket#_pendingAutoPongs')
    if (fields._maxPendingAutoPongs !== 3) fail(version, 'WebSocket#_maxPendingAutoPongs')
    const receiver = fields._receiver as Partial<Receiver> | null | undefined
    if (receiver == null) fail(version, 'WebSocket#_receiver')
    if (receiver._maxPayload !== maxPayload) fail(version, 'Receiver#_maxPayload')
    if (receiver._errored !== false) fail(version, 'Receiver#_errored')
    if (receiver._state !== GET_INFO) fail(version, 'Receiver#_state')
    if (receiver._bufferedBytes !== 0) fail(version, 'Receiver#_bufferedBytes')
    if (receiver._fragmented !== 0) fail(version, 'Receiver#_fragmented')
    if (typeof receiver._opcode !== 'number') fail(version, 'Receiver#_opcode')
  } finally {
    // Without ws's listeners: its close handling would read the very fields that may be missing.
    stream.removeAllListeners()
    stream.destroy()
  }
}

/**
 * The same for Node's fields read above, on objects of its own that never see
 * the network: a response assigned to a socket and detached again, and, for a
 * TLS server only (where the guard needs it), a TLS socket over a TCP one.
 */
function checkNodeInternals (server: Server): void {
  const tcp = new Socket()
  try {
    const response = new ServerResponse(new IncomingMessage(tcp))
    response.assignSocket(tcp)
    const message = (tcp as { _httpMessage?: { _headerSent?: unknown } | null })._httpMessage
    if (message !== response) failNode('Socket#_httpMessage')
    if (message._headerSent !== false) failNode('ServerResponse#_headerSent')
    if (typeof response.detachSocket !== 'function') failNode('ServerResponse#detachSocket')
    response.detachSocket(tcp)
    if ((tcp as { _httpMessage?: unknown })._httpMessage !== null) failNode('ServerResponse#detachSocket')
    if (server instanceof TlsServer) {
      const tls = new TLSSocket(tcp, { isServer: true })
      const parent = (tls as { _parent?: unknown })._parent
      tls.destroy()
      if (parent !== tcp) failNode('TLSSocket#_parent')
    }
  } finally {
    tcp.destroy()
  }
}

function failNode (field: string): never {
  throw new FST_RELIABLE_WS_UNSUPPORTED_DEPENDENCY('Node', process.version, field)
}

function fail (version: string, field: string): never {
  throw new FST_RELIABLE_WS_UNSUPPORTED_DEPENDENCY('ws', version, field)
}
