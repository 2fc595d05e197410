import type { FastifyRequest, onResponseHookHandler, RouteOptions } from 'fastify'
import type { Context, Route, ReliableSocket } from '../core/shapes'
import { connect, keepUpgradeResponse, openConnection } from './connection'
import { createCapacityCheck } from '../limits/connection-limiter'
import { compileMessageSchema, createAjv } from '../messages/json-messages'
import { resolveRouteSettings } from '../core/options'
import { createOriginCheck } from '../limits/origin-policy'
import { messageRate } from '../limits/rate-limiter'
import { offerProtocol } from '../messages/subprotocol'
import { createCompressionOffer, deflateOffer } from '../messages/compression'
import type Ajv from 'ajv'

type Handler = (this: unknown, socket: ReliableSocket, request: FastifyRequest) => unknown

/**
 * The onRoute hook. It runs before @fastify/websocket's own (which captures
 * the handler), so it can wrap the route's websocket handler: the wrapper
 * makes the socket reliable, then calls the application's handler unchanged.
 */
export function createRouteDecorator (ctx: Context): (routeOptions: RouteOptions) => void {
  let ajv: Ajv | null = null
  return function decorateRoute (routeOptions) {
    if (routeOptions.websocket !== true && routeOptions.wsHandler === undefined) return
    // @fastify/websocket answers HEAD (including the copy of a GET route) with 404.
    const methods = Array.isArray(routeOptions.method) ? routeOptions.method : [routeOptions.method]
    if (methods.every((method) => method === 'HEAD')) return
    // Left as they are for @fastify/websocket to refuse when the route is declared.
    if (methods.some((method) => method !== 'GET' && method !== 'HEAD')) return
    const handler = routeOptions.websocket === true ? routeOptions.handler : routeOptions.wsHandler
    if (typeof handler !== 'function') return
    const config = (routeOptions.config as { reliable?: unknown } | undefined)?.reliable
    if (config === false) return

    const url = routeOptions.url
    const settings = resolveRouteSettings(ctx.settings, config as any, url)
    if (settings.heartbeat !== false) ctx.scheduler.usePeriod(Math.min(settings.heartbeat.intervalMs, settings.heartbeat.timeoutMs))
    const limits = settings.limits
    if (limits.idleTimeoutMs !== Infinity) ctx.scheduler.usePeriod(limits.idleTimeoutMs)
    if (limits.fragmentTimeoutMs !== Infinity) ctx.scheduler.usePeriod(limits.fragmentTimeoutMs)
    if (settings.resume !== false) ctx.scheduler.usePeriod(settings.resume.ttlMs)
    const rate = messageRate(limits)
    let validate = null
    if (settings.messageSchema !== null) {
      ajv ??= createAjv()
      validate = compileMessageSchema(ajv, settings.messageSchema, url)
    }
    const deflate = deflateOffer(settings.compression)
    const route: Route = {
      ctx,
      url,
      heartbeat: settings.heartbeat,
      backpressure: settings.backpressure,
      json: settings.json,
      validate,
      limits,
      rate,
      gateMessages: rate !== null || limits.idleTimeoutMs !== Infinity,
      resume: settings.resume,
      counters: ctx.stats.route(url),
      observers: ctx.metrics === null ? null : ctx.metrics.forRoute(url),
      deflate
    }
    ctx.connections.useLimits(route)

    if (routeOptions.websocket === true) {
      routeOptions.handler = wrap(route, handler as unknown as Handler) as any
    } else {
      routeOptions.wsHandler = wrap(route, handler as unknown as Handler) as any
    }
    const countRejected: onResponseHookHandler = function (request, _reply, done) {
      // Runs only when an upgrade request was answered over HTTP instead of upgraded.
      if ((request as { ws?: boolean }).ws === true) ctx.stats.rejected++
      done()
    }
    routeOptions.onResponse = [routeOptions.onResponse ?? [], countRejected].flat()
    // Checks cost nothing on routes without the limit they enforce.
    if (settings.allowedOrigins !== null) {
      routeOptions.onRequest = [routeOptions.onRequest ?? [], createOriginCheck(ctx, settings.allowedOrigins)].flat()
    }
    // The capacity check comes last, so concurrent upgrades cannot overshoot the limit.
    const preHandlers = [offerProtocol, keepUpgradeResponse]
    if (deflate !== null) preHandlers.push(createCompressionOffer(deflate))
    if (limits.maxConnections !== Infinity || limits.maxConnectionsPerIp !== Infinity) preHandlers.push(createCapacityCheck(ctx, route))
    routeOptions.preHandler = [routeOptions.preHandler ?? [], preHandlers].flat()
  }
}

function wrap (route: Route, handler: Handler): Handler {
  return function reliableHandler (socket, request) {
    openConnection(socket, route, request)
    return connect(socket, request, handler, this)
  }
}
