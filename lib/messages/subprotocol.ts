import type { IncomingMessage } from 'node:http'
import type { preHandlerHookHandler } from 'fastify'
import type { Route, ReliableSocket, ResumeRequest } from '../core/shapes'
import { ALIVE } from '../core/shapes'
import { CONTROL_MARK, countOf, decodeControl, isReservedProtocol, MAX_CONTROL_BYTES, OPEN, parseResumeToken, PONG_FRAME, PROTOCOL } from '../protocol/protocol'
import { withinRate } from '../limits/rate-limiter'
import { kCause, kOffersProtocol, kPendingPongs, kPongSent, kPongState, kResume, kSendControl, kSession } from '../core/symbols'

// Pongs handed to ws but not yet to the operating system; an honest client has at most one or two.
const MAX_PENDING_PONGS = 16

type ProtocolHandler = (this: unknown, protocols: Set<string>, request: IncomingMessage) => string | false

/**
 * ws's `handleProtocols`. The reliable subprotocol is chosen whenever a
 * client offers it on a reliable route, and never on a route that opted out
 * (where nothing would read its control frames). Every other choice is left
 * to the application's own handler, or to ws's default: the first offered.
 */
export function createProtocolHandler (appHandler: ProtocolHandler | undefined): ProtocolHandler {
  // ws calls it as a method of its options: the application's handler gets the same `this`.
  return function handleProtocols (protocols, request) {
    if (protocols.has(PROTOCOL) && (request as { [kOffersProtocol]?: true })[kOffersProtocol] === true) {
      for (const protocol of protocols) {
        const resume = parseResumeToken(protocol)
        if (resume !== null) (request as { [kResume]?: ResumeRequest })[kResume] = resume
      }
      return PROTOCOL
    }
    for (const protocol of protocols) {
      if (isReservedProtocol(protocol)) protocols.delete(protocol)
    }
    if (appHandler !== undefined) return appHandler.call(this, protocols, request)
    return protocols.values().next().value ?? false
  }
}

/** A reliable route's last preHandler: its upgrade may negotiate the subprotocol. */
export const offerProtocol: preHandlerHookHandler = function offerProtocol (request, _reply, done) {
  (request.raw as { [kOffersProtocol]?: true })[kOffersProtocol] = true
  done()
}

/**
 * A text message on the subprotocol that starts with U+0000: either a data
 * message escaped by the peer (returned without its mark, for the listeners)
 * or a control frame, handled here and returned as null.
 */
export function unframe (socket: ReliableSocket, route: Route, data: Buffer): Buffer | null {
  if (data[1] === CONTROL_MARK) return data.subarray(1)
  // A sign of life, but not activity: like pongs, control frames leave the idle timeout running.
  socket[kPongState] = ALIVE
  // Checked before parsing: JSON.parse of a deeply nested megabyte holds the event loop for ~100 ms.
  if (data.length > MAX_CONTROL_BYTES) {
    route.ctx.stats.limits.payloadTooLarge++
    socket[kCause] = 'error'
    socket.close(1009, 'Control frame too large')
    return null
  }
  if (!withinRate(socket, route)) return null
  const control = decodeControl(data.toString('utf8', 1))
  const session = socket[kSession]
  session?.heard()
  const n = countOf(control?.n)
  // Only a session numbers messages; acknowledging messages it never sent means the client speaks of another.
  if (control === null || (session !== null && n !== undefined && !session.acknowledge(n))) {
    route.ctx.stats.limits.protocolErrors++
    socket[kCause] = 'error'
    socket.close(1002, 'Invalid control frame')
  } else if (control.t === 'ping') {
    answerPing(socket, route, session === null ? PONG_FRAME : session.pong())
  }
  return null
}

/**
 * A peer that pings and never reads would have its pongs pile up in memory
 * (they bypass backpressure): like ws for protocol-level pings, after a few
 * unsent pongs it is terminated.
 */
function answerPing (socket: ReliableSocket, route: Route, pong: string): void {
  // What a terminated flooder had already sent is still parsed.
  if (socket.readyState !== OPEN) return
  if (socket[kPendingPongs] >= MAX_PENDING_PONGS) {
    route.ctx.stats.limits.pingFloods++
    socket[kCause] = 'error'
    socket.terminate()
    return
  }
  if (socket[kSendControl](pong, socket[kPongSent] ??= () => { socket[kPendingPongs]-- })) socket[kPendingPongs]++
}

/** Text the application sends on the subprotocol, escaped when it starts with the control mark; binary goes as it is. */
export function escapeText (data: unknown, binary: boolean | undefined): unknown {
  // A string is sent as binary only when asked to be.
  if (typeof data === 'string') return binary !== true && data.charCodeAt(0) === CONTROL_MARK ? '\u0000' + data : data
  // A buffer is sent as text only when asked to be.
  if (binary === false && (data as Uint8Array)[0] === CONTROL_MARK) return Buffer.concat([ZERO, data as Uint8Array])
  return data
}

const ZERO = Buffer.alloc(1)
