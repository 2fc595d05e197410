import type { FastifyRequest, onRequestHookHandler } from 'fastify'
import type { Context } from '../core/shapes'
import type { OriginPolicy } from '../core/options'

/**
 * The route's onRequest hook when it has allowedOrigins: an upgrade from a
 * page of another site (cross-site WebSocket hijacking rides on the
 * victim's cookies) is answered 403 before the handshake. Browsers always
 * send Origin with a WebSocket upgrade; a request without one is not from a
 * browser, so a list lets it through and a function decides for itself.
 */
export function createOriginCheck (ctx: Context, policy: OriginPolicy): onRequestHookHandler {
  return function checkOrigin (request, reply, done) {
    if ((request as { ws?: boolean }).ws !== true || isAllowed(policy, request)) return done()
    ctx.stats.limits.originRejected++
    reply.code(403).send({ statusCode: 403, error: 'Forbidden', message: 'Origin not allowed' })
  }
}

function isAllowed (policy: OriginPolicy, request: FastifyRequest): boolean {
  const origin = request.headers.origin
  if (typeof policy === 'function') return policy(origin, request) === true
  return origin === undefined || policy.has(origin)
}
