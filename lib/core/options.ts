import type { FastifyRequest, RegisterOptions } from 'fastify'
import type { WebsocketPluginOptions } from '@fastify/websocket'
import type fastifyReliableWs = require('../../types/index')
import { FST_RELIABLE_WS_INVALID_OPTION } from './errors'

type SessionStore = fastifyReliableWs.SessionStore
type Options = fastifyReliableWs.FastifyReliableWsOptions
type RouteOptions = fastifyReliableWs.RouteReliableOptions
export type LogLevel = fastifyReliableWs.LogLevel

export interface HeartbeatSettings { intervalMs: number, timeoutMs: number }
export interface BackpressureSettings { highWaterMark: number, lowWaterMark: number, onLimit: 'drop' | 'close' }
export interface ResumeSettings {
  ttlMs: number
  maxBufferedMessages: number
  maxBufferedBytes: number
  // Who the request is, for a session to be resumed only by whoever began it; null: the secret alone.
  owner: ((request: FastifyRequest) => string | PromiseLike<string>) | null
  // Kept in the store as it goes (it survives a crash of its instance), the client's messages reserved a window ahead.
  durable: boolean
  receiveWindow: number
}
/** Bounds on all sessions of the instance together, whatever routes they belong to. */
export interface SessionLimitSettings { maxSessions: number, maxSessionsPerIp: number, sessionBufferBytes: number, maxPendingSessions: number }
export interface ShutdownSettings { closeCode: number, reason: string, timeoutMs: number, reconnectWindowMs: number }
/** Who may open a socket from a browser: origins as browsers send them, or the application's own test. */
export type OriginPolicy = ReadonlySet<string> | ((origin: string | undefined, request: FastifyRequest) => boolean)
/** The limits one route applies; a count or rate of Infinity means no limit, a timeout of Infinity none. */
export interface LimitSettings {
  maxConnections: number
  maxConnectionsPerIp: number
  maxPayload: number
  messagesPerSecond: number
  // null: follow messagesPerSecond (one second's worth).
  burst: number | null
  onRateLimit: 'close' | 'drop'
  idleTimeoutMs: number
  fragmentTimeoutMs: number
}

/** permessage-deflate as a route applies it; see messages/compression.ts for how it reaches ws. */
export interface CompressionSettings {
  threshold: number
  level: number
  memLevel: number
  serverMaxWindowBits: number
  clientMaxWindowBits: number
  serverNoContextTakeover: boolean
  clientNoContextTakeover: boolean
  // Process-wide in ws: the plugin's value, whatever the route.
  concurrencyLimit: number
}

export interface MetricsSettings {
  // null: prom-client's default registry, known only once prom-client is loaded.
  registry: fastifyReliableWs.MetricsRegistry | null
  prefix: string
}
/** Publish/subscribe (lib/topics/): what one socket may hold, and how a broker keeps each topic's history. */
export interface TopicSettings {
  maxSubscriptions: number
  maxTopicLength: number
  // Distinct topics the instance holds subscribers of, and messages one topic's fan-out may have waiting.
  maxTopics: number
  maxQueuedMessages: number
  // For a broker that keeps history (Redis): messages kept per topic, and how long a topic nobody publishes to keeps them.
  historySize: number
  historyTtlMs: number
  // The health route answers 503 while the broker is not up.
  healthChecksBroker: boolean
  // The Redis broker's: what starts its keys, how long a publish may wait, how often its subscription is checked.
  keyPrefix: string
  publishTimeoutMs: number
  probeIntervalMs: number
}
export interface LoggingSettings { connections: LogLevel | false, warningsPerSecond: number }

export interface PluginSettings {
  heartbeat: HeartbeatSettings | false
  backpressure: BackpressureSettings
  shutdown: ShutdownSettings
  healthPath: string | null
  websocket: WebsocketPluginOptions
  onConnect: Options['onConnect'] | null
  onDisconnect: Options['onDisconnect'] | null
  allowedOrigins: OriginPolicy | null
  limits: LimitSettings
  // Server-wide: no route is known before a request has arrived.
  handshakeTimeoutMs: number
  sessionLimits: SessionLimitSettings
  metrics: MetricsSettings | null
  logging: LoggingSettings
  resume: ResumeSettings | false
  // Its records are the sessions layer's business (sessions/session-store.ts).
  /** The application's store; null: the plugin's (in Redis with `sessionsInRedis`, else in this process's memory). */
  sessionStore: SessionStore | null
  /** No `sessionStore`, and the `redis` option: sessions are kept in Redis, on a connection of the plugin's own. */
  sessionsInRedis: boolean
  compression: CompressionSettings | false
  topics: TopicSettings
  // The Redis broker's connection as the application gives it (redis/redis-connection.ts); null: the in-process broker.
  redis: fastifyReliableWs.RedisOption | null
}

export interface RouteSettings {
  heartbeat: HeartbeatSettings | false
  backpressure: BackpressureSettings
  json: boolean
  messageSchema: object | null
  allowedOrigins: OriginPolicy | null
  limits: LimitSettings
  resume: ResumeSettings | false
  compression: CompressionSettings | false
}

/** Every default in one place; the README's option tables mirror this object. */
export const DEFAULTS = Object.freeze({
  // timeoutMs: Infinity means "follow intervalMs" when merged (see mergeHeartbeat).
  heartbeat: Object.freeze({ intervalMs: 30_000, timeoutMs: Infinity }),
  backpressure: Object.freeze({ highWaterMark: 1_048_576, lowWaterMark: 262_144, onLimit: 'drop' as const }),
  shutdown: Object.freeze({ closeCode: 1001, reason: 'Server shutting down', timeoutMs: 5_000, reconnectWindowMs: 5_000 }),
  healthPath: '/health/ws',
  limits: Object.freeze({
    maxConnections: Infinity,
    maxConnectionsPerIp: Infinity,
    maxPayload: 1_048_576,
    // Off, as in ws and Socket.IO: a rate that suits one app closes another's legitimate clients.
    messagesPerSecond: Infinity,
    burst: null,
    onRateLimit: 'close' as const,
    idleTimeoutMs: Infinity,
    // Long enough for a maxPayload message at ~100 KiB/s; short enough that a peer pinning a half-sent message
    // (up to maxPayload of memory) must keep sending to keep it.
    fragmentTimeoutMs: 10_000
  }),
  handshakeTimeoutMs: 10_000,
  // Sessions outlive their sockets, so connection limits do not bound them: these do, whatever clients send.
  sessionLimits: Object.freeze({ maxSessions: 10_000, maxSessionsPerIp: 100, sessionBufferBytes: 64 * 1_048_576, maxPendingSessions: 512 }),
  // Topic names usually come from clients: what one connection can make the server hold is maxSubscriptions names
  // of maxTopicLength bytes (docs/security.md). historySize and historyTtlMs bound a history-keeping broker's streams.
  topics: Object.freeze({
    maxSubscriptions: 100,
    maxTopicLength: 200,
    maxTopics: 100_000,
    maxQueuedMessages: 10_000,
    historySize: 1000,
    historyTtlMs: 600_000,
    healthChecksBroker: true,
    keyPrefix: 'reliable-ws',
    publishTimeoutMs: 2000,
    probeIntervalMs: 5000
  }),
  metrics: Object.freeze({ prefix: 'ws_' }),
  // Connection lines at info, like Fastify's own request lines.
  logging: Object.freeze({ connections: 'info' as const, warningsPerSecond: 10 }),
  // What `resume: true` means; sessions are off unless asked for.
  resume: Object.freeze({ ttlMs: 120_000, maxBufferedMessages: 1000, maxBufferedBytes: 1_048_576, owner: null, durable: false, receiveWindow: 64 }),
  // What `compression: true` means. Without context takeover each message is compressed on its own, so the sockets
  // of a route share a few zlib streams and hold none themselves (ws keeps ~110 KB of them per active socket),
  // which leaves room for zlib's own defaults. bench/notes.md has the measurements; docs/compression.md when to use it.
  compression: Object.freeze({
    threshold: 1024,
    level: 6,
    memLevel: 8,
    serverMaxWindowBits: 15,
    clientMaxWindowBits: 15,
    serverNoContextTakeover: true,
    clientNoContextTakeover: true,
    concurrencyLimit: 10
  })
})

// Every key as a record, so that the compiler checks each list against its interface both ways.
function keysOf<T> (keys: Record<keyof T, true>): Set<string> {
  return new Set(Object.keys(keys))
}

// prefix, logLevel and logSerializers are consumed by fastify's register() itself.
const PLUGIN_KEYS = keysOf<Options & RegisterOptions>({
  heartbeat: true,
  backpressure: true,
  shutdown: true,
  health: true,
  websocket: true,
  onConnect: true,
  onDisconnect: true,
  allowedOrigins: true,
  limits: true,
  metrics: true,
  logging: true,
  resume: true,
  sessionStore: true,
  compression: true,
  topics: true,
  redis: true,
  prefix: true,
  logLevel: true,
  logSerializers: true
})
const ROUTE_KEYS = keysOf<RouteOptions>({ json: true, messageSchema: true, heartbeat: true, backpressure: true, allowedOrigins: true, limits: true, resume: true, compression: true })
const ROUTE_LIMIT_KEYS = keysOf<fastifyReliableWs.LimitOptions>({
  maxConnections: true,
  maxConnectionsPerIp: true,
  maxPayload: true,
  messagesPerSecond: true,
  burst: true,
  onRateLimit: true,
  idleTimeoutMs: true,
  fragmentTimeoutMs: true
})
const SESSION_LIMIT_KEYS = ['maxSessions', 'maxSessionsPerIp', 'sessionBufferBytes', 'maxPendingSessions'] as const satisfies ReadonlyArray<keyof SessionLimitSettings>
const PLUGIN_LIMIT_KEYS = new Set([...ROUTE_LIMIT_KEYS, ...keysOf<Omit<fastifyReliableWs.PluginLimitOptions, keyof fastifyReliableWs.LimitOptions>>({
  handshakeTimeoutMs: true,
  maxSessions: true,
  maxSessionsPerIp: true,
  sessionBufferBytes: true,
  maxPendingSessions: true,
  maxSubscriptions: true
})])
const HEARTBEAT_KEYS = keysOf<fastifyReliableWs.HeartbeatOptions>({ intervalMs: true, timeoutMs: true })
const BACKPRESSURE_KEYS = keysOf<fastifyReliableWs.BackpressureOptions>({ highWaterMark: true, lowWaterMark: true, onLimit: true })
const SHUTDOWN_KEYS = keysOf<fastifyReliableWs.ShutdownOptions>({ closeCode: true, reason: true, timeoutMs: true, reconnectWindowMs: true })
const HEALTH_KEYS = keysOf<fastifyReliableWs.HealthOptions>({ path: true })
const METRICS_KEYS = keysOf<fastifyReliableWs.MetricsOptions>({ registry: true, prefix: true })
const LOGGING_KEYS = keysOf<fastifyReliableWs.LoggingOptions>({ connections: true, warningsPerSecond: true })
const LOG_LEVELS = keysOf<Record<LogLevel, unknown>>({ fatal: true, error: true, warn: true, info: true, debug: true, trace: true })
const REGISTRY_METHODS = [...keysOf<fastifyReliableWs.MetricsRegistry>({ registerMetric: true, getSingleMetric: true, removeSingleMetric: true })]
const SESSION_STORE_METHODS = [...keysOf<Omit<SessionStore, 'listen' | 'ask' | 'post' | 'take' | 'keep'>>({ create: true, claim: true, write: true, release: true, end: true, read: true })]
// What Prometheus accepts at the start of a metric name.
const METRIC_PREFIX = /^([a-zA-Z_:][a-zA-Z0-9_:]*)?$/
const COMPRESSION_KEYS = keysOf<fastifyReliableWs.CompressionOptions>({
  threshold: true,
  level: true,
  memLevel: true,
  serverMaxWindowBits: true,
  clientMaxWindowBits: true,
  serverNoContextTakeover: true,
  clientNoContextTakeover: true,
  concurrencyLimit: true
})
const TOPIC_KEYS = keysOf<fastifyReliableWs.TopicOptions>({
  maxTopicLength: true,
  maxTopics: true,
  maxQueuedMessages: true,
  historySize: true,
  historyTtlMs: true,
  healthChecksBroker: true,
  keyPrefix: true,
  publishTimeoutMs: true,
  probeIntervalMs: true
})
const RESUME_KEYS = keysOf<fastifyReliableWs.ResumeOptions>({ ttlMs: true, maxBufferedMessages: true, maxBufferedBytes: true, owner: true, durable: true, receiveWindow: true })

function invalid (name: string, why: string): Error {
  return new FST_RELIABLE_WS_INVALID_OPTION(name, why)
}

function isPlainObject (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function checkObject (name: string, value: unknown, keys: Set<string>): Record<string, unknown> {
  if (!isPlainObject(value)) throw invalid(name, 'must be an object')
  for (const key of Object.keys(value)) {
    if (!keys.has(key)) throw invalid(`${name}.${key}`, `unknown option (expected one of: ${[...keys].join(', ')})`)
  }
  return value
}

function checkNumber (name: string, value: unknown, min: number, minIncluded: boolean): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || (!minIncluded && value === min)) {
    throw invalid(name, `must be a finite number ${minIncluded ? '>=' : '>'} ${min}, got ${describe(value)}`)
  }
  return value
}

function checkFunction (name: string, value: unknown): any {
  if (value === undefined) return null
  if (typeof value !== 'function') throw invalid(name, `must be a function, got ${describe(value)}`)
  return value
}

function describe (value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value)
}

// The codes RFC 6455 lets an endpoint put in a close frame (ws rejects the rest).
export function isValidCloseCode (code: number): boolean {
  return Number.isInteger(code) &&
    ((code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999))
}

function mergeHeartbeat (name: string, base: HeartbeatSettings, value: unknown): HeartbeatSettings {
  const o = checkObject(name, value, HEARTBEAT_KEYS)
  const intervalMs = o.intervalMs === undefined ? base.intervalMs : checkNumber(`${name}.intervalMs`, o.intervalMs, 1, true)
  // A timeout left out keeps the base's, but never beyond this interval.
  const timeoutMs = o.timeoutMs === undefined ? Math.min(base.timeoutMs, intervalMs) : checkNumber(`${name}.timeoutMs`, o.timeoutMs, 1, true)
  if (timeoutMs > intervalMs) throw invalid(`${name}.timeoutMs`, `must not exceed intervalMs (${timeoutMs} > ${intervalMs})`)
  return { intervalMs, timeoutMs }
}

function resolveHeartbeat (name: string, base: HeartbeatSettings | false, value: unknown): HeartbeatSettings | false {
  if (value === undefined) return base
  if (value === false) return false
  return mergeHeartbeat(name, base === false ? DEFAULTS.heartbeat : base, value)
}

function mergeBackpressure (name: string, base: BackpressureSettings, value: unknown): BackpressureSettings {
  if (value === undefined) return base
  const o = checkObject(name, value, BACKPRESSURE_KEYS)
  const highWaterMark = o.highWaterMark === undefined ? base.highWaterMark : checkNumber(`${name}.highWaterMark`, o.highWaterMark, 0, false)
  const lowWaterMark = o.lowWaterMark === undefined ? base.lowWaterMark : checkNumber(`${name}.lowWaterMark`, o.lowWaterMark, 0, true)
  const onLimit = o.onLimit === undefined ? base.onLimit : o.onLimit
  if (onLimit !== 'drop' && onLimit !== 'close') throw invalid(`${name}.onLimit`, `must be 'drop' or 'close', got ${describe(onLimit)}`)
  if (lowWaterMark >= highWaterMark) {
    throw invalid(`${name}.lowWaterMark`, `must be below highWaterMark (${lowWaterMark} >= ${highWaterMark})`)
  }
  return { highWaterMark, lowWaterMark, onLimit }
}

// A limit is a positive number (an integer for counts), or Infinity for none.
function checkLimit (name: string, value: unknown, integer: boolean): number {
  if (value === Infinity) return value
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0 || (integer && !Number.isInteger(value))) {
    throw invalid(name, `must be a positive ${integer ? 'integer' : 'number'} or Infinity (no limit), got ${describe(value)}`)
  }
  return value
}

// ws reads maxPayload as a 32-bit integer (`| 0`): 4 GiB would silently become 0, "no limit".
const MAX_PAYLOAD_CEILING = 2 ** 31 - 1

function checkInteger (name: string, value: unknown, min: number, max: number, unit = ''): number {
  if (!Number.isInteger(value) || (value as number) < min || (value as number) > max) {
    throw invalid(name, `must be an integer from ${min} to ${max}${unit}, got ${describe(value)}`)
  }
  return value as number
}

function checkPayload (name: string, value: unknown): number {
  return checkInteger(name, value, 1, MAX_PAYLOAD_CEILING, ' bytes')
}

function resolveOrigins (name: string, base: OriginPolicy | null, value: unknown): OriginPolicy | null {
  if (value === undefined) return base
  if (typeof value === 'function') return value as OriginPolicy
  if (!Array.isArray(value)) throw invalid(name, 'must be an array of origins or a function (origin, request) => boolean')
  for (const origin of value) {
    // What a browser sends: scheme, host and port, lowercase, nothing after; a trailing slash would never match.
    if (typeof origin !== 'string' || origin === 'null' || !URL.canParse(origin) || new URL(origin).origin !== origin) {
      throw invalid(name, `${describe(origin)} is not an origin such as "https://example.com" or "http://localhost:3000"`)
    }
  }
  return new Set(value as string[])
}

function mergeLimits (name: string, base: LimitSettings, o: Record<string, unknown>, maxPayloadCeiling: number): LimitSettings {
  const onRateLimit = o.onRateLimit === undefined ? base.onRateLimit : o.onRateLimit
  if (onRateLimit !== 'drop' && onRateLimit !== 'close') throw invalid(`${name}.onRateLimit`, `must be 'drop' or 'close', got ${describe(onRateLimit)}`)
  const maxPayload = o.maxPayload === undefined ? base.maxPayload : checkPayload(`${name}.maxPayload`, o.maxPayload)
  if (maxPayload > maxPayloadCeiling) {
    throw invalid(`${name}.maxPayload`, `a route may lower the plugin's maxPayload, not raise it (${maxPayload} > ${maxPayloadCeiling})`)
  }
  const limit = (key: keyof LimitSettings, integer: boolean): number =>
    o[key] === undefined ? base[key] as number : checkLimit(`${name}.${key}`, o[key], integer)
  return {
    maxConnections: limit('maxConnections', true),
    maxConnectionsPerIp: limit('maxConnectionsPerIp', true),
    maxPayload,
    messagesPerSecond: limit('messagesPerSecond', false),
    burst: o.burst === undefined ? base.burst : checkLimit(`${name}.burst`, o.burst, true),
    onRateLimit,
    idleTimeoutMs: limit('idleTimeoutMs', false),
    fragmentTimeoutMs: limit('fragmentTimeoutMs', false)
  }
}

function resolveResume (name: string, base: ResumeSettings | false, value: unknown): ResumeSettings | false {
  if (value === undefined) return base
  if (value === false) return false
  const start = base === false ? DEFAULTS.resume : base
  if (value === true) return start
  const o = checkObject(name, value, RESUME_KEYS)
  return {
    ttlMs: o.ttlMs === undefined ? start.ttlMs : checkNumber(`${name}.ttlMs`, o.ttlMs, 1, true),
    maxBufferedMessages: o.maxBufferedMessages === undefined ? start.maxBufferedMessages : checkLimit(`${name}.maxBufferedMessages`, o.maxBufferedMessages, true),
    maxBufferedBytes: o.maxBufferedBytes === undefined ? start.maxBufferedBytes : checkLimit(`${name}.maxBufferedBytes`, o.maxBufferedBytes, true),
    owner: o.owner === undefined ? start.owner : checkFunction(`${name}.owner`, o.owner),
    durable: o.durable === undefined ? start.durable : checkBoolean(`${name}.durable`, o.durable),
    receiveWindow: o.receiveWindow === undefined ? start.receiveWindow : checkInteger(`${name}.receiveWindow`, o.receiveWindow, 1, 65_536)
  }
}

function checkBoolean (name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw invalid(name, `must be a boolean, got ${describe(value)}`)
  return value
}

/** A route's `compression` over its base (the plugin's), or the plugin's over the preset; `true` keeps the base. */
function resolveCompression (name: string, base: CompressionSettings | false, value: unknown, isRoute: boolean): CompressionSettings | false {
  if (value === undefined) return base
  if (value === false) return false
  const start = base === false ? DEFAULTS.compression : base
  if (value === true) return start
  const o = checkObject(name, value, COMPRESSION_KEYS)
  if (isRoute && o.concurrencyLimit !== undefined) {
    throw invalid(`${name}.concurrencyLimit`, "ws's zlib limit is shared by the whole process: set it in the plugin's compression")
  }
  const field = <K extends keyof CompressionSettings>(key: K, check: (name: string, value: unknown) => CompressionSettings[K]): CompressionSettings[K] =>
    o[key] === undefined ? start[key] : check(`${name}.${key}`, o[key])
  // zlib's own ranges; a raw deflate stream's window is at least 2^9 (zlib turns 8 into 9).
  const windowBits = (key: string, v: unknown): number => checkInteger(key, v, 9, 15)
  return {
    threshold: field('threshold', (key, v) => checkInteger(key, v, 0, MAX_PAYLOAD_CEILING)),
    level: field('level', (key, v) => checkInteger(key, v, 0, 9)),
    memLevel: field('memLevel', (key, v) => checkInteger(key, v, 1, 9)),
    serverMaxWindowBits: field('serverMaxWindowBits', windowBits),
    clientMaxWindowBits: field('clientMaxWindowBits', windowBits),
    serverNoContextTakeover: field('serverNoContextTakeover', checkBoolean),
    clientNoContextTakeover: field('clientNoContextTakeover', checkBoolean),
    concurrencyLimit: field('concurrencyLimit', (key, v) => checkInteger(key, v, 1, 1024))
  }
}

function resolveTopics (value: unknown, maxSubscriptions: unknown): TopicSettings {
  const o = value === undefined ? {} : checkObject('topics', value, TOPIC_KEYS)
  const base = DEFAULTS.topics
  const field = <K extends keyof TopicSettings>(key: K, check: (name: string, value: unknown) => TopicSettings[K]): TopicSettings[K] =>
    o[key] === undefined ? base[key] : check(`topics.${key}`, o[key])
  return {
    // Finite: each subscription is memory a client chooses.
    maxSubscriptions: maxSubscriptions === undefined ? base.maxSubscriptions : checkInteger('limits.maxSubscriptions', maxSubscriptions, 1, 100_000),
    maxTopicLength: field('maxTopicLength', (key, v) => checkInteger(key, v, 1, 4096, ' bytes')),
    // Finite, both: clients choose topic names, and a fan-out that cannot keep up must not hold memory without end.
    maxTopics: field('maxTopics', (key, v) => checkInteger(key, v, 1, 10_000_000, ' topics')),
    maxQueuedMessages: field('maxQueuedMessages', (key, v) => checkInteger(key, v, 1, 10_000_000, ' messages')),
    historySize: field('historySize', (key, v) => checkInteger(key, v, 1, 10_000_000, ' messages')),
    historyTtlMs: field('historyTtlMs', (key, v) => checkInteger(key, v, 1000, 30 * 86_400_000, ' ms')),
    healthChecksBroker: field('healthChecksBroker', checkBoolean),
    keyPrefix: field('keyPrefix', checkKeyPrefix),
    publishTimeoutMs: field('publishTimeoutMs', (key, v) => checkInteger(key, v, 1, 60_000, ' ms')),
    probeIntervalMs: field('probeIntervalMs', (key, v) => checkInteger(key, v, 10, 600_000, ' ms'))
  }
}

// Braces would change the hash tag that keeps a topic's (or a session's) keys on one Cluster slot.
export function checkKeyPrefix (name: string, value: unknown): string {
  if (typeof value !== 'string' || !/^[^{}\s]{1,100}$/.test(value)) throw invalid(name, 'must be 1 to 100 characters without braces or spaces')
  return value
}

// Checked here for its form only: the broker's connection says whether Redis is there.
function resolveRedis (value: unknown): fastifyReliableWs.RedisOption | null {
  if (value === undefined) return null
  if (typeof value === 'string') {
    if (!/^rediss?:\/\//.test(value)) throw invalid('redis', 'a URL must begin with redis:// or rediss://')
    return value
  }
  if (typeof value !== 'object' || value === null) throw invalid('redis', 'must be an ioredis client, ioredis options or a redis:// URL')
  return value as fastifyReliableWs.RedisOption
}

function resolveSessionStore (value: unknown): SessionStore | null {
  // null: in this process's memory, whatever the `redis` option.
  if (value === undefined || value === null) return null
  for (const method of SESSION_STORE_METHODS) {
    if (typeof (value as Record<string, unknown> | null)?.[method] !== 'function') {
      throw invalid('sessionStore', `must be an object with ${SESSION_STORE_METHODS.join(', ')} methods (${method} is missing)`)
    }
  }
  // One without the other would ask instances that never hear, or listen to asks never made; post messages nobody
  // takes, or take what was never posted.
  const store = value as SessionStore
  for (const [one, other] of [['listen', 'ask'], ['post', 'take']] as const) {
    if ((typeof store[one] === 'function') !== (typeof store[other] === 'function')) {
      throw invalid('sessionStore', `must have both ${one} and ${other} methods, or neither`)
    }
  }
  return store
}

// A durable session is kept where another instance finds it once its own died: in a store shared by instances, that
// keeps (Redis, when the `redis` option keeps sessions there).
function checkDurable (name: string, resume: ResumeSettings | false, store: SessionStore | null, inRedis: boolean): ResumeSettings | false {
  if (resume !== false && resume.durable && !inRedis && typeof store?.keep !== 'function') {
    throw invalid(`${name}.durable`, 'needs a sessionStore shared by the instances, with a keep method (RedisSessionStore has one), or the redis option')
  }
  return resume
}

function resolveShutdown (value: unknown): ShutdownSettings {
  if (value === undefined) return DEFAULTS.shutdown
  const o = checkObject('shutdown', value, SHUTDOWN_KEYS)
  const closeCode = o.closeCode === undefined ? DEFAULTS.shutdown.closeCode : o.closeCode
  if (typeof closeCode !== 'number' || !isValidCloseCode(closeCode)) {
    throw invalid('shutdown.closeCode', `must be a close code a server may send (1000-1003, 1007-1014, 3000-4999), got ${describe(closeCode)}`)
  }
  const reason = o.reason === undefined ? DEFAULTS.shutdown.reason : o.reason
  if (typeof reason !== 'string' || Buffer.byteLength(reason) > 123) {
    throw invalid('shutdown.reason', 'must be a string of at most 123 bytes')
  }
  const timeoutMs = o.timeoutMs === undefined ? DEFAULTS.shutdown.timeoutMs : checkNumber('shutdown.timeoutMs', o.timeoutMs, 0, true)
  const reconnectWindowMs = o.reconnectWindowMs === undefined
    ? DEFAULTS.shutdown.reconnectWindowMs
    : checkNumber('shutdown.reconnectWindowMs', o.reconnectWindowMs, 0, true)
  return { closeCode, reason, timeoutMs, reconnectWindowMs }
}

function resolveHealthPath (value: unknown): string | null {
  if (value === undefined || value === false) return null
  if (value === true) return DEFAULTS.healthPath
  const o = checkObject('health', value, HEALTH_KEYS)
  const path = o.path === undefined ? DEFAULTS.healthPath : o.path
  if (typeof path !== 'string' || !path.startsWith('/')) throw invalid('health.path', `must be a string starting with "/", got ${describe(path)}`)
  return path
}

function resolveMetrics (value: unknown): MetricsSettings | null {
  if (value === undefined || value === false) return null
  const o = value === true ? {} : checkObject('metrics', value, METRICS_KEYS)
  const registry = o.registry ?? null
  if (registry !== null && !(isPlainObject(registry) && REGISTRY_METHODS.every((method) => typeof registry[method] === 'function'))) {
    throw invalid('metrics.registry', "must be a prom-client Registry (such as prom-client's `register`)")
  }
  const prefix = o.prefix === undefined ? DEFAULTS.metrics.prefix : o.prefix
  if (typeof prefix !== 'string' || !METRIC_PREFIX.test(prefix)) {
    throw invalid('metrics.prefix', `must be the start of a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*), got ${describe(prefix)}`)
  }
  return { registry: registry as MetricsSettings['registry'], prefix }
}

function resolveLogging (value: unknown): LoggingSettings {
  const o = value === undefined ? {} : checkObject('logging', value, LOGGING_KEYS)
  const connections = o.connections === undefined ? DEFAULTS.logging.connections : o.connections
  if (connections !== false && !LOG_LEVELS.has(connections as string)) {
    throw invalid('logging.connections', `must be a log level (${[...LOG_LEVELS].join(', ')}) or false, got ${describe(connections)}`)
  }
  const warningsPerSecond = o.warningsPerSecond === undefined ? DEFAULTS.logging.warningsPerSecond : o.warningsPerSecond
  if (!Number.isInteger(warningsPerSecond) || (warningsPerSecond as number) < 0) {
    throw invalid('logging.warningsPerSecond', `must be an integer >= 0 (0: none), got ${describe(warningsPerSecond)}`)
  }
  return { connections: connections as LogLevel | false, warningsPerSecond: warningsPerSecond as number }
}

function resolveWebsocket (value: unknown, shutdown: ShutdownSettings, maxPayload: number): WebsocketPluginOptions {
  const o = value === undefined ? {} : value
  if (!isPlainObject(o)) throw invalid('websocket', 'must be an object')
  if (o.preClose !== undefined) {
    throw invalid('websocket.preClose', 'the plugin closes every client itself on app.close(); configure it with the `shutdown` option')
  }
  // As for @fastify/websocket, null or false means none.
  const errorHandler = o.errorHandler === null || o.errorHandler === false ? undefined : checkFunction('websocket.errorHandler', o.errorHandler) ?? undefined
  const ws = o.options === undefined ? {} : o.options
  if (!isPlainObject(ws)) throw invalid('websocket.options', 'must be an object')
  if (ws.perMessageDeflate !== undefined) {
    throw invalid('websocket.options.perMessageDeflate', 'use the `compression` option: it bounds memory and applies per route')
  }
  if (ws.clientTracking === false) {
    throw invalid('websocket.options.clientTracking', 'must not be false: shutdown and wsStats need to reach every client')
  }
  return {
    ...o,
    errorHandler,
    options: {
      // ws's own close timer then bounds every closing handshake the plugin starts.
      closeTimeout: shutdown.timeoutMs,
      ...ws,
      // ws enforces the plugin's limit for every socket; a route's lower one is set on its sockets.
      maxPayload,
      // Chosen for each upgrade from its route's `compression` (messages/compression.ts).
      perMessageDeflate: false
    } as WebsocketPluginOptions['options']
  }
}

/** The plugin's limits; `websocket.options.maxPayload`, the older spelling, still sets maxPayload. */
function resolvePluginLimits (value: unknown, websocket: unknown): { limits: LimitSettings, handshakeTimeoutMs: number, sessionLimits: SessionLimitSettings } {
  const o = value === undefined ? {} : checkObject('limits', value, PLUGIN_LIMIT_KEYS)
  const wsMaxPayload = isPlainObject(websocket) && isPlainObject(websocket.options) ? websocket.options.maxPayload : undefined
  let base: LimitSettings = DEFAULTS.limits
  if (wsMaxPayload !== undefined) {
    if (o.maxPayload !== undefined) throw invalid('websocket.options.maxPayload', 'set the limit once, as limits.maxPayload')
    base = { ...base, maxPayload: checkPayload('websocket.options.maxPayload', wsMaxPayload) }
  }
  const sessionLimit = (key: typeof SESSION_LIMIT_KEYS[number]): number =>
    o[key] === undefined ? DEFAULTS.sessionLimits[key] : checkLimit(`limits.${key}`, o[key], true)
  return {
    limits: mergeLimits('limits', base, o, Infinity),
    handshakeTimeoutMs: o.handshakeTimeoutMs === undefined ? DEFAULTS.handshakeTimeoutMs : checkLimit('limits.handshakeTimeoutMs', o.handshakeTimeoutMs, false),
    sessionLimits: { maxSessions: sessionLimit('maxSessions'), maxSessionsPerIp: sessionLimit('maxSessionsPerIp'), sessionBufferBytes: sessionLimit('sessionBufferBytes'), maxPendingSessions: sessionLimit('maxPendingSessions') }
  }
}

/** Validates the plugin's options once, at registration, and fills in every default. */
export function resolvePluginSettings (options: Options): PluginSettings {
  const o = checkObject('options', options, PLUGIN_KEYS) as Options
  const shutdown = resolveShutdown(o.shutdown)
  const { limits, handshakeTimeoutMs, sessionLimits } = resolvePluginLimits(o.limits, o.websocket)
  const sessionStore = resolveSessionStore(o.sessionStore)
  const redis = resolveRedis(o.redis)
  const sessionsInRedis = o.sessionStore === undefined && redis !== null
  return {
    heartbeat: resolveHeartbeat('heartbeat', DEFAULTS.heartbeat, o.heartbeat === undefined ? {} : o.heartbeat),
    backpressure: mergeBackpressure('backpressure', DEFAULTS.backpressure, o.backpressure),
    shutdown,
    healthPath: resolveHealthPath(o.health),
    websocket: resolveWebsocket(o.websocket, shutdown, limits.maxPayload),
    onConnect: checkFunction('onConnect', o.onConnect),
    onDisconnect: checkFunction('onDisconnect', o.onDisconnect),
    allowedOrigins: resolveOrigins('allowedOrigins', null, o.allowedOrigins),
    limits,
    handshakeTimeoutMs,
    sessionLimits,
    metrics: resolveMetrics(o.metrics),
    logging: resolveLogging(o.logging),
    resume: checkDurable('resume', resolveResume('resume', false, o.resume), sessionStore, sessionsInRedis),
    sessionStore,
    sessionsInRedis,
    compression: resolveCompression('compression', false, o.compression, false),
    topics: resolveTopics(o.topics, isPlainObject(o.limits) ? o.limits.maxSubscriptions : undefined),
    redis
  }
}

function resolveRouteLimits (name: string, plugin: LimitSettings, value: unknown): LimitSettings {
  if (value === undefined) return plugin
  if (isPlainObject(value) && value.handshakeTimeoutMs !== undefined) {
    throw invalid(`${name}.handshakeTimeoutMs`, "it applies before any route is known: set it in the plugin's limits")
  }
  for (const key of SESSION_LIMIT_KEYS) {
    if (isPlainObject(value) && value[key] !== undefined) throw invalid(`${name}.${key}`, "it bounds the sessions of every route together: set it in the plugin's limits")
  }
  return mergeLimits(name, plugin, checkObject(name, value, ROUTE_LIMIT_KEYS), plugin.maxPayload)
}

/** Merges a route's `config.reliable` over the plugin's settings, field by field. */
export function resolveRouteSettings (plugin: PluginSettings, value: RouteOptions | undefined, url: string): RouteSettings {
  const name = `config.reliable of ${url}`
  const o = checkObject(name, value ?? {}, ROUTE_KEYS)
  if (o.json !== undefined && typeof o.json !== 'boolean') throw invalid(`${name}.json`, `must be a boolean, got ${describe(o.json)}`)
  if (o.messageSchema !== undefined && !isPlainObject(o.messageSchema)) throw invalid(`${name}.messageSchema`, 'must be a JSON Schema object')
  return {
    heartbeat: resolveHeartbeat(`${name}.heartbeat`, plugin.heartbeat, o.heartbeat),
    backpressure: mergeBackpressure(`${name}.backpressure`, plugin.backpressure, o.backpressure),
    json: o.json === true || o.messageSchema !== undefined,
    messageSchema: (o.messageSchema as object | undefined) ?? null,
    allowedOrigins: resolveOrigins(`${name}.allowedOrigins`, plugin.allowedOrigins, o.allowedOrigins),
    limits: resolveRouteLimits(`${name}.limits`, plugin.limits, o.limits),
    resume: checkDurable(`${name}.resume`, resolveResume(`${name}.resume`, plugin.resume, o.resume), plugin.sessionStore, plugin.sessionsInRedis),
    compression: resolveCompression(`${name}.compression`, plugin.compression, o.compression, true)
  }
}
