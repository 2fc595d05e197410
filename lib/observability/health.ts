import type { IncomingMessage } from 'node:http'
import type { StatsCollector } from './stats'

/** The health route's answer: 200 while serving, 503 from the moment shutdown starts. */
export function healthResponse (stats: StatsCollector, clients: ReadonlySet<unknown> | undefined): { statusCode: number, body: object } {
  const snapshot = stats.snapshot(clients)
  return snapshot.draining
    ? { statusCode: 503, body: { status: 'draining', ...snapshot } }
    : { statusCode: 200, body: { status: 'ok', ...snapshot } }
}

export function isHealthRequest (request: IncomingMessage, path: string): boolean {
  if (request.method !== 'GET') return false
  const url = request.url as string // always set on a server's requests
  return url === path || (url.startsWith(path) && url.charCodeAt(path.length) === 63 /* ? */)
}
