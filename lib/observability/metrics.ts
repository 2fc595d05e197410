import type { Counter, Gauge, Histogram } from 'prom-client'
import { FST_RELIABLE_WS_METRICS_CONFLICT } from '../core/errors'
import type { MetricsSettings } from '../core/options'
import type { Metrics, RouteCounters } from '../core/shapes'
import type { PromClient } from './prom-client-loader'
import type { StatsCollector } from './stats'
import { bytesReceived, bytesSent, forEachReliableSocket } from './stats'
import { kRoute } from '../core/symbols'

// Heartbeat round trips: a LAN answers in well under a millisecond, a mobile peer in seconds.
const RTT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
// Connection lifetimes: a failed page load, a visit, a working day.
const DURATION_BUCKETS = [1, 10, 60, 300, 900, 1800, 3600, 14_400, 43_200, 86_400]

interface Live { received: number, sent: number, buffered: number }

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
  const p = settings.prefix
  const names = ['connections_active', 'buffered_bytes', 'connections_opened_total', 'connections_closed_total',
    'connections_rejected_total', 'heartbeat_timeouts_total', 'messages_received_total', 'messages_sent_total',
    'received_bytes_total', 'sent_bytes_total', 'messages_dropped_total', 'messages_invalid_total',
    'ping_rtt_seconds', 'connection_duration_seconds', 'sessions_active', 'sessions_resumed_total',
    'sessions_expired_total', 'sessions_overflowed_total', 'sessions_replayed_messages_total', 'limits_total',
    'sessions_resume_refused_total', 'sessions_evicted_total', 'sessions_rejected_total', 'sessions_buffered_bytes'].map((name) => p + name)
  for (const name of names) {
    if (registry.getSingleMetric(name) !== undefined) throw new FST_RELIABLE_WS_METRICS_CONFLICT(name)
  }
  const registers = [registry as import('prom-client').Registry]
  const route = ['route']

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

  // A counter whose value per route is read from the route's counters; reset and refilled at each scrape.
  function perRouteCounter (name: string, help: string, read: (counters: RouteCounters, live: Live | undefined) => number, needsLive = false): void {
    new client.Counter({
      name,
      help,
      labelNames: route,
      registers,
      collect (this: Counter) {
        const sums = needsLive ? live() : undefined
        this.reset()
        for (const [url, counters] of stats.routes) this.inc({ route: url }, read(counters, sums?.get(counters)))
      }
    })
  }

  new client.Gauge({
    name: names[0],
    help: 'Reliable websockets open now',
    labelNames: route,
    registers,
    collect (this: Gauge) {
      for (const [url, counters] of stats.routes) this.set({ route: url }, counters.active)
    }
  })
  new client.Gauge({
    name: names[1],
    help: "Bytes queued for sending on open reliable websockets (ws's bufferedAmount)",
    labelNames: route,
    registers,
    collect (this: Gauge) {
      const sums = live()
      for (const [url, counters] of stats.routes) this.set({ route: url }, sums.get(counters)?.buffered ?? 0)
    }
  })
  perRouteCounter(names[2], 'Reliable websockets opened', (c) => c.opened)
  new client.Counter({
    name: names[3],
    help: 'Reliable websockets closed, by close code (3000-3999 and 4000-4999 grouped) and cause',
    labelNames: ['route', 'code', 'cause'],
    registers,
    collect (this: Counter) {
      this.reset()
      for (const [url, counters] of stats.routes) {
        for (const [cause, codes] of Object.entries(counters.closes)) {
          for (const [code, count] of Object.entries(codes)) this.inc({ route: url, code: closeCodeLabel(Number(code)), cause }, count)
        }
      }
    }
  })
  // Figures of the whole instance: rejections (some have no route) and sessions.
  function instanceCounter (name: string, help: string, read: () => number): void {
    new client.Counter({
      name,
      help,
      registers,
      collect (this: Counter) {
        this.reset()
        this.inc(read())
      }
    })
  }
  instanceCounter(names[4], 'Upgrade requests answered over HTTP instead of upgraded', () => stats.rejected)
  perRouteCounter(names[5], 'Peers terminated for missing a heartbeat', (c) => c.timeouts)
  perRouteCounter(names[6], 'Messages received from peers', (c) => c.messagesReceived)
  perRouteCounter(names[7], 'Messages accepted by send', (c) => c.messagesSent)
  perRouteCounter(names[8], 'Bytes received on the wire after the handshake', (c, l) => c.closedBytesReceived + (l?.received ?? 0), true)
  perRouteCounter(names[9], 'Bytes sent on the wire after the handshake', (c, l) => c.closedBytesSent + (l?.sent ?? 0), true)
  perRouteCounter(names[10], 'Sends refused by the backpressure policy', (c) => c.dropped)
  perRouteCounter(names[11], 'Messages answered with an Invalid message error', (c) => c.invalid)
  const rtt: Histogram = new client.Histogram({ name: names[12], help: 'Heartbeat ping to pong round trip', labelNames: route, buckets: RTT_BUCKETS, registers })
  const duration: Histogram = new client.Histogram({ name: names[13], help: 'How long reliable websockets stayed open', labelNames: route, buckets: DURATION_BUCKETS, registers })
  const sessions = stats.sessions
  new client.Gauge({
    name: names[14],
    help: 'Sessions alive: connected, or waiting for their client',
    registers,
    collect (this: Gauge) {
      this.set(sessions.active)
    }
  })
  instanceCounter(names[15], 'Times a client resumed its session', () => sessions.resumed)
  instanceCounter(names[16], 'Sessions whose client did not come back within ttlMs', () => sessions.expired)
  instanceCounter(names[17], 'Sessions ended because their client fell too far behind', () => sessions.overflowed)
  instanceCounter(names[18], 'Messages sent again on resume', () => sessions.replayed)
  // One series per field of wsStats.limits: the label values are the plugin's own, a fixed set.
  const limits = stats.limits
  new client.Counter({
    name: names[19],
    help: 'Upgrades refused, connections and sockets closed, messages refused by the limits, by limit (the fields of wsStats.limits)',
    labelNames: ['limit'],
    registers,
    collect (this: Counter) {
      this.reset()
      for (const [limit, count] of Object.entries(limits)) this.inc({ limit }, count)
    }
  })
  instanceCounter(names[20], 'Resume requests that began a new session instead', () => sessions.resumeRefused)
  instanceCounter(names[21], 'Away sessions ended to make room under the session limits', () => sessions.evicted)
  instanceCounter(names[22], 'Connections closed with 1013 because every session at a cap was connected', () => sessions.rejected)
  new client.Gauge({
    name: names[23],
    help: 'Bytes all sessions keep unacknowledged, as counted against sessionBufferBytes',
    registers,
    collect (this: Gauge) {
      this.set(sessions.bufferedBytes)
    }
  })

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
