import { performance } from 'node:perf_hooks'
import type { PeerWarnings, ReliableSocket, Route } from '../core/shapes'
import { socketLog } from '../core/socket-errors'

const WINDOW_MS = 1000

/**
 * Warnings about peers (heartbeat timeouts, backpressure) for one Fastify
 * instance: at most `perSecond` lines in each second, so that a storm (a
 * network partition dropping thousands of peers at once) cannot flood the
 * log. Lines held back are counted, and the next line written carries the
 * count. Decided when a warning comes up: no timer.
 */
export class LogRateLimiter implements PeerWarnings {
  private windowStart = -Infinity
  private written = 0
  private suppressed = 0

  constructor (private readonly perSecond: number) {}

  warn (socket: ReliableSocket, route: Route, fields: Record<string, unknown>, message: string): void {
    const now = performance.now()
    if (now - this.windowStart >= WINDOW_MS) {
      this.windowStart = now
      this.written = 0
    }
    if (this.written === this.perSecond) {
      this.suppressed++
      return
    }
    this.written++
    fields.route = route.url
    if (this.suppressed !== 0) {
      fields.suppressed = this.suppressed
      this.suppressed = 0
    }
    socketLog(socket).warn(fields, message)
  }
}
