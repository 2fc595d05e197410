/** What a client knows of a closed connection: what the close event said. */
export interface CloseInfo {
  code: number
  reason: string
  wasClean: boolean
  /**
   * The HTTP status the server refused the upgrade with (the code is then
   * 1006). Only where the WebSocket class shows the response (ws, in Node):
   * a browser never does.
   */
  status?: number
}

// Reconnecting after these gets the same answer again: the server refused this client or what it sent.
const FINAL = new Set([
  1000, // the server ended the conversation on purpose
  1002, // protocol error
  1003, // unsupported data
  1007, // invalid payload data
  1008, // policy violation (an auth or origin refusal, a rate limit)
  1009, // message too big
  1010, // an extension the client requires was refused
  1015, // TLS handshake failure
  3000, // unauthorized (IANA)
  3003 // forbidden (IANA)
])

/**
 * The default reconnection policy. Retried: 1001 going away, 1005 no code,
 * 1006 abnormal (dropped, timed out), 1011 server error, 1012 restart, 1013
 * try again later, 1014 bad gateway, the rest of 3000-3999, and the
 * application range 4500-4999. Final: the codes in FINAL and 4000-4499, the
 * application range for "do not come back".
 *
 * An upgrade refused with a status is final on a 4xx (401, 403, 404: asking
 * again gets the same answer) except 408 timeout and 429 too many requests;
 * any other status (5xx: the server is down or busy) is retried.
 */
export function isRetryable ({ code, status }: CloseInfo): boolean {
  if (status !== undefined) return status < 400 || status >= 500 || status === 408 || status === 429
  if (FINAL.has(code)) return false
  return !(code >= 4000 && code <= 4499)
}
