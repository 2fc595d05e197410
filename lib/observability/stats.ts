// Observability: what the plugin counts and how it is read out (wsStats, Prometheus metrics, health, warnings).
import type { Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import type fastifyReliableWs = require('../../types/index')
import type { CompressionCounters, Counters, ReliableSocket, RouteCounters } from '../core/shapes'
import { kBytesReadAtOpen, kBytesWrittenAtOpen, kCompressFrom, kRoute, kTcp } from '../core/symbols'

type RouteStats = fastifyReliableWs.RouteStats
type WsStats = fastifyReliableWs.WsStats
type LimitStats = fastifyReliableWs.LimitStats
type Cause = fastifyReliableWs.DisconnectInfo['cause']

type SessionStats = fastifyReliableWs.SessionStats
type TopicStats = fastifyReliableWs.TopicStats
type BrokerStats = fastifyReliableWs.BrokerStats

// Enough recent round trips for a stable p99 without unbounded memory.
const LATENCY_SAMPLES = 1024

/**
 * Counters for one Fastify instance. Hot paths bump plain numeric fields;
 * everything derived (sums, percentiles, buffered bytes) is computed only
 * when a snapshot is read.
 */
export class StatsCollector implements Counters {
  readonly startedAt = performance.now()
  active = 0
  peak = 0
  rejected = 0
  pingsSent = 0
  pongsReceived = 0
  backpressureEvents = 0
  slowConsumersClosed = 0
  errors = 0
  draining = false
  readonly limits: LimitStats = {
    originRejected: 0,
    maxConnectionsRejected: 0,
    perIpRejected: 0,
    payloadTooLarge: 0,
    rateLimited: 0,
    handshakeTimeouts: 0,
    idleTimeouts: 0,
    protocolErrors: 0,
    pingFloods: 0,
    fragmentTimeouts: 0
  }

  readonly routes = new Map<string, RouteCounters>()
  readonly sessions: SessionStats = { active: 0, resumed: 0, resumeRefused: 0, expired: 0, overflowed: 0, evicted: 0, rejected: 0, storeUnavailable: 0, busy: 0, throttled: 0, claimedRemote: 0, takenOver: 0, redelivered: 0, fenced: 0, handedOver: 0, handoverFailed: 0, replacedRemote: 0, replayed: 0, posted: 0, postsTaken: 0, bufferedBytes: 0, topicGaps: 0, storeLost: 0 }
  readonly topics: TopicStats = { topics: 0, subscriptions: 0, published: 0, delivered: 0, dropped: 0, queued: 0, gaps: 0, refused: 0, invalid: 0 }
  broker: BrokerStats = { state: 'down', lagMs: 0 }
  readonly compression: CompressionCounters = { sent: { messages: 0, bytesIn: 0, bytesOut: 0 }, received: { messages: 0, bytesIn: 0, bytesOut: 0 } }
  private readonly latencies = new Float64Array(LATENCY_SAMPLES)
  private latencyCount = 0

  /** The counters of a declared route path; routes declared twice share them. */
  route (url: string): RouteCounters {
    let counters = this.routes.get(url)
    if (counters === undefined) {
      counters = {
        active: 0,
        opened: 0,
        messagesReceived: 0,
        messagesSent: 0,
        dropped: 0,
        invalid: 0,
        timeouts: 0,
        closedBytesReceived: 0,
        closedBytesSent: 0,
        closes: {}
      }
      this.routes.set(url, counters)
    }
    return counters
  }

  recordLatency (ms: number): void {
    this.latencies[this.latencyCount++ % LATENCY_SAMPLES] = ms
  }

  recordClose (socket: ReliableSocket, counters: RouteCounters, code: number, cause: Cause): void {
    this.active--
    counters.active--
    const codes = counters.closes[cause] ??= {}
    codes[code] = (codes[code] ?? 0) + 1
    counters.closedBytesReceived += bytesReceived(socket)
    counters.closedBytesSent += bytesSent(socket)
  }

  snapshot (clients: ReadonlySet<unknown> | undefined): WsStats {
    let opened = 0
    let received = 0
    let sent = 0
    let dropped = 0
    let invalid = 0
    let timeouts = 0
    let totalBytesReceived = 0
    let totalBytesSent = 0
    const closeCodes: Record<string, number> = {}
    const closeCauses: Record<string, number> = {}
    const routes: Record<string, RouteStats> = {}
    for (const [url, counters] of this.routes) {
      opened += counters.opened
      received += counters.messagesReceived
      sent += counters.messagesSent
      dropped += counters.dropped
      invalid += counters.invalid
      timeouts += counters.timeouts
      totalBytesReceived += counters.closedBytesReceived
      totalBytesSent += counters.closedBytesSent
      for (const [cause, codes] of Object.entries(counters.closes)) {
        for (const [code, count] of Object.entries(codes)) {
          closeCodes[code] = (closeCodes[code] ?? 0) + count
          closeCauses[cause] = (closeCauses[cause] ?? 0) + count
        }
      }
      routes[url] = { active: counters.active, opened: counters.opened, messagesReceived: counters.messagesReceived, messagesSent: counters.messagesSent }
    }
    let bufferedBytes = 0
    let compressing = 0
    forEachReliableSocket(clients, (socket) => {
      totalBytesReceived += bytesReceived(socket)
      totalBytesSent += bytesSent(socket)
      bufferedBytes += socket.bufferedAmount
      if (socket[kCompressFrom] !== Infinity) compressing++
    })
    return {
      connections: { active: this.active, peak: this.peak, opened, closed: opened - this.active, rejected: this.rejected },
      heartbeat: { pingsSent: this.pingsSent, pongsReceived: this.pongsReceived, timeouts, latencyMs: this.latencyPercentiles() },
      messages: { received, sent, dropped, invalid },
      bytes: { received: totalBytesReceived, sent: totalBytesSent },
      backpressure: { events: this.backpressureEvents, bufferedBytes, slowConsumersClosed: this.slowConsumersClosed },
      closeCodes,
      closeCauses,
      limits: { ...this.limits },
      sessions: { ...this.sessions },
      compression: { sockets: compressing, sent: { ...this.compression.sent }, received: { ...this.compression.received } },
      topics: { ...this.topics },
      broker: { state: this.broker.state, lagMs: this.broker.lagMs },
      errors: this.errors,
      draining: this.draining,
      uptimeMs: Math.round(performance.now() - this.startedAt),
      routes
    }
  }

  private latencyPercentiles (): { p50: number | null, p99: number | null } {
    const n = Math.min(this.latencyCount, LATENCY_SAMPLES)
    if (n === 0) return { p50: null, p99: null }
    const sorted = this.latencies.slice(0, n).sort()
    return { p50: round(sorted[Math.ceil(n * 0.5) - 1]), p99: round(sorted[Math.ceil(n * 0.99) - 1]) }
  }
}

/**
 * Calls `fn` for each open socket of a reliable route among ws's clients (opted-out routes' sockets have no
 * route). Before @fastify/websocket has loaded there are no clients at all.
 */
export function forEachReliableSocket (clients: ReadonlySet<unknown> | undefined, fn: (socket: ReliableSocket) => void): void {
  (clients as ReadonlySet<ReliableSocket> | undefined)?.forEach((socket) => {
    if (socket[kRoute] !== undefined) fn(socket)
  })
}

/** Wire bytes a socket has received since its handshake. */
export function bytesReceived (socket: ReliableSocket): number {
  return bytesRead(socket[kTcp]) - socket[kBytesReadAtOpen]
}

/** Wire bytes a socket has sent since its handshake. */
export function bytesSent (socket: ReliableSocket): number {
  return bytesHandedOver(socket[kTcp]) - socket[kBytesWrittenAtOpen]
}

/**
 * Bytes handed to the operating system. Node's bytesWritten also counts what
 * still waits in the socket's own buffer, which is discarded if the peer goes
 * away: a total built on it would go back when a slow reader dies.
 */
export function bytesHandedOver (tcp: Socket | null): number {
  return tcp?.bytesWritten === undefined ? 0 : tcp.bytesWritten - tcp.writableLength
}

// No connection, or an object that is not a TCP socket (an injectWS upgrade context may bring one), counts no
// bytes: 0 for it, rather than NaN in every total it is added to.
export function bytesRead (tcp: Socket | null): number {
  return tcp?.bytesRead ?? 0
}

function round (ms: number): number {
  return Math.round(ms * 1000) / 1000
}
