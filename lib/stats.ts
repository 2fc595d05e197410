import { performance } from 'node:perf_hooks'
import type fastifyReliableWs = require('../types/index')
import type { ReliableSocket } from './reliable-socket'
import { kBytesReadAtOpen, kBytesWrittenAtOpen, kRoute } from './symbols'

type RouteStats = fastifyReliableWs.RouteStats
type WsStats = fastifyReliableWs.WsStats
type LimitStats = fastifyReliableWs.LimitStats
type SessionStats = fastifyReliableWs.SessionStats

// Enough recent round trips for a stable p99 without unbounded memory.
const LATENCY_SAMPLES = 1024

/**
 * Counters for one Fastify instance. Hot paths bump plain numeric fields;
 * everything derived (sums, percentiles, buffered bytes) is computed only
 * when a snapshot is read.
 */
export class StatsCollector {
  readonly startedAt = performance.now()
  active = 0
  peak = 0
  rejected = 0
  pingsSent = 0
  pongsReceived = 0
  timeouts = 0
  dropped = 0
  invalid = 0
  backpressureEvents = 0
  slowConsumersClosed = 0
  errors = 0
  draining = false
  // Wire bytes of sockets already closed; open ones are read live.
  closedBytesReceived = 0
  closedBytesSent = 0
  // Peers choose close codes, but ws accepts only valid ones: at most ~2,000 keys.
  readonly closeCodes: Record<number, number> = {}
  readonly limits: LimitStats = {
    originRejected: 0,
    maxConnectionsRejected: 0,
    perIpRejected: 0,
    payloadTooLarge: 0,
    rateLimited: 0,
    handshakeTimeouts: 0,
    idleTimeouts: 0,
    protocolErrors: 0
  }
  readonly sessions: SessionStats = { active: 0, resumed: 0, expired: 0, overflowed: 0, replayed: 0 }
  readonly routes = new Map<string, RouteStats>()
  private readonly latencies = new Float64Array(LATENCY_SAMPLES)
  private latencyCount = 0

  /** The counters of a declared route path; routes declared twice share them. */
  route (url: string): RouteStats {
    let counters = this.routes.get(url)
    if (counters === undefined) {
      counters = { active: 0, opened: 0, messagesReceived: 0, messagesSent: 0 }
      this.routes.set(url, counters)
    }
    return counters
  }

  recordLatency (ms: number): void {
    this.latencies[this.latencyCount++ % LATENCY_SAMPLES] = ms
  }

  recordClose (socket: ReliableSocket, code: number): void {
    this.active--
    this.closeCodes[code] = (this.closeCodes[code] ?? 0) + 1
    this.closedBytesReceived += socket._socket.bytesRead - socket[kBytesReadAtOpen]
    this.closedBytesSent += socket._socket.bytesWritten - socket[kBytesWrittenAtOpen]
  }

  snapshot (clients: Iterable<unknown> | undefined): WsStats {
    let opened = 0
    let received = 0
    let sent = 0
    const routes: Record<string, RouteStats> = {}
    for (const [url, counters] of this.routes) {
      opened += counters.opened
      received += counters.messagesReceived
      sent += counters.messagesSent
      routes[url] = { ...counters }
    }
    let bytesReceived = this.closedBytesReceived
    let bytesSent = this.closedBytesSent
    let bufferedBytes = 0
    if (clients !== undefined) {
      for (const socket of clients as Iterable<ReliableSocket>) {
        if (socket[kRoute] === undefined) continue
        bytesReceived += socket._socket.bytesRead - socket[kBytesReadAtOpen]
        bytesSent += socket._socket.bytesWritten - socket[kBytesWrittenAtOpen]
        bufferedBytes += socket.bufferedAmount
      }
    }
    return {
      connections: { active: this.active, peak: this.peak, opened, closed: opened - this.active, rejected: this.rejected },
      heartbeat: { pingsSent: this.pingsSent, pongsReceived: this.pongsReceived, timeouts: this.timeouts, latencyMs: this.latencyPercentiles() },
      messages: { received, sent, dropped: this.dropped, invalid: this.invalid },
      bytes: { received: bytesReceived, sent: bytesSent },
      backpressure: { events: this.backpressureEvents, bufferedBytes, slowConsumersClosed: this.slowConsumersClosed },
      closeCodes: { ...this.closeCodes },
      limits: { ...this.limits },
      sessions: { ...this.sessions },
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

function round (ms: number): number {
  return Math.round(ms * 1000) / 1000
}
