import type { FastifyBaseLogger } from 'fastify'
import type { ValidateFunction } from 'ajv'
import type { ConnectionLimiter } from '../limits/connection-limiter'
import type { Metrics, RouteObservers } from '../observability/metrics'
import type { PendingConnection } from '../limits/handshake-guard'
import type { BackpressureSettings, HeartbeatSettings, LimitSettings, PluginSettings, ResumeSettings } from './options'
import type { MessageRate } from '../limits/rate-limiter'
import type { Scheduler } from '../timing/scheduler'
import type { RouteCounters, StatsCollector } from '../observability/stats'
import type { Session } from '../sessions/session'
import type { SessionRegistry } from '../sessions/session-registry'
import type { ReliableSocket } from '../wiring/reliable-socket'
import type { Warnings } from '../observability/log-rate-limiter'

/** Everything one Fastify instance's reliable sockets share. */
export interface Context {
  readonly settings: PluginSettings
  readonly stats: StatsCollector
  // Open sockets (heartbeat, idle timeout), connections still sending their request (handshake timeout)
  // and sessions waiting for their client to come back (ttlMs).
  readonly scheduler: Scheduler<ReliableSocket | PendingConnection | Session>
  readonly connections: ConnectionLimiter
  readonly sessions: SessionRegistry
  readonly log: FastifyBaseLogger
  readonly warnings: Warnings
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
}
