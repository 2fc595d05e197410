import type { FastifyBaseLogger } from 'fastify'
import type { ValidateFunction } from 'ajv'
import type fastifyReliableWs = require('../types/index')
import type { BackpressureSettings, HeartbeatSettings, PluginSettings } from './options'
import type { Scheduler } from './scheduler'
import type { StatsCollector } from './stats'
import type { ReliableSocket } from './reliable-socket'

/** Everything one Fastify instance's reliable sockets share. */
export interface Context {
  readonly settings: PluginSettings
  readonly stats: StatsCollector
  readonly scheduler: Scheduler<ReliableSocket>
  readonly log: FastifyBaseLogger
}

/** A `websocket: true` route's resolved policy, shared by all of its sockets. */
export interface Route {
  readonly ctx: Context
  readonly url: string
  readonly heartbeat: HeartbeatSettings | false
  readonly backpressure: BackpressureSettings
  readonly json: boolean
  readonly validate: ValidateFunction | null
  readonly counters: fastifyReliableWs.RouteStats
}
