import type { Server } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import type { WebSocketServer } from 'ws'
import type { Context, ReliableSocket } from '../core/shapes'
import type { HandshakeGuard } from '../limits/handshake-guard'
import { healthResponse, isHealthRequest } from '../observability/health'
import type { StatsCollector } from '../observability/stats'
import { encodeControl } from '../protocol/protocol'
import { kCause, kFramed, kSendControl } from '../core/symbols'
import { interceptRequests } from '../core/ws-internals'
import { isThenable } from '../core/thenable'

export interface Shutdown {
  /** The preClose handed to @fastify/websocket. */
  preClose: (this: FastifyInstance, done: () => void) => void
  /** From the plugin's onClose hook, once Fastify's server has closed. */
  finish: () => void
}

/**
 * The preClose handed to @fastify/websocket (which removes its upgrade
 * listener just before). Every client gets a close frame with the configured
 * code; close() waits for the closing handshakes, and terminates whatever is
 * left after `shutdown.timeoutMs`.
 *
 * close() then waits for Fastify's server too, that is for every HTTP
 * connection: a kept-alive one, one in the middle of its request (Node stops
 * timing out request heads once the server is closing), one still in its
 * TLS handshake. So the deadline runs until the server has closed, not only
 * until the last websocket has, and destroys those too.
 */
export function createShutdown (ctx: Context, stats: StatsCollector, handshakes: HandshakeGuard): Shutdown {
  let timer: NodeJS.Timeout | null = null
  return {
    preClose (done) {
      const { closeCode, reason, timeoutMs, reconnectWindowMs } = ctx.settings.shutdown
      const wss = this.websocketServer
      ctx.stats.draining = true
      // Connections still short of their first request stay guarded: shutdown does not lift handshakeTimeoutMs.
      handshakes.drain()
      answerWhileDraining(this.server, ctx, stats, wss.clients)
      timer = setTimeout(cutOff, timeoutMs, wss, this.server, handshakes)
      timer.unref()
      // Sessions go to the store before their clients are told, so that they find them wherever they resume; within
      // half the time allowed, so that a hung store still leaves the clients told before they are cut off.
      const drained = ctx.sessions.drain(timeoutMs / 2)
      if (isThenable(drained)) drained.then(() => closeAll(wss, closeCode, reason, reconnectWindowMs, done))
      else closeAll(wss, closeCode, reason, reconnectWindowMs, done)
    },
    finish () {
      if (timer !== null) clearTimeout(timer)
      timer = null
      handshakes.detach()
    }
  }
}

/** Every client is told to come back, each at its own moment, and closed; `done` once the last has gone. */
function closeAll (wss: WebSocketServer, closeCode: number, reason: string, reconnectWindowMs: number, done: () => void): void {
  // One slot per client that is told a moment: a socket off the subprotocol (or off the plugin) takes none, or the
  // moments would bunch in the front of the window.
  let framed = 0
  for (const socket of wss.clients as Set<ReliableSocket>) if (socket[kFramed]) framed++
  const hints = new RetryHints(reconnectWindowMs, framed)
  for (const socket of wss.clients as Set<ReliableSocket>) {
    socket[kCause] ??= 'shutdown'
    if (socket[kFramed] && reconnectWindowMs > 0) socket[kSendControl](encodeControl({ t: 'retry', ms: hints.next() }))
    socket.close(closeCode, reason)
  }
  // ws calls back once its last client has closed.
  wss.close(() => done())
}

/** When shutdown.timeoutMs is up: ends whatever would keep close() waiting. */
function cutOff (wss: WebSocketServer, server: Server, handshakes: HandshakeGuard): void {
  for (const socket of wss.clients) socket.terminate()
  // Every HTTP connection, half-sent requests and kept-alive ones included. A TLS handshake in progress is not
  // one yet: the guard has it. On a server of the app's (websocket.options.server) pending connections are the
  // app's own business: close() does not wait for that server. (An HTTP/2 server has no such method: Fastify closes
  // its sessions itself.)
  server.closeAllConnections?.()
  if (handshakes.server === server) handshakes.destroyPending()
  // Fastify closes the server only once the last websocket is gone: a connection let in meanwhile would hold it open.
  server.on('connection', refuse)
}

function refuse (socket: Socket): void {
  socket.destroy()
}

/**
 * From here on Fastify answers every request with its own 503 before any
 * route runs. The health route must still give its own body, so requests are
 * looked at before Fastify's listener; upgrade attempts are counted as
 * rejected (they reach 'request' now that the upgrade listener is gone).
 */
function answerWhileDraining (server: Server, ctx: Context, stats: StatsCollector, clients: Set<unknown>): void {
  interceptRequests(server, (request, response, next) => {
    const healthPath = ctx.settings.healthPath
    if (healthPath !== null && isHealthRequest(request, healthPath)) {
      const { statusCode, body } = healthResponse(stats, clients, ctx.settings.topics.healthChecksBroker)
      response.writeHead(statusCode, { 'content-type': 'application/json; charset=utf-8', connection: 'close' })
      response.end(JSON.stringify(body))
      return
    }
    if (request.headers.upgrade !== undefined) ctx.stats.rejected++
    next()
  })
}

/**
 * Spreads the clients' reconnections over the window so that a restart
 * does not become a reconnect storm: the window is cut into one slot per
 * client and each gets a random moment in its own slot, so that no part of
 * the window gets more than its share (random moments alone would bunch).
 */
class RetryHints {
  private slot = 0

  constructor (private readonly windowMs: number, private readonly clients: number) {}

  next (): number {
    return Math.floor((this.slot++ + Math.random()) * this.windowMs / this.clients)
  }
}
