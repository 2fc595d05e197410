import type { Counter, Gauge, Histogram } from 'prom-client'
import { FST_RELIABLE_WS_METRICS_CONFLICT } from '../core/errors'
import type { MetricsSettings } from '../core/options'
import type { CompressionCounters, Metrics, RouteCounters } from '../core/shapes'
import type { PromClient } from './prom-client-loader'
import type { StatsCollector } from './stats'
import { bytesReceived, bytesSent, forEachReliableSocket } from './stats'
import { kCompressFrom, kRoute } from '../core/symbols'

// Heartbeat round trips: a LAN answers in well under a millisecond, a mobile peer in seconds.
const RTT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
// Connection lifetimes: a failed page load, a visit, a working day.
const DURATION_BUCKETS = [1, 10, 60, 300, 900, 1800, 3600, 14_400, 43_200, 86_400]

interface Live { received: number, sent: number, buffered: number }

// Hands a scrape one series' value: labelled, or (null) the metric's only series.
type Emit = (labels: Record<string, string> | null, value: number) => void

/** One metric: its name (after the prefix), help and type, and how a scrape reads its series. */
interface MetricRow {
  readonly name: string
  readonly help: string
  readonly type: 'counter' | 'gauge' | 'histogram'
  // None for a figure of the whole instance.
  readonly labels?: string[]
  // Histograms are observed as things happen instead.
  readonly read?: (emit: Emit) => void
  readonly buckets?: number[]
}

/**
 * Prometheus metrics read from the instance's StatsCollector at scrape time
 * (prom-client's `collect`), so they agree with wsStats by construction and
 * cost nothing on the hot paths; only the two histograms are observed as
 * things happen. Every series but rejections, sessions and limits is labelled by
 * the declared route path, bounded by the app's routes.
 */
export function createMetrics (
  client: PromClient,
  settings: MetricsSettings,
  stats: StatsCollector,
  clients: () => ReadonlySet<unknown> | undefined
): Metrics {
  const registry = settings.registry ?? client.register
  const route = ['route']
  const sessions = stats.sessions

  // Live figures of open sockets, grouped by route: bytes and buffered amounts are read from the sockets themselves.
  function live (): Map<RouteCounters, Live> {
    const byRoute = new Map<RouteCounters, Live>()
    forEachReliableSocket(clients(), (socket) => {
      const counters = socket[kRoute]!.counters
      let sums = byRoute.get(counters)
      if (sums === undefined) byRoute.set(counters, sums = { received: 0, sent: 0, buffered: 0 })
      sums.received += bytesReceived(socket)
      sums.sent += bytesSent(socket)
      sums.buffered += socket.bufferedAmount
    })
    return byRoute
  }

  // A series per declared route, read from the route's counters (and, when asked, the live figures of its sockets).
  function perRoute (read: (counters: RouteCounters, live: Live | undefined) => number, needsLive = false): (emit: Emit) => void {
    return (emit) => {
      const sums = needsLive ? live() : undefined
      for (const [url, counters] of stats.routes) emit({ route: url }, read(counters, sums?.get(counters)))
    }
  }

  const direction = ['direction']
  function perDirection (read: (counters: CompressionCounters['sent']) => number): (emit: Emit) => void {
    return (emit) => {
      emit({ direction: 'sent' }, read(stats.compression.sent))
      emit({ direction: 'received' }, read(stats.compression.received))
    }
  }

  const rows: MetricRow[] = [
    { name: 'connections_active', help: 'Reliable websockets open now', type: 'gauge', labels: route, read: perRoute((c) => c.active) },
    { name: 'buffered_bytes', help: "Bytes queued for sending on open reliable websockets (ws's bufferedAmount)", type: 'gauge', labels: route, read: perRoute((_counters, l) => l?.buffered ?? 0, true) },
    { name: 'connections_opened_total', help: 'Reliable websockets opened', type: 'counter', labels: route, read: perRoute((c) => c.opened) },
    {
      name: 'connections_closed_total',
      help: 'Reliable websockets closed, by close code (3000-3999 and 4000-4999 grouped) and cause',
      type: 'counter',
      labels: ['route', 'code', 'cause'],
      read (emit) {
        for (const [url, counters] of stats.routes) {
          for (const [cause, codes] of Object.entries(counters.closes)) {
            for (const [code, count] of Object.entries(codes)) emit({ route: url, code: closeCodeLabel(Number(code)), cause }, count)
          }
        }
      }
    },
    { name: 'connections_rejected_total', help: 'Upgrade requests answered over HTTP instead of upgraded', type: 'counter', read: (emit) => emit(null, stats.rejected) },
    { name: 'heartbeat_timeouts_total', help: 'Peers terminated for missing a heartbeat', type: 'counter', labels: route, read: perRoute((c) => c.timeouts) },
    { name: 'messages_received_total', help: 'Messages received from peers', type: 'counter', labels: route, read: perRoute((c) => c.messagesReceived) },
    { name: 'messages_sent_total', help: 'Messages accepted by send', type: 'counter', labels: route, read: perRoute((c) => c.messagesSent) },
    { name: 'received_bytes_total', help: 'Bytes received on the wire after the handshake', type: 'counter', labels: route, read: perRoute((c, l) => c.closedBytesReceived + (l?.received ?? 0), true) },
    { name: 'sent_bytes_total', help: 'Bytes sent on the wire after the handshake', type: 'counter', labels: route, read: perRoute((c, l) => c.closedBytesSent + (l?.sent ?? 0), true) },
    { name: 'messages_dropped_total', help: 'Sends refused by the backpressure policy', type: 'counter', labels: route, read: perRoute((c) => c.dropped) },
    { name: 'messages_invalid_total', help: 'Messages answered with an Invalid message error', type: 'counter', labels: route, read: perRoute((c) => c.invalid) },
    { name: 'ping_rtt_seconds', help: 'Heartbeat ping to pong round trip', type: 'histogram', labels: route, buckets: RTT_BUCKETS },
    { name: 'connection_duration_seconds', help: 'How long reliable websockets stayed open', type: 'histogram', labels: route, buckets: DURATION_BUCKETS },
    { name: 'sessions_active', help: 'Sessions alive: connected, or waiting for their client', type: 'gauge', read: (emit) => emit(null, sessions.active) },
    { name: 'sessions_resumed_total', help: 'Times a client resumed its session', type: 'counter', read: (emit) => emit(null, sessions.resumed) },
    { name: 'sessions_expired_total', help: 'Sessions whose client did not come back within ttlMs', type: 'counter', read: (emit) => emit(null, sessions.expired) },
    { name: 'sessions_overflowed_total', help: 'Sessions ended because their client fell too far behind', type: 'counter', read: (emit) => emit(null, sessions.overflowed) },
    { name: 'sessions_replayed_messages_total', help: 'Messages sent again on resume', type: 'counter', read: (emit) => emit(null, sessions.replayed) },
    {
      // One series per field of wsStats.limits: the label values are the plugin's own, a fixed set.
      name: 'limits_total',
      help: 'Upgrades refused, connections and sockets closed, messages refused by the limits, by limit (the fields of wsStats.limits)',
      type: 'counter',
      labels: ['limit'],
      read (emit) {
        for (const [limit, count] of Object.entries(stats.limits)) emit({ limit }, count)
      }
    },
    { name: 'sessions_resume_refused_total', help: 'Resume requests that began a new session instead', type: 'counter', read: (emit) => emit(null, sessions.resumeRefused) },
    { name: 'sessions_evicted_total', help: 'Away sessions ended to make room under the session limits', type: 'counter', read: (emit) => emit(null, sessions.evicted) },
    { name: 'sessions_rejected_total', help: 'Connections closed with 1013 because every session at a cap was connected', type: 'counter', read: (emit) => emit(null, sessions.rejected) },
    { name: 'sessions_buffered_bytes', help: 'Bytes all sessions keep unacknowledged, as counted against sessionBufferBytes', type: 'gauge', read: (emit) => emit(null, sessions.bufferedBytes) },
    {
      name: 'compression_sockets',
      help: 'Open reliable websockets that negotiated permessage-deflate',
      type: 'gauge',
      read (emit) {
        let count = 0
        forEachReliableSocket(clients(), (socket) => { if (socket[kCompressFrom] !== Infinity) count++ })
        emit(null, count)
      }
    },
    { name: 'topics', help: 'Topics with at least one subscriber in this instance', type: 'gauge', read: (emit) => emit(null, stats.topics.topics) },
    { name: 'subscriptions', help: 'Subscriptions of sockets and sessions to topics', type: 'gauge', read: (emit) => emit(null, stats.topics.subscriptions) },
    { name: 'published_total', help: 'Messages published by this instance and taken by the broker', type: 'counter', read: (emit) => emit(null, stats.topics.published) },
    { name: 'delivered_total', help: 'Published messages handed to subscribers', type: 'counter', read: (emit) => emit(null, stats.topics.delivered) },
    { name: 'topic_dropped_total', help: 'Published messages refused by a subscriber\'s backpressure policy', type: 'counter', read: (emit) => emit(null, stats.topics.dropped) },
    { name: 'compression_messages_total', help: 'Messages sent compressed, and compressed messages received', type: 'counter', labels: direction, read: perDirection((d) => d.messages) },
    { name: 'compression_bytes_in_total', help: 'Payload bytes into zlib: before compression (sent), on the wire (received)', type: 'counter', labels: direction, read: perDirection((d) => d.bytesIn) },
    { name: 'compression_bytes_out_total', help: 'Payload bytes out of zlib: on the wire (sent), inflated (received)', type: 'counter', labels: direction, read: perDirection((d) => d.bytesOut) }
  ]

  const names = rows.map((row) => settings.prefix + row.name)
  // Checked before any is registered: a conflict leaves the registry as it was.
  for (const name of names) {
    if (registry.getSingleMetric(name) !== undefined) throw new FST_RELIABLE_WS_METRICS_CONFLICT(name)
  }
  const registers = [registry as import('prom-client').Registry]
  const histograms: Histogram[] = []
  rows.forEach((row, i) => {
    const { help, read } = row
    const options = { name: names[i], help, labelNames: row.labels ?? [], registers }
    if (row.type === 'histogram') {
      histograms.push(new client.Histogram({ ...options, buckets: row.buckets! }))
    } else if (row.type === 'counter') {
      // Reset and refilled at each scrape.
      new client.Counter({
        ...options,
        collect (this: Counter) {
          this.reset()
          read!((labels, value) => labels === null ? this.inc(value) : this.inc(labels, value))
        }
      })
    } else {
      new client.Gauge({
        ...options,
        collect (this: Gauge) {
          read!((labels, value) => labels === null ? this.set(value) : this.set(labels, value))
        }
      })
    }
  })
  const [rtt, duration] = histograms

  return {
    forRoute (url) {
      // Zeroed, so a route's series exist before its first observation.
      rtt.zero({ route: url })
      duration.zero({ route: url })
      return { rtt: rtt.labels(url), duration: duration.labels(url) }
    },
    unregister () {
      for (const name of names) registry.removeSingleMetric(name)
    }
  }
}

/**
 * ws reports only the codes of RFC 6455 (and 1005, 1006) below 3000: each is its own label. Codes of
 * registered libraries (3000-3999) and of applications (4000-4999) are grouped, so peers cannot grow the series.
 */
function closeCodeLabel (code: number): string {
  if (code < 3000) return String(code)
  return code < 4000 ? '3000-3999' : '4000-4999'
}
