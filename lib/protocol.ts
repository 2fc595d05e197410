/**
 * The reliable subprotocol, shared by the plugin and the client (so this file
 * imports nothing from Node). docs/protocol.md is its specification.
 *
 * Data frames travel as they were sent: binary frames untouched, text frames
 * untouched unless they start with U+0000. A text frame that starts with U+0000
 * is a control frame, `\u0000` followed by a JSON object with a type in `t`;
 * a data text frame that itself starts with U+0000 is sent with one more in
 * front, and the receiver removes it. JSON and ordinary text never start with
 * U+0000, so applications pay nothing for the framing.
 */

/** The `Sec-WebSocket-Protocol` value; its version changes with any incompatible change to the frames. */
export const PROTOCOL = 'reliable-ws.v1'

/** The first character (and byte) of a control frame. */
export const CONTROL_MARK = 0

/** A control frame's body. Receivers ignore types they do not know, so a newer peer can add some. */
export type Control =
  // The server's first frame: proof that it speaks the subprotocol, not just that it echoed the name back
  // (ws, for one, picks the first protocol a client offers unless told otherwise).
  | { t: 'welcome' }
  | { t: 'ping' }
  | { t: 'pong' }

export function encodeControl (control: Control): string {
  return '\u0000' + JSON.stringify(control)
}

export const WELCOME_FRAME = encodeControl({ t: 'welcome' })
export const PING_FRAME = encodeControl({ t: 'ping' })
export const PONG_FRAME = encodeControl({ t: 'pong' })

/** A control frame's body, or null when it is not a JSON object with a string `t`. */
export function decodeControl (json: string): { t: string, [key: string]: unknown } | null {
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
