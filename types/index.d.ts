/// <reference path="./ws-esm.d.mts" />
import type { FastifyPluginCallback, FastifyRequest } from 'fastify'
import type { WebsocketPluginOptions } from '@fastify/websocket'
import type { ErrorObject } from 'ajv'
import type { IncomingMessage } from 'node:http'
import type { RawData } from 'ws'

/** Why a reliable socket closed, as reported to `onDisconnect`. */
type DisconnectCause = 'client' | 'server' | 'heartbeat' | 'backpressure' | 'shutdown' | 'error' | 'rateLimit' | 'idle' | 'replaced' | 'session'

// @types/ws declares ws twice: index.d.ts for CommonJS (augmented here) and index.d.mts for ES modules (augmented
// alike in ws-esm.d.mts), so that a socket typed by either is assignable to the other.
declare module 'ws' {
  // Merges into ws's WebSocket class, so `WebSocket.WebSocket` (the socket
  // @fastify/websocket hands to handlers) carries the extensions too.
  interface WebSocket extends fastifyReliableWs.SocketExtensions {
    /**
     * Sends `data` through the backpressure policy.
     * @returns `true` when the message was accepted, `false` when it was dropped
     *   (the callback then receives an error with code `FST_RELIABLE_WS_DROPPED`)
     *   or the socket is no longer open (`FST_RELIABLE_WS_NOT_OPEN`).
     */
    send (data: fastifyReliableWs.BufferLike, cb?: fastifyReliableWs.SendCallback): boolean
    send (data: fastifyReliableWs.BufferLike, options: fastifyReliableWs.SendOptions, cb?: fastifyReliableWs.SendCallback): boolean

    // Declaring these here replaces the inherited overloads, so ws's server-side events are listed again.
    on<E extends keyof fastifyReliableWs.SocketEvents> (event: E, listener: (this: WebSocket, ...args: fastifyReliableWs.SocketEvents[E]) => void): this
    on (event: string | symbol, listener: (this: WebSocket, ...args: any[]) => void): this
    once<E extends keyof fastifyReliableWs.SocketEvents> (event: E, listener: (this: WebSocket, ...args: fastifyReliableWs.SocketEvents[E]) => void): this
    once (event: string | symbol, listener: (this: WebSocket, ...args: any[]) => void): this
    off<E extends keyof fastifyReliableWs.SocketEvents> (event: E, listener: (this: WebSocket, ...args: fastifyReliableWs.SocketEvents[E]) => void): this
    off (event: string | symbol, listener: (this: WebSocket, ...args: any[]) => void): this
    addListener<E extends keyof fastifyReliableWs.SocketEvents> (event: E, listener: (...args: fastifyReliableWs.SocketEvents[E]) => void): this
    addListener (event: string | symbol, listener: (...args: any[]) => void): this
    removeListener<E extends keyof fastifyReliableWs.SocketEvents> (event: E, listener: (...args: fastifyReliableWs.SocketEvents[E]) => void): this
    removeListener (event: string | symbol, listener: (...args: any[]) => void): this
  }
}

declare module 'fastify' {
  interface FastifyInstance {
    /** A fresh, JSON-serialisable snapshot of every reliable connection's counters. */
    readonly wsStats: fastifyReliableWs.WsStats
    /** The sessions of routes with `resume`, by id: `app.wsSessions.get(id)?.send(...)` reaches a client that is away. */
    readonly wsSessions: fastifyReliableWs.Sessions
    /**
     * Publishes `data` as is (a string as a text frame, bytes as a binary frame unless `binary` says otherwise) to
     * every socket subscribed to `topic`. Resolves once the broker holds it; rejects with
     * `FST_RELIABLE_WS_BROKER_UNAVAILABLE` when the broker cannot take it (not up, before ready, after close).
     */
    wsPublish (topic: string, data: string | Buffer | ArrayBuffer | ArrayBufferView, options?: { binary?: boolean }): Promise<fastifyReliableWs.Published>
    /** `wsPublish(topic, JSON.stringify(value))`. */
    wsPublishJSON (topic: string, value: unknown): Promise<fastifyReliableWs.Published>
    /** A topic as this instance holds it: its local subscribers and the deliveries backpressure refused, or `null` when it has none. */
    wsTopicStats (topic: string): { subscribers: number; dropped: number } | null
  }
  interface FastifyContextConfig {
    /** Per-route settings of fastify-reliable-ws, or `false` for a plain @fastify/websocket route. */
    reliable?: fastifyReliableWs.RouteReliableOptions | false
  }
}

type FastifyReliableWs = FastifyPluginCallback<fastifyReliableWs.FastifyReliableWsOptions>

declare namespace fastifyReliableWs {
  /** What `send` accepts: the same union as ws's own `send` (ws keeps its alias private). */
  export type BufferLike = string | Buffer | DataView | number | ArrayBufferView | Uint8Array | ArrayBuffer | SharedArrayBuffer | Blob | readonly any[] | readonly number[] | { valueOf(): ArrayBuffer } | { valueOf(): SharedArrayBuffer } | { valueOf(): Uint8Array } | { valueOf(): readonly number[] } | { valueOf(): string } | { [Symbol.toPrimitive](hint: string): string }

  /** ws's options of `send`. */
  export interface SendOptions { mask?: boolean; binary?: boolean; compress?: boolean; fin?: boolean }

  export type SendCallback = (err?: Error) => void

  /**
   * What the plugin adds to ws's `WebSocket` (besides `send` returning a boolean and the `'json'` and `'drain'`
   * events), present on every socket of a reliable route.
   */
  export interface SocketExtensions {
    /** Unique id of this connection: 32 hex digits (128 random bits). */
    readonly id: string
    /** True until the peer misses a heartbeat. */
    readonly isAlive: boolean
    /** Last ping→pong round trip in milliseconds, or `null` before the first pong. */
    readonly latencyMs: number | null
    /**
     * The session this connection carries, on a route with `resume` and a client speaking the reliable
     * subprotocol; otherwise `null`. Sends go through it: numbered, kept until acknowledged, replayed on resume.
     */
    readonly session: Session | null
    /** `send(JSON.stringify(value))`, with the same return value and callback. */
    sendJSON (value: unknown, cb?: SendCallback): boolean
    /**
     * Delivers what is published to `topic` from now on; with a session, to the session (across its connections)
     * until it ends. False when it was subscribed already. Throws `FST_RELIABLE_WS_INVALID_TOPIC`,
     * `FST_RELIABLE_WS_TOO_MANY_SUBSCRIPTIONS` (over `limits.maxSubscriptions`) or `FST_RELIABLE_WS_NOT_OPEN`.
     */
    subscribe (topic: string): boolean
    /** Stops delivery of `topic`. False when it was not subscribed. */
    unsubscribe (topic: string): boolean
    /** Whether `topic` is delivered to this socket (or its session). */
    isSubscribed (topic: string): boolean
  }

  /** Where a published message stands in its topic (with the in-process broker: 0 when nobody subscribes to it). */
  export interface Published {
    offset: number
  }

  export interface TopicOptions {
    /** Longest topic name, in bytes (printable ASCII without spaces, so characters). Default `200`. */
    maxTopicLength?: number
    /** Distinct topics this instance holds subscribers of; a subscription to one more throws `FST_RELIABLE_WS_TOO_MANY_TOPICS`. Default `100000`. */
    maxTopics?: number
    /** Messages one topic may have waiting for its fan-out here; past it `wsPublish` rejects with `FST_RELIABLE_WS_PUBLISH_BACKLOG`. Default `10000`. */
    maxQueuedMessages?: number
    /** For a broker that keeps history (Redis): messages kept per topic. Default `1000`. */
    historySize?: number
    /** For a broker that keeps history (Redis): how long a topic's history outlives its last publish, in ms. Default `600000`. */
    historyTtlMs?: number
    /** The health route answers 503 while the broker is not up. Default `true`. */
    healthChecksBroker?: boolean
    /** Redis broker: what starts every key and channel name (no braces). Default `'reliable-ws'`. */
    keyPrefix?: string
    /** Redis broker: how long a publish may wait for Redis before it is refused, in ms. Default `2000`. */
    publishTimeoutMs?: number
    /** Redis broker: how often each instance checks its subscription still delivers, in ms. Default `5000`. */
    probeIntervalMs?: number
  }

  /** An ioredis client or Cluster client, as @fastify/redis hands out: duplicated for the plugin's own connections, never closed. */
  export interface RedisClient {
    duplicate (...args: any[]): unknown
  }

  /** Where the topic broker finds Redis: the application's ioredis client, ioredis options, or a `redis://` URL. */
  export type RedisOption = RedisClient | { [option: string]: unknown } | string

  export interface HeartbeatOptions {
    /** Milliseconds between two pings to the same peer. Default `30000`. */
    intervalMs?: number
    /**
     * Milliseconds a peer has to show a sign of life (a pong or any other frame) after a ping
     * before it is terminated. Must not exceed `intervalMs`. Default: `intervalMs`.
     */
    timeoutMs?: number
  }

  export interface BackpressureOptions {
    /** Above this many buffered bytes a new message is refused. Default `1048576` (1 MiB). */
    highWaterMark?: number
    /** `'drain'` is emitted once the buffered bytes fall to this or below. Default `262144` (256 KiB). */
    lowWaterMark?: number
    /** `'drop'` refuses the message; `'close'` closes the slow consumer with 1013. Default `'drop'`. */
    onLimit?: 'drop' | 'close'
  }

  export interface ShutdownOptions {
    /** Close code sent to every client on `app.close()`. Default `1001`. */
    closeCode?: number
    /** Close reason sent with it (at most 123 bytes). Default `'Server shutting down'`. */
    reason?: string
    /**
     * Milliseconds to wait for closing handshakes and buffered data before the remaining
     * sockets are terminated; also bounds how long a slow consumer closed with 1013 may take.
     * Default `5000`.
     */
    timeoutMs?: number
    /**
     * Clients speaking the reliable subprotocol are each told when to reconnect, spread evenly over this many
     * milliseconds, so that a restart does not bring every client back at once. `0`: no hints (clients fall back
     * on their own backoff). Default `5000`.
     */
    reconnectWindowMs?: number
  }

  export interface HealthOptions {
    /** Path of the GET health route. Default `'/health/ws'`. */
    path?: string
  }

  /**
   * Limits on connections and messages. A count, rate or timeout of `Infinity` means no limit.
   * In a route's `config.reliable.limits`, each field overrides the plugin's.
   */
  export interface LimitOptions {
    /**
     * An upgrade is answered 503 (with `Retry-After`) while this many reliable sockets are open, on all routes
     * together. A route may set its own threshold (lower, to shed it first). Default `Infinity`.
     */
    maxConnections?: number
    /**
     * An upgrade is answered 429 (with `Retry-After`) while its client address (`request.ip`, so Fastify's
     * `trustProxy` applies) has this many reliable sockets open, on all routes together. Default `Infinity`.
     */
    maxConnectionsPerIp?: number
    /**
     * Largest message in bytes (after decompression); a larger one closes the socket with 1009.
     * A route may lower it, not raise it. Default `1048576` (1 MiB).
     */
    maxPayload?: number
    /** Sustained messages a socket may send per second (a token bucket). Default `Infinity` (no limit). */
    messagesPerSecond?: number
    /** Messages a socket may send at once, on top of the sustained rate. Default: `messagesPerSecond`. */
    burst?: number
    /**
     * `'close'`: a socket over its rate is closed with 1008. `'drop'`: the message is dropped, and the peer is
     * sent `{"type":"error","message":"Rate limit exceeded"}` at most once a second. Default `'close'`.
     */
    onRateLimit?: 'close' | 'drop'
    /** A socket that sends no message this long (pings and pongs do not count) is closed with 1000. Default `Infinity`. */
    idleTimeoutMs?: number
    /**
     * A message (all its frames) that has begun to arrive and is still unfinished this long is closed with 1008.
     * Checked at the socket's deadline visits: closed between once and twice this after it began. Default `10000`.
     */
    fragmentTimeoutMs?: number
  }

  export interface PluginLimitOptions extends LimitOptions {
    /**
     * A TCP connection whose request has not fully arrived this long after it connected is destroyed
     * (slowloris). Applies to every connection of the server, before any route is known. Default `10000`.
     */
    handshakeTimeoutMs?: number
    /**
     * Sessions alive at once, connected or away, on all routes together. A new session beyond it ends the session
     * whose client has been away longest; when every one is connected the new connection is closed with 1013
     * `Too many sessions`. Default `10000`.
     */
    maxSessions?: number
    /** The same, per client address (`request.ip`): a session counts at the address of its latest connection. Default `100`. */
    maxSessionsPerIp?: number
    /**
     * Bytes all sessions together may keep unacknowledged (each message counts 64 bytes more than its size). A
     * message beyond it ends the sessions away longest to make room, else the session sending it (4800).
     * Default `67108864` (64 MiB).
     */
    sessionBufferBytes?: number
    /**
     * Connections whose session the store is settling at once (a resume's claim or a new session's create on its way,
     * with a store that answers with promises; a handover another instance asked for counts too). One more is told
     * to come back (a `retry` hint of 0.25–2.25 s) and closed with 1013 `Server busy`, so that a crowd of clients
     * arriving together (a peer instance died) waits on the clients' side, not on the store. Default `512`.
     */
    maxPendingSessions?: number
    /** Topics one socket (or session) may subscribe to at once; one more throws `FST_RELIABLE_WS_TOO_MANY_SUBSCRIPTIONS`. Default `100`. */
    maxSubscriptions?: number
  }

  /**
   * Origins allowed to open a socket from a browser, exactly as browsers send them
   * (`'https://example.com'`, `'http://localhost:3000'`); an upgrade without an Origin header is not from a
   * browser and is let through. Or a function deciding for each upgrade (`origin` is `undefined` when absent).
   */
  export type AllowedOrigins = string[] | ((origin: string | undefined, request: FastifyRequest) => boolean)

  /**
   * permessage-deflate (RFC 7692) for a route's sockets, as the fields applications tune. Fields left out take the
   * preset's values (what `compression: true` means).
   */
  export interface CompressionOptions {
    /** Messages smaller than this many bytes are sent uncompressed, with or without context takeover. */
    threshold?: number
    /** zlib compression level, 0 (none) to 9 (smallest output, most CPU). */
    level?: number
    /** zlib memLevel, 1 to 9: the size of the compressor's hash table. */
    memLevel?: number
    /** Window the server compresses with, 9 to 15 (2^bits bytes). */
    serverMaxWindowBits?: number
    /**
     * Window the client is asked to compress with, 9 to 15. Below 15, a client that cannot be asked (its offer has no
     * `client_max_window_bits`) is declined where the socket would inflate with a stream of its own.
     */
    clientMaxWindowBits?: number
    /**
     * Each message is compressed on its own, by zlib streams the route's sockets share (the preset). `false`: each
     * socket keeps a compressor of its own for its life, for better ratios on small, similar messages.
     */
    serverNoContextTakeover?: boolean
    /**
     * The client is asked to compress each message on its own, and the route's shared inflaters take them (the
     * preset). `false`: each socket keeps an inflater of its own.
     */
    clientNoContextTakeover?: boolean
    /**
     * zlib streams a route shares in each direction, and ws's limit on zlib operations at once for sockets with
     * streams of their own (process-wide in ws). Plugin level only.
     */
    concurrencyLimit?: number
  }

  /** Sessions that survive a dropped connection (clients speaking the reliable subprotocol only). */
  export interface ResumeOptions {
    /** Milliseconds a session waits for its client after a disconnect. Default `120000`. */
    ttlMs?: number
    /** Messages kept until the client acknowledges them; one more ends the session (close code 4800). Default `1000`. */
    maxBufferedMessages?: number
    /** Bytes of those messages; more ends the session (close code 4800). Default `1048576` (1 MiB). */
    maxBufferedBytes?: number
    /**
     * Who the client is (a user id from your authentication, say), asked once the connection has been accepted.
     * A session is resumed only by a request with the same owner; any other begins a new session. Throwing or
     * rejecting refuses the connection with 1008. Default: none (the resume secret alone decides).
     */
    owner?: (request: FastifyRequest) => string | Promise<string>
    /**
     * Sessions that survive a crash of their instance, with a session store that has `keep` (`RedisSessionStore`
     * has, as does the `redis` option's): each message to the client is kept in the store before it is sent, and the count of the client's messages
     * reserved ahead, so that another instance goes on with the session. Default `false`.
     */
    durable?: boolean
    /**
     * With `durable`: the client's messages counted ahead in the store, one write every half of them; after a crash,
     * at most this many reach the application again, marked `redelivered`. Default `64`.
     */
    receiveWindow?: number
  }

  /** One client's conversation across its connections. */
  export interface Session {
    /**
     * 32 hex digits; an identifier, not a credential (resuming takes the secret of the session's last welcome,
     * which only its client sees), so it may be logged and used as a key.
     */
    readonly id: string
    /** True once a client has resumed it at least once. */
    readonly resumed: boolean
    /** Whether the client is connected right now. */
    readonly connected: boolean
    /** True once the session has expired or overflowed: send() then returns false. */
    readonly ended: boolean
    /** Messages sent that the client has not acknowledged yet. */
    readonly unacknowledged: number
    /** Data messages received from the client in this session, across its connections. */
    readonly received: number
    /** What `resume.owner` returned when the session began, or `null` without one. */
    readonly owner: string | null
    /**
     * With `resume.durable`, during a `message` event: true when the application may have had this message already
     * (its number is `received`), from the instance that held the session before it crashed. Otherwise false.
     */
    readonly redelivered: boolean
    /** Sends now, or on resume if the client is away. False when the session has ended, or when this message ends it. */
    send (data: BufferLike, options?: { binary?: boolean }): boolean
    sendJSON (value: unknown): boolean
  }

  export interface Sessions {
    /** A session this instance holds; `undefined` for any other, wherever it is. */
    get (id: string): Session | undefined
    /**
     * Where session `id` is, as the session store says: held by which instance, in what state. `null` when there is
     * no such session (never begun, ended, expired). Rejects when the store fails.
     */
    lookup (id: string): Promise<SessionInfo | null>
    /**
     * Sends to session `id` wherever its client is: as `get(id).send()` when this instance holds it, else through the
     * session store, for the instance holding it or, handed over, for whichever instance its client resumes on. One
     * instance's messages in the order of its calls; none between instances. Rejects when the store fails.
     */
    send (id: string, data: string | Buffer | ArrayBuffer | ArrayBufferView, options?: { binary?: boolean }): Promise<SessionSendResult>
    sendJSON (id: string, value: unknown): Promise<SessionSendResult>
    /** This instance's name in the session store: 32 hex digits, new with each process. */
    readonly instance: string
  }

  /**
   * What became of `wsSessions.send`: `'sent'`, held here (sent now, or kept for its client); `'posted'`, in the
   * session store for the instance holding it (or the next one); `'unknown'`, no such session (never begun, ended,
   * expired); `'full'`, the store already keeps as many messages for it as `resume.maxBufferedMessages` or
   * `maxBufferedBytes` allow (nothing changed); `'overflowed'`, held here, and this message took it past its limits:
   * it ended, as `Session.send` returning false.
   */
  export type SessionSendResult = 'sent' | 'posted' | 'unknown' | 'full' | 'overflowed'

  /** A session as the store keeps it, without its secrets. */
  export interface SessionInfo {
    id: string
    /** The instance holding it (its `app.wsSessions.instance`); `''` once handed over, until its client resumes somewhere. */
    instance: string
    /** Whether this instance holds it (`get` gives it). */
    here: boolean
    /** `'claimed'`: welcome sent, client not heard yet; `'connected'`: heard; `'away'`: no connection. */
    state: 'away' | 'claimed' | 'connected'
    /** The pattern of the route it began on. */
    route: string
    /** The concrete URL it began on. */
    url: string
    /** What `resume.owner` returned, or `null` without one. */
    owner: string | null
    /** Not resumable after this moment (ms since the epoch), unless its holder writes it again. */
    expiresAt: number
  }

  /** A value, or a promise of it: a store that answers at once keeps the plugin's path synchronous. */
  export type Awaitable<T> = T | Promise<T>

  /**
   * What a session store keeps of one session: plain values, never the live session (its messages and socket stay
   * on the instance that holds it).
   */
  export interface SessionRecord {
    /** 32 hex digits. */
    id: string
    /** The pattern of the route it began on (`'/rooms/:id'`). */
    route: string
    /** The concrete URL it began on, query string included. */
    url: string
    /** What `resume.owner` returned, or `null` without one. */
    owner: string | null
    /** The secret of its last welcome. */
    secret: string
    /** The secret the client resumed with, still good while the new welcome may have been lost; `''` once the client was heard. */
    heldSecret: string
    /** Claims so far (1 at creation): every later write names it, and is refused once another claim has raised it. */
    fence: number
    /** The instance holding it; `''` once released. */
    instance: string
    /** `'claimed'`: welcome sent, client not heard yet; `'connected'`: heard; `'away'`: no connection. */
    state: 'away' | 'claimed' | 'connected'
    /** Until this moment (ms since the epoch) a claim awaits the client: the held secret does not take it over. */
    claimedUntil: number
    /**
     * Not resumable after this moment (ms since the epoch): `ttlMs` after it went away, or, while held, after its holder
     * last wrote it. A live holder writes it again every half of that, so that the records of one that died go.
     */
    expiresAt: number
    /** When it began (ms since the epoch). */
    createdAt: number
  }

  /** A resume request, judged by the store. */
  export interface ClaimRequest {
    id: string
    /** The instance claiming it. */
    instance: string
    route: string
    url: string
    owner: string | null
    /** The secret the client resumed with. */
    secret: string
    /** The count of messages the client says it has received (the resume token's). */
    received: number
    /**
     * The count of messages the session has sent, as the instance holding it counts them; `null` from an instance
     * that does not hold it, which may claim only a session handed over, and checks the count against the handover.
     */
    sent: number | null
    /** The secret of the welcome this claim leads to. */
    newSecret: string
    /** How long the claim awaits the client before the held secret may take the session over again. */
    confirmMs: number
    /**
     * How long the instance holding the session has, once asked, to hand it over; past that, a claim from an instance
     * that does not hold it is refused for good (`held` with no `retryMs`).
     */
    askMs: number
    /** How long the record lives, held by the claimer, unless it writes it again. */
    ttlMs: number
    /**
     * With `resume.durable`: whatever handover the claim takes stays in the store as the claimer's kept copy (`keep`),
     * until the claimer keeps its own; and a kept copy is taken over when its holder is `dead`, or has not written the
     * record for its time.
     */
    durable?: boolean
    /** With `durable`: the instance the store said nobody listens as (`ask` answered `false`): it died. */
    dead?: string
  }

  /**
   * Why a claim was refused: no such session (or expired); another route, URL or owner; a wrong secret; a count of
   * messages the session never sent; another claim awaiting its client (`retryMs`: until it stops waiting); or,
   * to an instance that does not hold it, a session nobody handed over (`held`: its messages are another instance's;
   * see `ClaimResult`).
   */
  export type ClaimRefusal = 'unknown' | 'mismatch' | 'secret' | 'count' | 'busy' | 'held'

  /**
   * What an instance closing gracefully writes of a session it held, for whichever instance its client resumes on:
   * everything the live session knows that its record does not.
   */
  export interface SessionHandover {
    /** Data messages received from the client in the session. */
    received: number
    /** Data messages sent in the session that the client has acknowledged. */
    acknowledged: number
    /**
     * The messages sent and not acknowledged, in order: the first is message `acknowledged + 1`. A claim that takes
     * the handover adds after them the messages posted since, which no client has had yet.
     */
    messages: SessionMessage[]
    /** Where the session stands in each topic it subscribes to: the next holder goes on from there. */
    topics: TopicPosition[]
    /**
     * With `resume.durable`: the client's messages that may have reached the application, `received` or more. After a
     * crash of its holder, those numbered `received + 1` to here reach the application again, marked `redelivered`.
     */
    reserved?: number
  }

  /**
   * A session's place in a topic: it has had every message of `topic` up to `offset` of `epoch` (epoch `''`, offset
   * 0: the topic had no messages yet when it subscribed).
   */
  export interface TopicPosition {
    topic: string
    epoch: string
    offset: number
  }

  /** A claim that won: the record as it now stands, who held it before, and what was handed over (taken out of the store). */
  export type ClaimResult =
    | { ok: true, record: SessionRecord, previous: string, handover: SessionHandover | null }
    /**
     * `held`: `holder` (`''` for nobody) holds it as claim `fence`. With `retryMs`, that holder is to be asked to hand
     * it over (`SessionStore.ask`) and the client to come back after `retryMs`; without, the holder was asked and
     * never did, or nobody holds it: the session cannot move.
     */
    | { ok: false, refusal: 'held', holder: string, fence: number, retryMs?: number }
    | { ok: false, refusal: Exclude<ClaimRefusal, 'held'>, retryMs?: number }

  /**
   * `'fenced'`: another claim took the session since; `'lost'`: no such record; `'posted'`: done, and messages posted
   * to the session wait for its holder to `take` them (its notice may have been lost).
   */
  export type WriteResult = 'ok' | 'fenced' | 'lost' | 'posted'

  /** A message for a session, as posted to the store, and kept in a handover. */
  export interface SessionMessage {
    data: string | Buffer
    binary: boolean
  }

  /**
   * What `post` did: kept it for `holder` (`''`: nobody holds the session; the claim that takes its handover takes
   * it too), or refused it: no such session, or its limits reached.
   */
  export type PostResult = { holder: string } | 'unknown' | 'full'

  /** What the store tells a listening instance. */
  export interface StoreNotices {
    /** Another instance asks for session `id`, if this one still holds it as claim `fence` (`ask`). */
    asked (id: string, fence: number): void
    /** A message was posted to session `id`, held here: `take` it. */
    posted (id: string): void
  }

  /** A write with neither keeps a held record `ttlMs` more, and leaves an away one as it is. */
  export interface RecordChanges {
    /** The client was heard on its connection: state `'connected'`, the held secret forgotten. */
    heard?: true
    /** Its connection closed: state `'away'`, resumable for `ttlMs` from now. */
    away?: true
  }

  /**
   * Where sessions' records are kept; in memory by default. Every method may answer at once or with a promise; a
   * rejection (or a throw) while a connection begins or resumes its session closes it with 1013 and a retry hint.
   * A record past its `expiresAt` is gone; ending a session is the plugin's: it calls `end`. The contract:
   * docs/sessions.md.
   */
  export interface SessionStore {
    /** A new session, claimed by its instance. Rejects if the id is taken. */
    create (record: SessionRecord): Awaitable<void>
    /** Checks a resume request against the record and, if it fits, raises the fence and takes the session. */
    claim (request: ClaimRequest): Awaitable<ClaimResult>
    /** The holder's write: `changes`, and a held record kept `ttlMs` more. */
    write (id: string, fence: number, changes: RecordChanges, ttlMs: number): Awaitable<WriteResult>
    /**
     * Lets go of a claim: held by nobody, away, resumable for `ttlMs` from now. With a handover, any instance may
     * claim it next; the claim that wins takes the handover out.
     */
    release (id: string, fence: number, ttlMs: number, handover?: SessionHandover): Awaitable<WriteResult>
    /** Deletes the record, unless another claim took it since. */
    end (id: string, fence: number): Awaitable<WriteResult>
    /** The record, changing nothing; `null` when there is none (or it expired). */
    read (id: string): Awaitable<SessionRecord | null>
    /**
     * Optional, with `ask`: once the plugin is ready, `notices` is to be told of every `ask` naming `instance`, and of
     * every `post` to a session it holds, from any instance sharing the store. Resolves to what stops it, called as
     * the plugin closes. Without the pair, a session moves only when its instance closes.
     */
    listen? (instance: string, notices: StoreNotices): Awaitable<() => Awaitable<void>>
    /**
     * Optional, with `listen`: asks `instance` to hand session `id` over, if it still holds it as claim `fence`. At most
     * once; may be lost. `false` when the store knows that no instance listens under that name (it died, or cannot
     * hear): the session is then begun anew at once rather than waited for. Anything else: it may hear.
     */
    ask? (instance: string, id: string, fence: number): Awaitable<boolean | void>
    /**
     * Optional, with `take`: keeps a message for session `id`, after those kept before it, unless `maxMessages` are
     * kept already or its bytes would take them past `maxBytes`; tells its holder (`StoreNotices.posted`, at most
     * once, may be lost; the holder's next write answers `'posted'`). Without the pair, `wsSessions.send` reaches
     * only sessions held by the calling instance.
     */
    post? (id: string, message: SessionMessage, maxMessages: number, maxBytes: number): Awaitable<PostResult>
    /**
     * Optional, with `post`: the messages kept for session `id`, in order, taken out; refused unless claim `fence` holds
     * it. With a copy kept (`keep`), they join its messages as they leave.
     */
    take? (id: string, fence: number): Awaitable<SessionMessage[] | 'fenced' | 'lost'>
    /**
     * Optional; `resume.durable` needs it: the holder's copy of what a next holder needs should this one die, kept
     * beside the record and replacing the last (a claim from an instance that does not hold the session takes it only
     * once its holder is dead: `ClaimRequest.durable`); what `take` takes joins its messages. Refused (`'fenced'`) once
     * another claim took the session, or it was released; otherwise as `write` with no changes. `since`: the copy this
     * holder's last keep that answered `'ok'` or `'posted'` wrote (or the copy its claim took) had its messages up to
     * that number, the same as `kept`'s; a store may write only the rest (`RedisSessionStore` does), as long as the copy
     * it then keeps is exactly `kept`. Its copy may hold more than that by now (a keep that failed may have landed
     * after all; `take` joins posts), so a store that adds to it drops what follows `since` first.
     */
    keep? (id: string, fence: number, ttlMs: number, kept: SessionHandover, since?: number): Awaitable<WriteResult>
  }

  /** What `RedisSessionStore` needs of its client: an ioredis client or Cluster client (`app.redis` of @fastify/redis). */
  export interface RedisScriptClient {
    defineCommand (name: string, definition: { lua: string, numberOfKeys?: number }): void
    /** Resolves to the count of subscribers reached (on a Cluster, those of the node it ran on only). */
    publish (channel: string, message: string): Promise<unknown>
    /** `true` on an ioredis Cluster client. */
    readonly isCluster?: boolean
    /** For `listen`'s subscription: a connection of the store's own, closed when listening stops. */
    duplicate (...args: any[]): unknown
  }

  export interface RedisSessionStoreOptions {
    /** What starts every key's name (no braces or spaces). Default `'reliable-ws'`, the topic broker's default `topics.keyPrefix`. */
    prefix?: string
  }

  /**
   * Sessions' records in Redis, one hash per session (`<prefix>:{s:<id>}`), each method one atomic Lua script, time
   * taken from Redis. Issues commands on the client it is given (the scripts defined on it), never closes it; listens
   * for asks on a duplicate of it. Sessions move between instances when handed over (graceful close, or asked for by
   * the instance their client resumed on), not after a crash: docs/sessions.md, "Records in Redis".
   */
  export class RedisSessionStore implements SessionStore {
    constructor (client: RedisScriptClient, options?: RedisSessionStoreOptions)
    create (record: SessionRecord): Promise<void>
    claim (request: ClaimRequest): Promise<ClaimResult>
    write (id: string, fence: number, changes: RecordChanges, ttlMs: number): Promise<WriteResult>
    release (id: string, fence: number, ttlMs: number, handover?: SessionHandover): Promise<WriteResult>
    end (id: string, fence: number): Promise<WriteResult>
    read (id: string): Promise<SessionRecord | null>
    listen (instance: string, notices: StoreNotices): Promise<() => Promise<void>>
    ask (instance: string, id: string, fence: number): Promise<boolean>
    post (id: string, message: SessionMessage, maxMessages: number, maxBytes: number): Promise<PostResult>
    take (id: string, fence: number): Promise<SessionMessage[] | 'fenced' | 'lost'>
    keep (id: string, fence: number, ttlMs: number, kept: SessionHandover, since?: number): Promise<WriteResult>
  }

  export interface DisconnectInfo {
    code: number
    reason: string
    cause: DisconnectCause
    durationMs: number
  }

  /** What the plugin needs of a prom-client `Registry` (prom-client's default `register` is one). */
  export interface MetricsRegistry {
    registerMetric (metric: any): void
    getSingleMetric (name: string): unknown
    removeSingleMetric (name: string): void
  }

  export interface MetricsOptions {
    /** The registry the metrics join. Default: prom-client's default `register`. */
    registry?: MetricsRegistry
    /** Start of every metric name. Default `'ws_'`. */
    prefix?: string
  }

  export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace'

  export interface LoggingOptions {
    /**
     * Level of the `websocket opened` and `websocket closed` lines, written by the request's child logger
     * (so they carry its `reqId`), or `false` for none. Default `'info'`.
     */
    connections?: LogLevel | false
    /**
     * Most warnings (heartbeat timeouts, backpressure) logged per second by one Fastify instance; the next line
     * logged after some were held back carries their count as `suppressed`. `0`: none. Default `10`.
     */
    warningsPerSecond?: number
  }

  export interface FastifyReliableWsOptions {
    /** Ping schedule, or `false` to turn heartbeats off. */
    heartbeat?: HeartbeatOptions | false
    /** Outbound buffer limits applied by `socket.send`. */
    backpressure?: BackpressureOptions
    /** Graceful shutdown on `app.close()`. */
    shutdown?: ShutdownOptions
    /** A GET route answering with `wsStats` (`true`: at the default path), or `false` (the default) for none. */
    health?: HealthOptions | boolean
    /** Options handed to @fastify/websocket. Its `options.maxPayload` is another way to set `limits.maxPayload` (not both). */
    websocket?: WebsocketPluginOptions
    /** Called for each new reliable connection before the route handler; throwing closes it with 1008. */
    onConnect?: (socket: import('ws').WebSocket, request: FastifyRequest) => void | Promise<void>
    /** Called once when a reliable connection has closed. */
    onDisconnect?: (socket: import('ws').WebSocket, info: DisconnectInfo) => void | Promise<void>
    /** Upgrades from any other browser origin are answered 403. Default: every origin. */
    allowedOrigins?: AllowedOrigins
    /** Connection, message and timeout limits. */
    limits?: PluginLimitOptions
    /**
     * Prometheus metrics through prom-client (an optional peer dependency: install it), read from the same
     * counters as `wsStats`. `true` is `{}`. Default `false`.
     */
    metrics?: MetricsOptions | boolean
    /** Connection lines and rate-limited warnings in Fastify's logger. */
    logging?: LoggingOptions
    /** Sessions for every reliable route (`true`: the defaults); routes may override. Default `false`. */
    resume?: ResumeOptions | boolean
    /**
     * Where sessions' records are kept. Default: in Redis with the `redis` option (on a connection of the plugin's
     * own, keys named by `topics.keyPrefix`), else in this process's memory; `null`: in this process's memory.
     */
    sessionStore?: SessionStore | null
    /**
     * permessage-deflate on reliable routes: `true` for the preset (no zlib memory per socket), an object to tune it,
     * `false` for none. Routes may override. Default `false`.
     */
    compression?: CompressionOptions | boolean
    /** Publish/subscribe: topic names and a history-keeping broker's bounds. */
    topics?: TopicOptions
    /**
     * Carries topics between the instances of an application through Redis (ioredis, an optional peer dependency,
     * unless a client is given), and keeps sessions there unless `sessionStore` says otherwise. Default: the in-process
     * broker.
     */
    redis?: RedisOption
  }

  export interface RouteReliableOptions {
    /** Parse text messages as JSON and emit them as `'json'` events. Default `false`. */
    json?: boolean
    /** JSON Schema each parsed message must satisfy (implies `json: true`). */
    messageSchema?: object
    /** Overrides the plugin's heartbeat field by field, or `false` for none on this route. */
    heartbeat?: HeartbeatOptions | false
    /** Overrides the plugin's backpressure settings field by field. */
    backpressure?: BackpressureOptions
    /** Replaces the plugin's allowedOrigins for this route. */
    allowedOrigins?: AllowedOrigins
    /** Overrides the plugin's limits field by field. */
    limits?: LimitOptions
    /** Sessions on this route (`true`: the plugin's settings, or the defaults), or `false` for none. */
    resume?: ResumeOptions | boolean
    /**
     * permessage-deflate on this route: `true` for the plugin's settings (or the preset), an object over them,
     * `false` for none (the extension is then declined even if the plugin's is on).
     */
    compression?: Omit<CompressionOptions, 'concurrencyLimit'> | boolean
  }

  /** Events of a reliable socket: ws's server-side ones, plus 'json' and 'drain'. */
  export interface SocketEvents {
    close: [code: number, reason: Buffer]
    error: [error: Error]
    upgrade: [request: IncomingMessage]
    message: [data: RawData, isBinary: boolean]
    open: []
    ping: [data: Buffer]
    pong: [data: Buffer]
    /** A text message parsed as JSON (and valid against `messageSchema`), on JSON routes. */
    json: [message: any]
    /** The buffered amount fell to lowWaterMark or below after having crossed highWaterMark. */
    drain: []
  }

  export interface RouteStats {
    active: number
    opened: number
    messagesReceived: number
    messagesSent: number
  }

  export interface LimitStats {
    /** Upgrades answered 403 for their Origin. */
    originRejected: number
    /** Upgrades answered 503 for maxConnections. */
    maxConnectionsRejected: number
    /** Upgrades answered 429 for maxConnectionsPerIp. */
    perIpRejected: number
    /** Sockets closed with 1009 for a message above maxPayload. */
    payloadTooLarge: number
    /** Messages refused by the rate limit. */
    rateLimited: number
    /** Connections destroyed before their request had arrived. */
    handshakeTimeouts: number
    /** Sockets closed for sending nothing for idleTimeoutMs. */
    idleTimeouts: number
    /** Malformed input: frames ws refused, frames cut short, upgrade requests and HTTP that did not parse. */
    protocolErrors: number
    /** Peers terminated for flooding pings (protocol-level or the subprotocol's) whose pongs they never read. */
    pingFloods: number
    /** Sockets closed with 1008 for a message still unfinished after fragmentTimeoutMs. */
    fragmentTimeouts: number
  }

  export interface SessionStats {
    /** Sessions alive: connected, or waiting for their client. */
    active: number
    /** Times a client resumed its session. */
    resumed: number
    /**
     * Resume requests that began a new session instead: an unknown, ended or stale secret, another owner, route
     * or URL, or a count of messages the session never sent. The session asked for is left as it was.
     */
    resumeRefused: number
    /** Sessions whose client did not come back within ttlMs. */
    expired: number
    /** Sessions ended because the client fell behind maxBufferedMessages or maxBufferedBytes, or past sessionBufferBytes. */
    overflowed: number
    /** Away sessions ended to make room under maxSessions, maxSessionsPerIp or sessionBufferBytes. */
    evicted: number
    /** Connections closed with 1013 because every session at a cap was connected. */
    rejected: number
    /** Connections closed with 1013 (and a retry hint) because the session store failed while their session began or resumed. */
    storeUnavailable: number
    /**
     * Connections closed with 1013 `Session busy` (and a retry hint): they resumed with the secret of a claim whose
     * client has not been heard yet, while its connection lives.
     */
    busy: number
    /** Connections closed with 1013 `Server busy` (and a retry hint) because maxPendingSessions sessions were being settled by the store. */
    throttled: number
    /** Resumes of a session another instance handed over (its messages and counts came with it). */
    claimedRemote: number
    /**
     * Resumes of a session whose instance died, from the copy it kept in the store (`resume.durable`); counted in
     * `claimedRemote` too.
     */
    takenOver: number
    /** The client's messages that reached the application a second time after a crash, marked `redelivered`. */
    redelivered: number
    /** Sessions given up here because another instance took them over, taking this one for dead: closed with cause `replaced`. */
    fenced: number
    /** Sessions this instance handed over, as it closed or when asked, for their clients to resume on another instance. */
    handedOver: number
    /** Sessions this instance failed to hand over (the store failed or refused): their clients begin anew. */
    handoverFailed: number
    /**
     * Sessions given up because their client resumed on another instance, which asked for them: handed over, or ended
     * when they had topics. Their socket here, if still open, was ended with cause `replaced`.
     */
    replacedRemote: number
    /** Messages sent again on resume. */
    replayed: number
    /** Messages `wsSessions.send` gave the session store: for sessions held by another instance or by none, or held here while earlier ones wait there. */
    posted: number
    /** Messages this instance took from the session store for sessions it holds, posted by any instance (not those a claim takes with a handover). */
    postsTaken: number
    /** Bytes all sessions keep unacknowledged now, as counted against sessionBufferBytes. */
    bufferedBytes: number
    /** Sessions ended because a topic they subscribe to lost messages (4801). */
    topicGaps: number
    /** Sessions ended because the session store lost their record (flushed, evicted): closed with 4802. */
    storeLost: number
  }

  export interface TopicStats {
    /** Topics with at least one subscriber in this instance. */
    topics: number
    /** Subscriptions of sockets and sessions, all topics together. */
    subscriptions: number
    /** Messages published by this instance and taken by the broker. */
    published: number
    /** Messages handed to subscribers (sent, or kept by a session). */
    delivered: number
    /** Deliveries refused by a subscriber's backpressure policy, or for a fan-out queue past topics.maxQueuedMessages. */
    dropped: number
    /** Messages waiting in this instance's fan-out queues, all topics together. */
    queued: number
    /** Times messages of a topic were lost before this instance (each ends the topic's sessions here, 4801). */
    gaps: number
    /** Subscriptions refused for limits.maxSubscriptions or topics.maxTopics. */
    refused: number
    /** Subscriptions refused for an invalid topic name. */
    invalid: number
  }

  export interface BrokerStats {
    /** `up` takes publishes; `connecting` and `down` refuse them. */
    state: 'up' | 'connecting' | 'down'
    /** How far behind the broker delivery runs (0 when it cannot tell). */
    lagMs: number
  }

  /** permessage-deflate at work. `bytesIn` goes into zlib, `bytesOut` comes out of it. */
  export interface CompressionStats {
    /** Open reliable sockets that negotiated permessage-deflate. */
    sockets: number
    /** Messages sent compressed: their payload bytes before (`bytesIn`) and after (`bytesOut`, on the wire). */
    sent: { messages: number; bytesIn: number; bytesOut: number }
    /** Compressed messages received: their payload bytes on the wire (`bytesIn`) and inflated (`bytesOut`). */
    received: { messages: number; bytesIn: number; bytesOut: number }
  }

  export interface WsStats {
    connections: { active: number; peak: number; opened: number; closed: number; rejected: number }
    heartbeat: {
      pingsSent: number
      pongsReceived: number
      timeouts: number
      latencyMs: { p50: number | null; p99: number | null }
    }
    messages: { received: number; sent: number; dropped: number; invalid: number }
    bytes: { received: number; sent: number }
    backpressure: { events: number; bufferedBytes: number; slowConsumersClosed: number }
    closeCodes: Record<string, number>
    /** `{ "<cause>": count }` of why reliable sockets closed, with the causes `onDisconnect` reports. */
    closeCauses: Partial<Record<DisconnectCause, number>>
    limits: LimitStats
    sessions: SessionStats
    compression: CompressionStats
    topics: TopicStats
    broker: BrokerStats
    errors: number
    draining: boolean
    uptimeMs: number
    routes: Record<string, RouteStats>
  }

  /** The error reply sent for an invalid message in JSON mode. */
  export interface InvalidMessageReply {
    type: 'error'
    message: 'Invalid message'
    errors?: ErrorObject[]
  }

  export const fastifyReliableWs: FastifyReliableWs
  export { fastifyReliableWs as default }
}

declare function fastifyReliableWs (...params: Parameters<FastifyReliableWs>): ReturnType<FastifyReliableWs>

export = fastifyReliableWs
