// Wiring: the socket class, a connection's life, the route hook, shutdown and the error handler, built from the layers below.
import { performance } from 'node:perf_hooks'
import type { ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { FastifyRequest, preHandlerHookHandler } from 'fastify'
import type { BusySession, PreparedSession, Route, ReliableSocket, SessionRoute } from '../core/shapes'
import { isThenable } from '../core/thenable'
import { startDeadlines } from '../timing/deadlines'
import { failConnection, socketLog } from '../core/socket-errors'
import { ALIVE } from '../core/shapes'
import { onPeerPing, onPong } from '../timing/heartbeat'
import { onJsonMessage } from '../messages/json-messages'
import { watchCompression } from '../messages/compression'
import { bytesHandedOver, bytesRead } from '../observability/stats'
import type { LogLevel } from '../core/options'
import { OPEN, PROTOCOL, WELCOME_FRAME, encodeControl } from '../protocol/protocol'
import { kPongState, kBytesReadAtOpen, kBytesWrittenAtOpen, kCause, kCloseCodeSent, kFramed, kIp, kLog, kOnConnectPending, kOpenedAt, kRoute, kSendControl, kSession, kTcp, kTopics, kUpgradeResponse } from '../core/symbols'
import { closeFrameReceived, detachResponse, fastifyWebsocketErrorListener, midMessage, parserErrored, setMaxPayload } from '../core/ws-internals'

// ws's listener types expect its own class as `this`.
type Listener = (...args: any[]) => void

// Clients told to come back (the session store failed, or their session is busy) come at a moment drawn from this
// window (ms), after any wait the store asked for.
const RETRY_WINDOW_MS = 2000

/** Makes a freshly upgraded socket reliable: counters, limits, listeners, heartbeat. */
export function openConnection (socket: ReliableSocket, route: Route, request: FastifyRequest): void {
  const { ctx, counters } = route
  const stats = ctx.stats
  const now = performance.now()
  const ip = request.ip
  socket[kRoute] = route
  socket[kOpenedAt] = now
  socket[kIp] = ip
  // The handshake is already on the wire; stats count the bytes after it.
  // The connection ws took over (none behind @fastify/websocket's injectWS).
  const tcp = socket[kTcp] = (request.raw.socket as Socket | undefined) ?? null
  socket[kBytesReadAtOpen] = bytesRead(tcp)
  socket[kBytesWrittenAtOpen] = bytesHandedOver(tcp)
  socket[kFramed] = socket.protocol === PROTOCOL
  if (++stats.active > stats.peak) stats.peak = stats.active
  counters.opened++
  counters.active++
  ctx.connections.opened(ip)
  const level = ctx.settings.logging.connections
  if (level !== false) {
    socket[kLog] = request.log
    request.log[level]({ socketId: socket.id, route: route.url, ip }, 'websocket opened')
  }
  // ws checks its server-wide maxPayload in each socket's frame parser, against every frame's declared length
  // and every inflated message: a route's lower limit in that same field costs nothing per message. Nothing has
  // been parsed yet (ws reads from a later tick).
  const maxPayload = route.limits.maxPayload
  if (maxPayload < ctx.settings.limits.maxPayload) setMaxPayload(socket, maxPayload)
  watchCompression(socket, route)
  // Shared listeners (state comes from `this`): nothing is allocated per connection.
  socket.on('message', (route.json ? onJsonMessage : onMessage) as Listener)
  socket.on('close', onClose as Listener)
  if (route.heartbeat !== false) {
    socket.on('pong', onPong as Listener)
    socket.on('ping', onPeerPing as Listener)
  }
  startDeadlines(socket, route, now)
  releaseExchange(socket, request, ctx.settings.websocket.errorHandler === undefined)
}

/**
 * Once upgraded, nothing needs the HTTP exchange, yet two references kept it
 * (request, reply, their raw objects and headers: nearly half of a socket's heap)
 * alive for the socket's whole life: the TCP socket's link to the response
 * object @fastify/websocket routed the upgrade with, and @fastify/websocket's
 * 'error' listener, a closure over request and reply. Without an application
 * errorHandler (which is passed both) that listener is swapped for a shared one
 * that does what the plugin's errorHandler would.
 */
function releaseExchange (socket: ReliableSocket, request: FastifyRequest, swapErrorListener: boolean): void {
  const raw = request.raw as { [kUpgradeResponse]?: ServerResponse | undefined }
  detachResponse(raw[kUpgradeResponse]!)
  raw[kUpgradeResponse] = undefined
  if (!swapErrorListener) return
  const listener = fastifyWebsocketErrorListener(socket)
  if (listener === null) return
  socket.removeListener('error', listener)
  socket.on('error', onError as Listener)
}

/** A preHandler of every reliable route: keeps the response an upgrade was routed with, for releaseExchange. */
export const keepUpgradeResponse: preHandlerHookHandler = function keepUpgradeResponse (request, reply, done) {
  (request.raw as { [kUpgradeResponse]?: ServerResponse })[kUpgradeResponse] = reply.raw
  done()
}

function onError (this: ReliableSocket, err: Error): void {
  failConnection(this, err)
}

function onMessage (this: ReliableSocket): void {
  this[kPongState] = ALIVE
  this[kRoute]!.counters.messagesReceived++
}

function onClose (this: ReliableSocket, reportedCode: number, reason: Buffer): void {
  const code = closeCode(this, reportedCode)
  const route = this[kRoute]!
  const ctx = route.ctx
  const cause = this[kCause] ?? 'client'
  ctx.scheduler.remove(this)
  const session = this[kSession]
  if (session !== null) ctx.sessions.detach(session, performance.now())
  if (this[kTopics] !== null) ctx.topics.socketClosed(this)
  ctx.connections.closed(this)
  ctx.stats.recordClose(this, route.counters, code, cause)
  if (endedMidFrame(this)) ctx.stats.limits.protocolErrors++
  const observers = route.observers
  const log = this[kLog]
  const onDisconnect = ctx.settings.onDisconnect
  if (observers === null && log === null && onDisconnect == null) return
  const durationMs = performance.now() - this[kOpenedAt]
  if (observers !== null) observers.duration.observe(durationMs / 1000)
  if (log === null && onDisconnect == null) return
  const info = { code, reason: reason.toString(), cause, durationMs: Math.round(durationMs) }
  if (log !== null) {
    log[ctx.settings.logging.connections as LogLevel]({ socketId: this.id, route: route.url, ip: this[kIp], ...info }, 'websocket closed')
  }
  if (onDisconnect == null) return
  try {
    const result = onDisconnect(this, info)
    if (isThenable(result)) result.then(undefined, (err: unknown) => logHookError(this, err))
  } catch (err) {
    logHookError(this, err)
  }
}

type Handler = (this: unknown, socket: ReliableSocket, request: FastifyRequest) => unknown

/**
 * Runs onConnect before the route handler. While an async onConnect runs the
 * socket is paused, so no message arrives before the handler listens for it.
 * A hook that throws or rejects refuses the connection with 1008.
 */
export function connect (socket: ReliableSocket, request: FastifyRequest, handler: Handler, thisArg: unknown): unknown {
  const onConnect = socket[kRoute]!.ctx.settings.onConnect
  if (onConnect == null) return admit(socket, request, handler, thisArg, false)
  let result
  try {
    result = onConnect(socket, request)
  } catch (err) {
    return refuseConnection(socket, err)
  }
  if (!isThenable(result)) return admit(socket, request, handler, thisArg, false)
  pauseReading(socket)
  return result.then(() => admit(socket, request, handler, thisArg, true), (err: unknown) => {
    // Reading again lets the peer's answering close frame end the handshake at once.
    readAgain(socket)
    refuseConnection(socket, err)
  })
}

/**
 * Everything that can refuse the connection has accepted it: only now does
 * a client on the reliable subprotocol get its welcome, and its session (so
 * a refused client never sees one, nor touches the one it asked to resume).
 * `paused`: reading was paused on the way here and must go on once the
 * handler has been called (also when the peer left meanwhile: a paused socket
 * would never read its close frame).
 */
function admit (socket: ReliableSocket, request: FastifyRequest, handler: Handler, thisArg: unknown, paused: boolean): unknown {
  const route = socket[kRoute]!
  if (socket.readyState !== OPEN || !socket[kFramed]) return callHandler(socket, request, handler, thisArg, paused)
  if (route.resume === false) {
    socket[kSendControl](WELCOME_FRAME)
    return callHandler(socket, request, handler, thisArg, paused)
  }
  const ownerOf = route.resume.owner
  if (ownerOf === null) return openSession(socket, request, null, handler, thisArg, paused)
  let owner
  try {
    owner = ownerOf(request)
    if (!isThenable(owner)) checkOwner(owner)
  } catch (err) {
    if (paused) readAgain(socket)
    return refuseConnection(socket, err)
  }
  if (!isThenable(owner)) return openSession(socket, request, owner, handler, thisArg, paused)
  if (!paused) pauseReading(socket)
  return Promise.resolve(owner).then(checkOwner).then((resolved) => openSession(socket, request, resolved, handler, thisArg, true), (err: unknown) => {
    readAgain(socket)
    refuseConnection(socket, err)
  })
}

function checkOwner (owner: unknown): string {
  if (typeof owner !== 'string') throw new TypeError(`resume.owner must return a string, got ${typeof owner}`)
  return owner
}

/**
 * The session is settled in the store first: with a store that answers at
 * once (the default) the welcome goes out in the upgrade's own tick; with one
 * that answers later the socket is paused meanwhile, as for an async owner.
 */
function openSession (socket: ReliableSocket, request: FastifyRequest, owner: string | null, handler: Handler, thisArg: unknown, paused: boolean): unknown {
  const route = socket[kRoute] as SessionRoute
  if (socket.readyState !== OPEN) return callHandler(socket, request, handler, thisArg, paused)
  let prepared
  try {
    prepared = route.ctx.sessions.prepare(route, request, owner)
  } catch (err) {
    return storeFailed(socket, err, paused)
  }
  if (!isThenable(prepared)) return beginSession(socket, request, prepared, handler, thisArg, paused)
  if (!paused) pauseReading(socket)
  return Promise.resolve(prepared).then((settled) => beginSession(socket, request, settled, handler, thisArg, true), (err: unknown) => storeFailed(socket, err, true))
}

function beginSession (socket: ReliableSocket, request: FastifyRequest, prepared: PreparedSession | BusySession, handler: Handler, thisArg: unknown, paused: boolean): unknown {
  const route = socket[kRoute] as SessionRoute
  const sessions = route.ctx.sessions
  if ('retryMs' in prepared) {
    if (paused) readAgain(socket)
    if (socket.readyState !== OPEN) return
    if (prepared.throttled === true) {
      route.ctx.stats.sessions.throttled++
      return tellRetry(socket, prepared.retryMs, 'Server busy')
    }
    route.ctx.stats.sessions.busy++
    return tellRetry(socket, prepared.retryMs, 'Session busy')
  }
  // Closed while the store answered (by shutdown or a timeout: a paused socket does not see its peer leave).
  if (socket.readyState !== OPEN) sessions.abandon(route, prepared)
  else sessions.open(socket, route, prepared)
  return callHandler(socket, request, handler, thisArg, paused)
}

/**
 * The store failed while the session began or resumed: no new session is
 * begun in its place (that would throw away the one asked for). The client is
 * told when to come back, spread over a window so that a store's outage does
 * not bring every client back at one moment, and 1013 has it reconnect.
 */
function storeFailed (socket: ReliableSocket, err: unknown, paused: boolean): void {
  if (paused) readAgain(socket)
  socketLog(socket).warn({ err }, 'session store failed')
  // Closed while the store answered: nobody is left to tell.
  if (socket.readyState !== OPEN) return
  socket[kRoute]!.ctx.stats.sessions.storeUnavailable++
  tellRetry(socket, 0, 'Session store unavailable')
}

/** The client is to come back after `ms`, spread over a window so that those told at one moment do not all come at once. */
function tellRetry (socket: ReliableSocket, ms: number, reason: string): void {
  socket[kCause] = 'session'
  socket[kSendControl](encodeControl({ t: 'retry', ms: ms + Math.floor(Math.random() * RETRY_WINDOW_MS) }))
  socket.close(1013, reason)
}

function callHandler (socket: ReliableSocket, request: FastifyRequest, handler: Handler, thisArg: unknown, paused: boolean): unknown {
  try {
    if (socket.readyState === OPEN) return handler.call(thisArg, socket, request)
  } finally {
    if (paused) readAgain(socket)
  }
}

function pauseReading (socket: ReliableSocket): void {
  socket[kOnConnectPending] = true
  socket.pause()
}

function readAgain (socket: ReliableSocket): void {
  socket[kOnConnectPending] = false
  socket.resume()
}

/**
 * Once its parser has refused a frame, ws sends its close frame (1002, 1007,
 * 1008, 1009) and reads nothing more from the peer, so the answer is never
 * seen and ws reports 1006 whatever the peer did: the code the server sent is
 * what happened.
 */
function closeCode (socket: ReliableSocket, reported: number): number {
  return parserErrored(socket) ? socket[kCloseCodeSent] : reported
}

/**
 * The peer hung up inside a frame or a fragmented message: a truncated frame.
 * (Frames ws refused were counted as errors already, and a close the server
 * started is not the peer's doing.)
 */
function endedMidFrame (socket: ReliableSocket): boolean {
  return socket[kCause] === undefined && !closeFrameReceived(socket) && !parserErrored(socket) && midMessage(socket)
}

function refuseConnection (socket: ReliableSocket, err: unknown): void {
  socketLog(socket).warn({ err }, 'onConnect refused the websocket connection')
  socket.close(1008, 'Connection refused')
}

function logHookError (socket: ReliableSocket, err: unknown): void {
  socketLog(socket).error({ err }, 'onDisconnect hook failed')
}
