import type { IncomingMessage } from 'node:http'
import type { StatsCollector } from './stats'

/**
 * The health route's answer: 200 while serving, 503 from the moment shutdown starts, and (with `checkBroker`)
 * while the broker cannot take publishes.
 */
export function healthResponse (stats: StatsCollector, clients: ReadonlySet<unknown> | undefined, checkBroker: boolean): { statusCode: number, body: object } {
  const snapshot = stats.snapshot(clients)
  if (snapshot.draining) return { statusCode: 503, body: { status: 'draining', ...snapshot } }
  if (checkBroker && snapshot.broker.state !== 'up') return { statusCode: 503, body: { status: 'broker-' + snapshot.broker.state, ...snapshot } }
  return { statusCode: 200, body: { status: 'ok', ...snapshot } }
}

export function isHealthRequest (request: IncomingMessage, path: string): boolean {
  if (request.method !== 'GET') return false
  const url = request.url as string // always set on a server's requests
  return url === path || (url.startsWith(path) && url.charCodeAt(path.length) === 63 /* ? */)
}
