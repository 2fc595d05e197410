// The core: what every layer shares — the shapes of the socket, its route and the instance, as narrow interfaces.
import type { Socket } from 'node:net'
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type { ValidateFunction } from 'ajv'
import type WebSocket from 'ws'
import type fastifyReliableWs = require('../../types/index')
import type { BackpressureSettings, CompressionSettings, HeartbeatSettings, LimitSettings, PluginSettings, ResumeSettings } from './options'
import type {
  kPongState, kBytesReadAtOpen, kLatency, kBytesWrittenAtOpen, kCause, kNextPingAt, kOpenedAt, kOverHighWater, kPingAt,
  kRoute, kWheelPos, kWheelTick, kHeartbeatDueAt, kLastMessageAt, kTat, kRateNoticeAt, kIp, kLog, kFramed, kSendControl, kSession, kTransmit, kDeliver, kOnConnectPending,
  kCloseCodeSent, kMessageStartedAt, kPendingPongs, kPongSent, kTcp, kErrorListeners, kMidMessage, kCompressFrom, kTopics, kPlaces
} from './symbols'

type Cause = fastifyReliableWs.DisconnectInfo['cause']
type SendCallback = fastifyReliableWs.SendCallback
type RouteStats = fastifyReliableWs.RouteStats
type LimitStats = fastifyReliableWs.LimitStats
type SessionStats = fastifyReliableWs.SessionStats
type TopicStats = fastifyReliableWs.TopicStats
type BrokerStats = fastifyReliableWs.BrokerStats
type Awaitable<T> = fastifyReliableWs.Awaitable<T>

// Where a socket stands between a ping and its pong. Every frame from the peer resets it to ALIVE; the heartbeat
// (timing/heartbeat.ts) moves it on.
export const ALIVE = 0
export const AWAITING = 1
export const OVERDUE = 2
export type PongState = typeof ALIVE | typeof AWAITING | typeof OVERDUE

/** The server-side socket ws builds for every upgrade, as seen by the plugin (wiring/reliable-socket.ts builds it). */
export interface ReliableSocket extends WebSocket.WebSocket {
  id: string
  isAlive: boolean
  readonly latencyMs: number | null
  [kLatency]: number
  [kTcp]: Socket | null
  [kErrorListeners]: number
  [kMidMessage]: boolean
  [kCompressFrom]: number
  [kRoute]: Route | undefined
  [kCause]: Cause | undefined
  [kOpenedAt]: number
  [kBytesReadAtOpen]: number
  [kBytesWrittenAtOpen]: number
  [kPongState]: PongState
  [kPingAt]: number
  [kNextPingAt]: number
  [kWheelTick]: number
  [kWheelPos]: number
  [kOverHighWater]: boolean
  [kHeartbeatDueAt]: number
  [kLastMessageAt]: number
  [kTat]: number
  [kRateNoticeAt]: number
  [kIp]: string
  // The request's child logger (with its reqId), kept while connection lines are logged.
  [kLog]: FastifyBaseLogger | null
  [kFramed]: boolean
  [kSendControl]: (frame: string, cb?: SendCallback) => boolean
  [kPendingPongs]: number
  [kPongSent]: (() => void) | null
  [kSession]: SocketSession | null
  // Paused by the plugin itself while an async onConnect runs.
  [kOnConnectPending]: boolean
  // `frame`: the message's frame as built once for all of a topic's subscribers, written as is when the sender is idle.
  [kTransmit]: (data: unknown, binary: boolean, cb: SendCallback | undefined, frame?: Buffer[]) => void
  [kDeliver]: (data: unknown, binary: boolean) => void
  [kCloseCodeSent]: number
  [kMessageStartedAt]: number
  // Its topics when it subscribes without a session.
  [kTopics]: Set<string> | null
}

/** A published message as the broker hands it to an instance (topics/broker.ts). */
export interface Delivery {
  readonly topic: string
  /** The message's place in its topic: 1, 2, 3… with no gaps within one epoch. */
  readonly offset: number
  /** Changes when the topic's history was lost (a broker restarted or flushed): offsets then start again. */
  readonly epoch: string
  readonly data: Buffer | string
  readonly binary: boolean
}

/**
 * A session's place in one topic: the last message of it the session keeps (its epoch and offset). While the messages
 * after a handed-over place are read from the topic's history, the ones arriving live wait in `held`.
 */
export interface TopicPlace {
  epoch: string
  offset: number
  held: Delivery[] | null
}

/** A socket's session as the socket and the subprotocol use it (sessions/session.ts is one). */
export interface SocketSession extends fastifyReliableWs.Session {
  [kWheelTick]: number
  [kWheelPos]: number
  // The topics its sockets subscribed it to: they outlive each socket, not the session.
  [kTopics]: Set<string> | null
  // Where it stands in each of them; set with kTopics.
  [kPlaces]: Map<string, TopicPlace> | null
  send (data: unknown, options?: { binary?: boolean }, cb?: SendCallback): boolean
  /** A data message arrived from the client: DELIVER, DROP, or WAIT for the store (session.ts). */
  onMessage (): Verdict
  /** A message that is to WAIT, given to the session. */
  hold (data: unknown, binary: boolean): void
  /** A frame arrived from the client on its current connection. */
  heard (): void
  /** The client acknowledged `n` messages in all; false when it claims more than were sent. */
  acknowledge (n: number): boolean
  /** The pong frame that answers the client's ping, carrying what this session has received. */
  pong (): string
}

/** What becomes of a data message from the client: it reaches the application, is dropped, or waits for the store. */
export const DELIVER = 0
export const DROP = 1
export const WAIT = 2
export type Verdict = typeof DELIVER | typeof DROP | typeof WAIT

/** A TCP connection whose first request has not fully arrived yet (on a TLS server: the TCP connection under the TLS one). */
export interface PendingConnection extends Socket {
  [kWheelTick]: number
  [kWheelPos]: number
}

/** What a client asked to resume, read from its offered subprotocols. */
export interface ResumeRequest { session: string, secret: string, received: number }

/** The instance's wheel of due times (timing/scheduler.ts). */
export interface Schedule<T> {
  usePeriod (ms: number): void
  add (entry: T, dueAt: number): void
  /** When an entry meant for `dueAt` falls due: in a batch with others (see Scheduler.pace). */
  pace (now: number, dueAt: number): number
  remove (entry: T): void
  stop (): void
}

/**
 * One declared route's counters. Whatever a socket of the route does is
 * counted here, so the instance's totals (wsStats) and the per-route series
 * (metrics) are sums of the same numbers.
 */
export interface RouteCounters extends RouteStats {
  dropped: number
  invalid: number
  timeouts: number
  // Wire bytes of the route's sockets already closed; open ones are read live.
  closedBytesReceived: number
  closedBytesSent: number
  // Closes by cause, then by code. Peers choose codes, but ws accepts only valid ones: at most ~2,000 keys per cause.
  readonly closes: Partial<Record<Cause, Record<number, number>>>
}

/** What permessage-deflate did, both ways: bytes into zlib and out of it (messages/compression.ts counts them). */
export interface CompressionCounters {
  readonly sent: { messages: number, bytesIn: number, bytesOut: number }
  readonly received: { messages: number, bytesIn: number, bytesOut: number }
}

/** The instance's counters, as the layers bump them (observability/stats.ts keeps them and reads them out). */
export interface Counters {
  active: number
  peak: number
  rejected: number
  pingsSent: number
  pongsReceived: number
  backpressureEvents: number
  slowConsumersClosed: number
  errors: number
  draining: boolean
  readonly limits: LimitStats
  readonly sessions: SessionStats
  readonly compression: CompressionCounters
  // Published, delivered, dropped… as the topic hub counts them; its topics and subscriptions as it holds them.
  readonly topics: TopicStats
  // What the broker says of itself, read at snapshot time (topics/ sets it once the broker exists).
  broker: BrokerStats
  /** The counters of a declared route path; routes declared twice share them. */
  route (url: string): RouteCounters
  recordLatency (ms: number): void
  recordClose (socket: ReliableSocket, counters: RouteCounters, code: number, cause: Cause): void
}

/** Open connections by address (limits/connection-limiter.ts). */
export interface Connections {
  useLimits (route: Route): void
  opened (ip: string): void
  closed (socket: ReliableSocket): void
  countOf (ip: string): number
}

/** A route with sessions. */
export type SessionRoute = Route & { readonly resume: ResumeSettings }

/** A connection's session as `prepare` settled it in the store, for `open` or `abandon`. */
export interface PreparedSession {
  readonly record: fastifyReliableWs.SessionRecord
}

/**
 * A resume with the secret of a claim still waiting for its client (whose welcome may have been lost with its
 * connection): the client is to come back in `retryMs`, when that claim may have let go.
 */
export interface BusySession {
  readonly retryMs: number
  /** Not this session's doing: the store had maxPendingSessions to settle. */
  readonly throttled?: true
}

/** The instance's sessions, as connections begin and leave them (sessions/session-registry.ts). */
export interface Sessions {
  /** Settles in the store the session of a socket just accepted: begun, or resumed. Throws or rejects when the store fails. */
  prepare (route: SessionRoute, request: FastifyRequest, owner: string | null): Awaitable<PreparedSession | BusySession>
  /** Makes the prepared session the socket's, or refuses it by closing the socket. Synchronous. */
  open (socket: ReliableSocket, route: SessionRoute, prepared: PreparedSession): void
  /** The socket closed while its session was being prepared: what was settled is let go. */
  abandon (route: SessionRoute, prepared: PreparedSession): void
  detach (session: SocketSession, now: number): void
  /** Messages of a topic the session subscribes to were lost: it ends, and its connection with 4801. */
  topicLost (session: SocketSession): void
  /**
   * The instance is closing gracefully, before its sockets are told: with a store shared by the instances, each
   * session it can hand over is released with what another instance needs to go on with it. Settles within
   * `timeoutMs`, whatever the store does.
   */
  drain (timeoutMs: number): Awaitable<void>
}

/** The instance's subscriptions and publishes (topics/topic-hub.ts). */
export interface Topics {
  subscribe (socket: ReliableSocket, topic: string): boolean
  unsubscribe (socket: ReliableSocket, topic: string): boolean
  isSubscribed (socket: ReliableSocket, topic: string): boolean
  /** A socket with subscriptions of its own closed: they end with it. */
  socketClosed (socket: ReliableSocket): void
}

/** Warnings about peers, rate limited (observability/log-rate-limiter.ts). */
export interface PeerWarnings {
  warn (socket: ReliableSocket, route: Route, fields: Record<string, unknown>, message: string): void
}

/** What a route's sockets observe at event time, when metrics are on. */
export interface RouteObservers {
  readonly rtt: { observe (seconds: number): void }
  readonly duration: { observe (seconds: number): void }
}

/** The instance's Prometheus metrics (observability/metrics.ts). */
export interface Metrics {
  /** The observers of a declared route path, bound to its label once. */
  forRoute (url: string): RouteObservers
  /** Takes the metrics out of the registry, so that another instance may register them. */
  unregister (): void
}

/** A route's token bucket, in the form the message path uses (limits/rate-limiter.ts). */
export interface MessageRate {
  /** Milliseconds one message takes out of the bucket. */
  readonly emissionMs: number
  /** How far ahead of now the bucket may be spent: just under `burst` messages. */
  readonly toleranceMs: number
}

/** Everything one Fastify instance's reliable sockets share. */
export interface Context {
  readonly settings: PluginSettings
  readonly stats: Counters
  // Open sockets (heartbeat, idle timeout), connections still sending their request (handshake timeout)
  // and sessions waiting for their client to come back (ttlMs).
  readonly scheduler: Schedule<ReliableSocket | PendingConnection | SocketSession>
  readonly connections: Connections
  readonly sessions: Sessions
  readonly topics: Topics
  readonly log: FastifyBaseLogger
  readonly warnings: PeerWarnings
  // null unless the `metrics` option is on.
  readonly metrics: Metrics | null
}

/** A `websocket: true` route's resolved policy, shared by all of its sockets. */
export interface Route {
  readonly ctx: Context
  readonly url: string
  readonly heartbeat: HeartbeatSettings | false
  readonly backpressure: BackpressureSettings
  readonly json: boolean
  readonly validate: ValidateFunction | null
  readonly limits: LimitSettings
  readonly rate: MessageRate | null
  // A rate limit or an idle timeout: each message must pass admitMessage first.
  readonly gateMessages: boolean
  readonly counters: RouteCounters
  // Histograms to feed as pongs and closes happen; null unless metrics are on.
  readonly observers: RouteObservers | null
  readonly resume: ResumeSettings | false
  // What the route negotiates (null: it declines the extension), as built once by messages/compression.ts.
  readonly deflate: DeflateOffer | null
}

/** A route's permessage-deflate: its settings, and the same as ws's `perMessageDeflate` option. */
export interface DeflateOffer {
  readonly settings: CompressionSettings
  readonly options: object
  // The route's shared zlib streams, made on first use: compressors by window size (a client may ask for a smaller
  // one), and the inflater.
  readonly compressors: Map<number, SharedZlib>
  inflater: SharedZlib | null
}

/** zlib streams sockets take turns on, each message on its own (messages/zlib-pool.ts). */
export interface SharedZlib {
  /** Calls `callback` with the message compressed or inflated, or `fallback` if the shared stream cannot do it. */
  run (data: Buffer | string, limit: number, callback: (err: Error | null, data?: Buffer) => void, fallback: () => void): void
}
