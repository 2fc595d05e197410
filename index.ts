import type { Server } from 'node:http'
import { Socket } from 'node:net'
import type { FastifyInstance } from 'fastify'
import { ConnectionLimiter } from './lib/limits/connection-limiter'
import type { Context, PendingConnection, ReliableSocket } from './lib/core/shapes'
import { onSocketDue } from './lib/timing/deadlines'
import { createErrorHandler } from './lib/wiring/error-handler'
import { FST_RELIABLE_WS_ALREADY_REGISTERED } from './lib/core/errors'
import { HandshakeGuard } from './lib/limits/handshake-guard'
import { healthResponse } from './lib/observability/health'
import { createMetrics } from './lib/observability/metrics'
import { loadPromClient } from './lib/observability/prom-client-loader'
import { resolvePluginSettings } from './lib/core/options'
import { createSocketClass } from './lib/wiring/reliable-socket'
import { createRouteDecorator } from './lib/wiring/route-decorator'
import { Scheduler } from './lib/timing/scheduler'
import { createShutdown } from './lib/wiring/shutdown'
import { Session } from './lib/sessions/session'
import { SessionRegistry } from './lib/sessions/session-registry'
import { MemorySessionStore } from './lib/sessions/session-store'
import { openRedisSessionStore, RedisSessionStore } from './lib/sessions/redis-session-store'
import { StatsCollector } from './lib/observability/stats'
import { MemoryBroker } from './lib/topics/memory-broker'
import { createRedisBroker } from './lib/topics/redis-broker'
import type { RedisOption } from './lib/redis/redis-connection'
import type { Broker } from './lib/topics/broker'
import { TopicHub } from './lib/topics/topic-hub'
import { toJSONText } from './lib/messages/json-messages'
import { createProtocolHandler } from './lib/messages/subprotocol'
import { LogRateLimiter } from './lib/observability/log-rate-limiter'
import { checkInternals, negotiateDeflatePerRequest, noteErrorListeners } from './lib/core/ws-internals'
import { deflateFor } from './lib/messages/compression'
import { DEFAULTS } from './lib/core/options'
import fp from 'fastify-plugin'
import fastifyWebsocket from '@fastify/websocket'
import WebSocket from 'ws'
import type fastifyReliableWsTypes = require('./types/index')

// Named in the error that a ws release without the internals the plugin relies on gets.
const { version: wsVersion } = require('ws/package.json') as { version: string }

function fastifyReliableWs (fastify: FastifyInstance, options: fastifyReliableWsTypes.FastifyReliableWsOptions, done: (err?: Error) => void): void {
  if (fastify.hasDecorator('websocketServer')) return done(new FST_RELIABLE_WS_ALREADY_REGISTERED())
  let settings
  try {
    settings = resolvePluginSettings(options)
  } catch (err) {
    return done(err as Error)
  }

  const { options: wsOptions, errorHandler, ...rest } = settings.websocket
  // The server @fastify/websocket takes upgrades from: its `server` option moves them off Fastify's own, whose
  // upgrade requests must then stay plain HTTP requests (an 'upgrade' listener there would leave them unanswered).
  const upgradeServer = (wsOptions!.server as Server | undefined) || fastify.server
  const SocketClass = createSocketClass((wsOptions!.WebSocket as typeof WebSocket | undefined) ?? WebSocket)
  // Before anything registers itself anywhere (metrics in a registry): a refused registration leaves nothing behind.
  try {
    checkInternals(SocketClass, wsVersion, upgradeServer, wsOptions!, (settings.compression || DEFAULTS.compression).concurrencyLimit)
  } catch (err) {
    return done(err as Error)
  }

  // Before anything registers itself anywhere: a missing ioredis refuses the registration. Nothing connects until ready.
  let broker: Broker
  // Sessions go where topics go: to Redis with the `redis` option, unless the application says where (`sessionStore`).
  let redisSessions: ReturnType<typeof openRedisSessionStore> | null = null
  try {
    broker = settings.redis === null ? new MemoryBroker() : createRedisBroker(settings.redis as RedisOption, settings.topics, fastify.log)
    if (settings.sessionsInRedis) redisSessions = openRedisSessionStore(settings.redis as RedisOption, settings.topics.keyPrefix)
  } catch (err) {
    return done(err as Error)
  }

  const stats = new StatsCollector()
  let metrics = null
  if (settings.metrics !== null) {
    try {
      metrics = createMetrics(loadPromClient(), settings.metrics, stats, () => fastify.websocketServer?.clients)
    } catch (err) {
      return done(err as Error)
    }
  }
  const scheduler = new Scheduler<ReliableSocket | PendingConnection | Session>((entry, now) => {
    if (entry instanceof Socket) handshakes.onDue(entry)
    else if (entry instanceof Session) sessions.due(entry, now)
    else onSocketDue(entry, now)
  })
  // A store of the application's, or Redis, outlives the instance (the default, in its memory, does not): sessions are
  // handed over.
  const store = settings.sessionStore ?? redisSessions?.store ?? null
  const sessions: SessionRegistry = new SessionRegistry(stats, scheduler, store ?? new MemorySessionStore(), settings.sessionLimits, fastify.log,
    store !== null, {
      sessionEnded: (session) => topics.sessionEnded(session),
      positions: (session) => topics.positions(session),
      rejoin: (session, positions) => topics.rejoin(session, positions)
    }, settings.resume === false ? DEFAULTS.resume : settings.resume)
  const topics: TopicHub = new TopicHub(broker, stats, sessions, settings.topics, fastify.log)
  const ctx: Context = {
    settings,
    stats,
    scheduler,
    connections: new ConnectionLimiter(),
    sessions,
    topics,
    log: fastify.log,
    warnings: new LogRateLimiter(settings.logging.warningsPerSecond),
    metrics
  }
  const handshakes = new HandshakeGuard(ctx, upgradeServer)
  const shutdown = createShutdown(ctx, stats, handshakes)

  // Added before @fastify/websocket is registered, so it sees route handlers first.
  fastify.addHook('onRoute', createRouteDecorator(ctx))
  fastify.register(fastifyWebsocket, {
    ...rest,
    options: {
      ...wsOptions,
      WebSocket: SocketClass,
      handleProtocols: createProtocolHandler(wsOptions!.handleProtocols)
    },
    errorHandler: createErrorHandler(errorHandler),
    preClose: shutdown.preClose
  })
  fastify.addHook('onReady', function watchHandshakes (done) {
    handshakes.watch(this.websocketServer)
    negotiateDeflatePerRequest(this.websocketServer, deflateFor)
    this.websocketServer.on('connection', noteErrorListeners)
    Promise.all([topics.start(), redisSessions?.start(), sessions.start()]).then(() => done(), done)
  })

  fastify.decorate('wsStats', {
    getter (this: FastifyInstance) {
      return stats.snapshot(this.websocketServer?.clients)
    }
  })
  fastify.decorate('wsSessions', sessions)
  fastify.decorate('wsPublish', function wsPublish (topic: string, data: string | Buffer | ArrayBuffer | ArrayBufferView, options?: { binary?: boolean }) {
    return topics.publish(topic, data, options?.binary)
  })
  fastify.decorate('wsPublishJSON', function wsPublishJSON (topic: string, value: unknown) {
    let text
    try {
      text = toJSONText(value)
    } catch (err) {
      return Promise.reject(err)
    }
    return topics.publish(topic, text, false)
  })
  fastify.decorate('wsTopicStats', function wsTopicStats (topic: string) {
    return topics.topicStats(topic)
  })

  if (settings.healthPath !== null) {
    fastify.get(settings.healthPath, function health (_request, reply) {
      const { statusCode, body } = healthResponse(stats, this.websocketServer.clients, settings.topics.healthChecksBroker)
      reply.code(statusCode).send(body)
    })
  }

  // Runs once Fastify's server has closed. Closed sockets leave the wheel themselves, which disarms it; this also
  // covers a close() whose preClose never ran.
  fastify.addHook('onClose', function stopScheduler (_instance, next) {
    shutdown.finish()
    ctx.scheduler.stop()
    sessions.endAll()
    metrics?.unregister()
    Promise.all([topics.close(), sessions.stop().then(() => redisSessions?.close())]).then(() => next(), next)
  })
  done()
}

const plugin = fp(fastifyReliableWs, { fastify: '5.x', name: 'fastify-reliable-ws' }) as unknown as typeof fastifyReliableWsTypes
// For `require('fastify-reliable-ws').RedisSessionStore`; the assignment at the end names it for ES modules.
plugin.RedisSessionStore = RedisSessionStore

export = plugin
// For `import { fastifyReliableWs } from 'fastify-reliable-ws'`: Node offers an ES module the names it reads in
// assignments to module.exports, not properties set at run time (fastify-plugin sets both on the plugin). TypeScript
// emits `module.exports = plugin` after these lines, so they name the properties without setting them.
module.exports.default = plugin
module.exports.fastifyReliableWs = plugin
module.exports.RedisSessionStore = RedisSessionStore
