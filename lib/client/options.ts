import type { BackoffSettings } from './backoff'
import { isRetryable } from './close-codes'
import type { CloseInfo } from './close-codes'

// A method's type, so that a class whose handlers take a richer event (the browser's MessageEvent, ws's own) fits:
// TypeScript compares a method's parameters both ways, a function property's only one way.
type EventHandler<E> = { handle (event: E): void }['handle']

/** The part of the WebSocket API the client uses: the browser's class and the ws package's both fit. */
export interface WebSocketLike {
  readonly readyState: number
  readonly protocol: string
  readonly extensions: string
  readonly bufferedAmount: number
  binaryType: string
  onopen: EventHandler<unknown> | null
  onmessage: EventHandler<{ data: any }> | null
  onclose: EventHandler<{ code: number, reason: string, wasClean: boolean }> | null
  onerror: EventHandler<unknown> | null
  send: (data: any) => void
  close: (code?: number, reason?: string) => void
  // ws only: ends the connection at once, where close() would wait out a dead peer's closing handshake.
  terminate?: () => void
}

// The third argument is ws's options (the browser's class takes two).
export type WebSocketConstructor = new (url: string, protocols?: string | string[], options?: SocketOptions) => WebSocketLike

/** ws's `perMessageDeflate` client option: `true` offers it with ws's defaults, an object with its fields. */
export type CompressionOffer = boolean | {
  serverNoContextTakeover?: boolean
  clientNoContextTakeover?: boolean
  serverMaxWindowBits?: number
  clientMaxWindowBits?: number
  threshold?: number
  concurrencyLimit?: number
}

export interface SocketOptions { perMessageDeflate: CompressionOffer }

export interface HeartbeatSettings {
  /** Silence from the server for this long sends a ping. */
  intervalMs: number
  /** No frame at all within this long after the ping: the server is gone. */
  timeoutMs: number
}

export interface ReliableWebSocketOptions {
  /** Subprotocols the application offers, as for `new WebSocket(url, protocols)`. */
  protocols?: string | string[]
  /** The WebSocket class: `globalThis.WebSocket` by default; in Node 20, pass `ws`'s. */
  WebSocket?: WebSocketConstructor
  /**
   * Offer the reliable subprotocol (`reliable-ws.v1`). On a server that speaks
   * it, the client exchanges heartbeats it can see; elsewhere nothing changes.
   * Default `true`.
   */
  subprotocol?: boolean
  backoff?: Partial<BackoffSettings>
  /** An attempt that has not opened by then is abandoned (and so is a close() the server never answers). Default 10 000. */
  connectTimeoutMs?: number
  /** Dead-server detection, on the reliable subprotocol only; `false` turns it off. Default 25 000 / 10 000. */
  heartbeat?: Partial<HeartbeatSettings> | false
  queue?: {
    /** Messages kept while disconnected; a send beyond this is refused. Default 1 000. */
    maxMessages?: number
  }
  /**
   * Overrides the default policy (isRetryable: the close-code table, and in Node the status of a refused
   * upgrade): whether to reconnect after a connection ended this way.
   */
  shouldReconnect?: (close: CloseInfo) => boolean
  /**
   * Node with ws: ws's `perMessageDeflate` option (ws offers permessage-deflate by default; `false` does not).
   * Browsers offer it whatever this says, and the server decides.
   */
  compression?: CompressionOffer
}

export interface ClientSettings {
  protocols: string[]
  WebSocket: WebSocketConstructor
  subprotocol: boolean
  backoff: BackoffSettings
  connectTimeoutMs: number
  heartbeat: HeartbeatSettings | false
  maxQueuedMessages: number
  shouldReconnect: (close: CloseInfo) => boolean
  // What the WebSocket class is constructed with after the protocols; undefined: its defaults.
  socketOptions: SocketOptions | undefined
}

/** Every default of the client in one place; the README's client table mirrors it. */
export const CLIENT_DEFAULTS = Object.freeze({
  subprotocol: true,
  backoff: Object.freeze({
    initialDelayMs: 1000,
    maxDelayMs: 30_000,
    factor: 2,
    jitter: 'full' as const,
    maxRetries: Infinity,
    minUptimeMs: 5000,
    slowAfter: 10,
    slowDelayMs: 300_000
  }),
  connectTimeoutMs: 10_000,
  heartbeat: Object.freeze({ intervalMs: 25_000, timeoutMs: 10_000 }),
  maxQueuedMessages: 1000
})

/** A bad client option: thrown by the constructor, before any connection. */
export class InvalidOptionError extends TypeError {
  readonly code = 'FST_RELIABLE_WS_INVALID_OPTION'

  constructor (name: string, why: string) {
    super(`Invalid fastify-reliable-ws client option ${name}: ${why}`)
  }
}

function number (name: string, value: unknown, fallback: number, min: number, infinite = false): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || Number.isNaN(value) || value < min || (!infinite && value === Infinity)) {
    throw new InvalidOptionError(name, `must be a number >= ${min}${infinite ? ' (or Infinity)' : ''}, got ${String(value)}`)
  }
  return value
}

function count (name: string, value: unknown, fallback: number, min: number): number {
  const n = number(name, value, fallback, min, true)
  if (n !== Infinity && !Number.isInteger(n)) throw new InvalidOptionError(name, `must be an integer or Infinity, got ${n}`)
  return n
}

function object (name: string, value: unknown): Record<string, unknown> {
  if (value === undefined) return {}
  if (typeof value !== 'object' || value === null) throw new InvalidOptionError(name, 'must be an object')
  return value as Record<string, unknown>
}

function resolveBackoff (value: unknown): BackoffSettings {
  const o = object('backoff', value)
  const d = CLIENT_DEFAULTS.backoff
  const jitter = o.jitter ?? d.jitter
  if (jitter !== 'full' && jitter !== 'equal' && jitter !== 'none') {
    throw new InvalidOptionError('backoff.jitter', `must be 'full', 'equal' or 'none', got ${String(jitter)}`)
  }
  const random = o.random ?? Math.random
  if (typeof random !== 'function') throw new InvalidOptionError('backoff.random', 'must be a function returning [0, 1)')
  const initialDelayMs = number('backoff.initialDelayMs', o.initialDelayMs, d.initialDelayMs, 0)
  const maxDelayMs = number('backoff.maxDelayMs', o.maxDelayMs, Math.max(d.maxDelayMs, initialDelayMs), 0)
  if (maxDelayMs < initialDelayMs) throw new InvalidOptionError('backoff.maxDelayMs', `must not be below initialDelayMs (${maxDelayMs} < ${initialDelayMs})`)
  const slowDelayMs = number('backoff.slowDelayMs', o.slowDelayMs, Math.max(d.slowDelayMs, maxDelayMs), 0)
  if (slowDelayMs < maxDelayMs) throw new InvalidOptionError('backoff.slowDelayMs', `must not be below maxDelayMs (${slowDelayMs} < ${maxDelayMs})`)
  return {
    initialDelayMs,
    maxDelayMs,
    factor: number('backoff.factor', o.factor, d.factor, 1),
    jitter,
    maxRetries: count('backoff.maxRetries', o.maxRetries, d.maxRetries, 0),
    minUptimeMs: number('backoff.minUptimeMs', o.minUptimeMs, d.minUptimeMs, 0),
    slowAfter: count('backoff.slowAfter', o.slowAfter, d.slowAfter, 1),
    slowDelayMs,
    random: random as () => number
  }
}

function resolveHeartbeat (value: unknown): HeartbeatSettings | false {
  if (value === false) return false
  const o = object('heartbeat', value)
  const d = CLIENT_DEFAULTS.heartbeat
  return {
    intervalMs: number('heartbeat.intervalMs', o.intervalMs, d.intervalMs, 1),
    timeoutMs: number('heartbeat.timeoutMs', o.timeoutMs, d.timeoutMs, 1)
  }
}

export function resolveClientOptions (options: ReliableWebSocketOptions = {}): ClientSettings {
  const o = object('options', options) as ReliableWebSocketOptions
  const WebSocketClass = o.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket
  if (typeof WebSocketClass !== 'function') {
    throw new InvalidOptionError('WebSocket', 'there is no global WebSocket here: pass a class, such as the ws package\'s')
  }
  const protocols = o.protocols === undefined ? [] : typeof o.protocols === 'string' ? [o.protocols] : o.protocols
  if (!Array.isArray(protocols) || !protocols.every((p) => typeof p === 'string')) {
    throw new InvalidOptionError('protocols', 'must be a string or an array of strings')
  }
  if (o.subprotocol !== undefined && typeof o.subprotocol !== 'boolean') throw new InvalidOptionError('subprotocol', 'must be a boolean')
  if (o.shouldReconnect !== undefined && typeof o.shouldReconnect !== 'function') throw new InvalidOptionError('shouldReconnect', 'must be a function')
  const compression = o.compression
  if (compression !== undefined && typeof compression !== 'boolean' && (typeof compression !== 'object' || compression === null || Array.isArray(compression))) {
    throw new InvalidOptionError('compression', "must be a boolean or ws's perMessageDeflate options object")
  }
  const queue = object('queue', o.queue)
  const maxQueuedMessages = number('queue.maxMessages', queue.maxMessages, CLIENT_DEFAULTS.maxQueuedMessages, 0, true)
  return {
    protocols,
    WebSocket: WebSocketClass,
    subprotocol: o.subprotocol ?? CLIENT_DEFAULTS.subprotocol,
    backoff: resolveBackoff(o.backoff),
    connectTimeoutMs: number('connectTimeoutMs', o.connectTimeoutMs, CLIENT_DEFAULTS.connectTimeoutMs, 1),
    heartbeat: resolveHeartbeat(o.heartbeat),
    maxQueuedMessages,
    shouldReconnect: o.shouldReconnect ?? isRetryable,
    socketOptions: compression === undefined ? undefined : { perMessageDeflate: compression }
  }
}
