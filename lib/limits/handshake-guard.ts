import { STATUS_CODES } from 'node:http'
import type { IncomingMessage, Server } from 'node:http'
import { performance } from 'node:perf_hooks'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { WebSocketServer } from 'ws'
import type { Context, PendingConnection } from '../core/shapes'
import { responseUnderway, tcpUnder, upgradeResponse } from '../core/ws-internals'

/**
 * Guards what happens on the server before a socket is a websocket. Each
 * new TCP connection is put on the instance's scheduler, due handshakeTimeoutMs
 * later, and taken off as soon as its first request's headers are in (an
 * upgrade or any other request: until then nobody knows which it will be):
 * a slowloris connection is destroyed when it comes due. Node's own
 * headersTimeout would do the same, but is checked every 30 s at best.
 * Behind TLS the deadline runs from TCP accept too, so that it covers the TLS
 * handshake as well: one that never finishes gets no request either.
 * Malformed HTTP and malformed upgrade requests are counted here too.
 *
 * The connections still waiting are also kept in a set (with or without a
 * timeout) for shutdown: Node stops its own header timeout once the server is
 * closing, and a TLS handshake in progress is nowhere in Node's list of HTTP
 * connections, so nothing else could end them.
 */
export class HandshakeGuard {
  private readonly pending = new Set<PendingConnection>()
  private readonly timed: boolean
  private readonly onConnection: (socket: PendingConnection) => void
  private readonly onRequest: (request: IncomingMessage) => void
  private readonly onUpgrade: (request: IncomingMessage, socket: Socket) => void
  private readonly onSocketClose: (this: PendingConnection) => void
  private readonly onClientError: (this: Server, err: NodeJS.ErrnoException, socket: Duplex) => void

  constructor (private readonly ctx: Context, readonly server: Server) {
    const scheduler = ctx.scheduler
    const timeoutMs = ctx.settings.handshakeTimeoutMs
    const timed = this.timed = timeoutMs !== Infinity
    const pending = this.pending
    const guard = this
    this.onRequest = (request) => {
      // Behind TLS the request comes on the TLS socket; the TCP connection under it is the one
      // guarded since accept. A kept-alive connection's next request finds it settled already. An upgrade request
      // made up by @fastify/websocket's injectWS has no socket, or one of the test's own that was never guarded.
      const socket = request.socket as Socket | undefined
      if (socket !== undefined) this.release(tcpUnder(socket) as PendingConnection)
    }
    this.onUpgrade = (request, socket) => {
      // @fastify/websocket's injectWS (11.3.7) makes the version header up as the number 13; ws compares it as the
      // string every real request carries (from 8.23.1) and would refuse the upgrade with 400.
      const headers = request.headers as { 'sec-websocket-version'?: unknown }
      if (typeof headers['sec-websocket-version'] === 'number') headers['sec-websocket-version'] = String(headers['sec-websocket-version'])
      this.onRequest(request)
      // After @fastify/websocket's listener, which runs next and may have Fastify answer at once.
      process.nextTick(watchUpgradeAnswer, ctx, socket)
    }
    this.onConnection = (socket) => {
      pending.add(socket)
      if (timed) scheduler.add(socket, performance.now() + timeoutMs)
      socket.on('close', this.onSocketClose)
    }
    this.onSocketClose = function () { guard.release(this) }
    this.onClientError = function (err, socket) {
      // llhttp's parse errors: what came was not HTTP. Resets and timeouts are not the peer's malformed input.
      if (err.code?.startsWith('HPE_') === true) ctx.stats.limits.protocolErrors++
      // Fastify's server has its own listener, which answers; a server of the app's (websocket.options.server)
      // may have none, and any listener stops Node from answering.
      if (this.listenerCount('clientError') === 1) answerAsNode(err, socket)
    }
    if (timed) scheduler.usePeriod(timeoutMs)
    // On a TLS server 'connection' is the TCP connection, before the TLS handshake ('secureConnection' after it).
    server.on('connection', this.onConnection)
    server.on('request', this.onRequest)
    server.on('upgrade', this.onUpgrade)
    server.on('clientError', this.onClientError)
  }

  /** Takes a connection that got its first request, or closed, off the scheduler and out of the set. */
  private release (socket: PendingConnection): void {
    if (!this.pending.delete(socket)) return
    // (One the wheel found due is off it already: remove() knows.)
    if (this.timed) this.ctx.scheduler.remove(socket)
    // Kept for the connection's life, the listener would turn the socket's one 'close' listener into a list.
    socket.removeListener('close', this.onSocketClose)
  }

  /** The scheduler's callback for a connection that is still mid-request. */
  onDue (socket: PendingConnection): void {
    this.ctx.stats.limits.handshakeTimeouts++
    socket.destroy()
  }

  /**
   * ws hands an upgrade request it refuses (a bad method, Sec-WebSocket-Key
   * or Sec-WebSocket-Version, say) to its 'wsClientError' listeners when there
   * are any, and then answers nothing itself. This one counts the request and,
   * unless the application listens too (its listener answers), answers exactly
   * as ws would have.
   */
  watch (wss: WebSocketServer): void {
    const stats = this.ctx.stats
    wss.on('wsClientError', function (this: WebSocketServer, err: Error, socket: Duplex) {
      stats.limits.protocolErrors++
      stats.rejected++
      if (this.listenerCount('wsClientError') === 1) answerAsWs(socket, err.message)
    })
  }

  /** From shutdown on, the server's upgrade requests must reach Fastify's 503, not a leftover listener. */
  drain (): void {
    this.server.off('upgrade', this.onUpgrade)
  }

  /**
   * When shutdown.timeoutMs is up: destroys every connection still short of
   * its first request, TLS handshakes included. Not counted as handshake
   * timeouts: shutdown cut them short.
   */
  destroyPending (): void {
    for (const socket of this.pending) socket.destroy()
  }

  /** Once the instance is closed: the plugin no longer guards (or counts) anything on this server. */
  detach (): void {
    const server = this.server
    server.off('connection', this.onConnection)
    server.off('request', this.onRequest)
    server.off('upgrade', this.onUpgrade)
    server.off('clientError', this.onClientError)
  }
}

/**
 * Fastify answers some requests without running any hook: a URL it cannot decode (400 FST_ERR_BAD_URL, or whatever
 * `frameworkErrors` answers), a path parameter over maxParamLength (414), a failed async constraint (500), an upgrade
 * let in just before close() (503). @fastify/websocket ends an upgrade's socket only from onResponse, and Node let go
 * of the socket at the upgrade, so such a socket would stay open for as long as the peer liked (and keep close()
 * waiting): it is destroyed once the answer is out, and counted.
 */
function watchUpgradeAnswer (ctx: Context, socket: Socket): void {
  const response = upgradeResponse(socket)
  // None once upgraded: the plugin detaches the response at once (connection.ts, releaseExchange). A request routed
  // to a handler has Fastify's own 'finish' listener by now (it runs onResponse, where @fastify/websocket ends it).
  if (response === null || response.listenerCount('finish') !== 0) return
  response.once('finish', () => {
    ctx.stats.rejected++
    // A request that could not be read as one: malformed input. The others were the server's choice.
    if (response.statusCode === 400 || response.statusCode === 414) ctx.stats.limits.protocolErrors++
    socket.destroy()
  })
}

/** ws's own answer to an upgrade request it refuses (abortHandshake in ws's websocket-server.js): 405 or 400, its short description. */
function answerAsWs (socket: Duplex, message: string): void {
  const code = message === 'Invalid HTTP method' ? 405 : 400
  const versions = message.includes('Sec-WebSocket-Version') ? 'Sec-WebSocket-Version: 13, 8\r\n' : ''
  socket.once('finish', socket.destroy)
  socket.end(
    `HTTP/1.1 ${code} ${STATUS_CODES[code]!}\r\nConnection: close\r\nContent-Type: text/html\r\n` +
    `Content-Length: ${Buffer.byteLength(message)}\r\n${versions}\r\n${message}`
  )
}

// Node's own answer to what it could not parse (socketOnError in its _http_server.js), which any 'clientError'
// listener replaces.
const NODE_ERROR_STATUS: Record<string, number> = { HPE_HEADER_OVERFLOW: 431, HPE_CHUNK_EXTENSIONS_OVERFLOW: 413, ERR_HTTP_REQUEST_TIMEOUT: 408 }

function answerAsNode (err: NodeJS.ErrnoException, socket: Duplex): void {
  // Never in the middle of a response already on its way. (A socket that can no longer be written to fails
  // quietly: Node gives it an 'error' listener before it asks for an answer.)
  if (!responseUnderway(socket as Socket)) {
    const code = NODE_ERROR_STATUS[String(err.code)] ?? 400
    socket.write(`HTTP/1.1 ${code} ${STATUS_CODES[code]!}\r\nConnection: close\r\n\r\n`)
  }
  socket.destroy(err)
}
