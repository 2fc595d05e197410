// Limits: what a peer may cost (connections, rates, buffered bytes, origins, handshakes, pings) and what happens past it.
import type { FastifyReply, preHandlerHookHandler } from 'fastify'
import type { Connections, Context, ReliableSocket, Route } from '../core/shapes'
import { kIp } from '../core/symbols'

// Seconds a refused client is asked to wait: long enough that a reconnect loop does not hammer a full server.
export const RETRY_AFTER_S = '5'

/**
 * Counts the open reliable sockets of each client address, for
 * maxConnectionsPerIp. Only kept when some route sets that limit; an
 * address leaves the map with its last socket, so the map never holds more
 * entries than there are open sockets.
 */
export class ConnectionLimiter implements Connections {
  private readonly perIp = new Map<string, number>()
  private trackIps = false

  /** Called for each route as it is declared (all are declared before the first socket opens). */
  useLimits (route: Route): void {
    if (route.limits.maxConnectionsPerIp !== Infinity) this.trackIps = true
  }

  opened (ip: string): void {
    if (!this.trackIps) return
    this.perIp.set(ip, (this.perIp.get(ip) ?? 0) + 1)
  }

  closed (socket: ReliableSocket): void {
    if (!this.trackIps) return
    const ip = socket[kIp]
    const count = this.perIp.get(ip)! - 1
    if (count === 0) this.perIp.delete(ip)
    else this.perIp.set(ip, count)
  }

  /** How many addresses hold open sockets now. */
  get addresses (): number {
    return this.perIp.size
  }

  countOf (ip: string): number {
    return this.perIp.get(ip) ?? 0
  }
}

/**
 * The route's last preHandler. From it to the upgrade nothing is
 * asynchronous, so the counts it reads are the counts the new socket joins:
 * concurrent upgrades cannot overshoot a limit. (Running last also means an
 * authentication hook has already answered 401 to those it refuses.)
 */
export function createCapacityCheck (ctx: Context, route: Route): preHandlerHookHandler {
  const { maxConnections, maxConnectionsPerIp } = route.limits
  return function checkCapacity (request, reply, done) {
    if ((request as { ws?: boolean }).ws !== true) return done()
    const limits = ctx.stats.limits
    if (ctx.stats.active >= maxConnections) {
      limits.maxConnectionsRejected++
      return refuse(reply, 503, 'Service Unavailable', 'Too many connections')
    }
    if (ctx.connections.countOf(request.ip) >= maxConnectionsPerIp) {
      limits.perIpRejected++
      return refuse(reply, 429, 'Too Many Requests', 'Too many connections from this address')
    }
    done()
  }
}

function refuse (reply: FastifyReply, statusCode: number, error: string, message: string): void {
  reply.code(statusCode).header('retry-after', RETRY_AFTER_S).send({ statusCode, error, message })
}
