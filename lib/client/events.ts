import type { Payload } from './outbox'

/**
 * A connection closed. Fired for every connection that ends, like the close
 * event of the WebSocket it wraps; `willReconnect` tells whether another
 * attempt follows.
 */
export class ReliableCloseEvent extends Event {
  readonly code: number
  readonly reason: string
  readonly wasClean: boolean
  readonly willReconnect: boolean

  constructor (code: number, reason: string, wasClean: boolean, willReconnect: boolean) {
    super('close')
    this.code = code
    this.reason = reason
    this.wasClean = wasClean
    this.willReconnect = willReconnect
  }
}

/** The next attempt is scheduled: `attempt` counts from 1, `code` is what ended the last connection. */
export class ReconnectingEvent extends Event {
  constructor (readonly attempt: number, readonly delayMs: number, readonly code: number) {
    super('reconnecting')
  }
}

/**
 * No more attempts: the close code was final (`'closeCode'`, see
 * isRetryable), the upgrade was refused with a final HTTP status
 * (`'httpStatus'`, Node only), or the retries ran out (`'maxRetries'`).
 * `status` is the HTTP status that refused the last attempt, if the
 * WebSocket class showed one.
 */
export class GiveUpEvent extends Event {
  constructor (readonly reason: 'closeCode' | 'httpStatus' | 'maxRetries', readonly code: number, readonly status?: number) {
    super('giveup')
  }
}

/**
 * A message that will never be sent: the queue was full when it was sent
 * (`'queueFull'`), or the client closed or gave up with it still queued or
 * after (`'closed'`).
 */
export class DropEvent extends Event {
  constructor (readonly data: Payload, readonly reason: 'queueFull' | 'closed') {
    super('drop')
  }
}

/**
 * The server no longer has the client's session: it expired (the client was
 * away longer than the server's ttlMs), overflowed (close code 4800), a topic
 * of it lost messages (4801), its record was lost by the session store (4802),
 * or the server restarted. A new session has begun or is about to. `unconfirmed`
 * holds the messages sent in the old session that the server never
 * acknowledged: each may or may not have reached it. Messages the server
 * sent and the client never received are lost with the session.
 */
export class SessionLostEvent extends Event {
  constructor (readonly unconfirmed: Payload[]) {
    super('sessionlost')
  }
}
