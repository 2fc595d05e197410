// The protocol: what the server and the browser client share on the wire; it imports nothing (a tsconfig checks it).
/**
 * The reliable subprotocol, shared by the plugin and the client. docs/protocol.md is its specification.
 *
 * Data frames travel as they were sent: binary frames untouched, text frames
 * untouched unless they start with U+0000. A text frame that starts with U+0000
 * is a control frame, `\u0000` followed by a JSON object with a type in `t`;
 * a data text frame that itself starts with U+0000 is sent with one more in
 * front, and the receiver removes it. JSON and ordinary text never start with
 * U+0000, so applications pay nothing for the framing.
 */

// A WebSocket's readyState values (the WHATWG standard's, and ws's).
export const CONNECTING = 0
export const OPEN = 1
export const CLOSING = 2
export const CLOSED = 3

/** The `Sec-WebSocket-Protocol` value; its version changes with any incompatible change to the frames. */
export const PROTOCOL = 'reliable-ws.v1'

/** The first character (and byte) of a control frame. */
export const CONTROL_MARK = 0

/**
 * A control frame's body. Receivers ignore types they do not know, so a newer
 * peer can add some. `n` is always a count of data messages received in the
 * session: an acknowledgement of everything up to it.
 */
export type Control =
  // The server's first frame: proof that it speaks the subprotocol, not just that it echoed the name back
  // (ws, for one, picks the first protocol a client offers unless told otherwise). On a route with sessions
  // it names the session, gives the secret for the next resume (a new one each time), says whether it was
  // resumed, and how many of the client's messages it has. Sent only once the connection has been accepted.
  | { t: 'welcome', session?: string, token?: string, resumed?: boolean, n?: number }
  | { t: 'ping', n?: number }
  | { t: 'pong', n?: number }
  | { t: 'ack', n: number }
  // Sent before the server closes for a restart: wait this long before reconnecting.
  | { t: 'retry', ms: number }

/** Each side acknowledges at least every this many messages (and with every ping and pong). */
export const ACK_EVERY = 64

/** The server ended the session because the messages the client had not acknowledged outgrew its limits. */
export const SESSION_OVERFLOW_CODE = 4800

/** The server ended the session because a topic it subscribes to lost messages before they reached it. */
export const TOPIC_GAP_CODE = 4801

/** The server ended the session because the session store lost its record (flushed, evicted): it could not be resumed. */
export const STATE_LOST_CODE = 4802

/** Control frames are a few dozen bytes: a larger one is refused before it is parsed (close code 1009). */
export const MAX_CONTROL_BYTES = 256

const RESUME_PREFIX = 'reliable-ws.resume.'

/**
 * A client resumes by offering, beside PROTOCOL, a second protocol that names
 * its session, the secret its last welcome gave it, and how many messages it
 * has received: the application's own handlers never see it, and browsers can
 * set no header but this one.
 */
export function resumeToken (session: string, secret: string, received: number): string {
  return `${RESUME_PREFIX}${session}.${secret}.${received}`
}

/** A session id or resume secret as the server makes them: 128 random bits in lowercase hex. */
export function isSessionKey (value: unknown): value is string {
  return typeof value === 'string' && /^[0-9a-f]{32}$/.test(value)
}

export function parseResumeToken (protocol: string): { session: string, secret: string, received: number } | null {
  if (!protocol.startsWith(RESUME_PREFIX)) return null
  const match = /^([0-9a-f]{32})\.([0-9a-f]{32})\.(0|[1-9][0-9]{0,15})$/.exec(protocol.slice(RESUME_PREFIX.length))
  return match === null ? null : { session: match[1], secret: match[2], received: Number(match[3]) }
}

export function isReservedProtocol (protocol: string): boolean {
  return protocol === PROTOCOL || protocol.startsWith(RESUME_PREFIX)
}

export function encodeControl (control: Control): string {
  return '\u0000' + JSON.stringify(control)
}

export const WELCOME_FRAME = encodeControl({ t: 'welcome' })
export const PING_FRAME = encodeControl({ t: 'ping' })
export const PONG_FRAME = encodeControl({ t: 'pong' })

/** A control frame's body, or null when it is not a JSON object with a string `t`. */
export function decodeControl (json: string): { t: string, n?: unknown, [key: string]: unknown } | null {
  let value: unknown
  try {
    value = JSON.parse(json)
  } catch {
    return null
  }
  return typeof value === 'object' && value !== null && typeof (value as { t?: unknown }).t === 'string'
    ? value as { t: string }
    : null
}

/** A count as a peer sent it: a safe non-negative integer, or undefined. */
export function countOf (value: unknown): number | undefined {
  return Number.isSafeInteger(value) && (value as number) >= 0 ? value as number : undefined
}
