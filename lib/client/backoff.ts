/** How long to wait between reconnection attempts. */
export interface BackoffSettings {
  /** The ceiling of the first delay. */
  initialDelayMs: number
  /** No delay ever exceeds this. */
  maxDelayMs: number
  /** The ceiling grows by this factor with each attempt. */
  factor: number
  /**
   * `'full'`: a delay anywhere from 0 to the ceiling; `'equal'`: from half the
   * ceiling to the ceiling; `'none'`: the ceiling itself (every client that
   * lost the same server then comes back at the same moment).
   */
  jitter: 'full' | 'equal' | 'none'
  /** Attempts in a row before giving up. */
  maxRetries: number
  /** A connection that stayed up this long resets the attempt count. */
  minUptimeMs: number
  /**
   * Failed upgrades in a row (refused, unreachable, timed out) after which
   * every delay is drawn under `slowDelayMs` instead, until an upgrade
   * succeeds. A browser is not shown why an upgrade failed: a refused page
   * would otherwise keep asking at the backoff's pace while it stays open.
   */
  slowAfter: number
  /** The ceiling of the delays after `slowAfter` failed upgrades in a row. */
  slowDelayMs: number
  /** The random source, [0, 1): `Math.random` unless a test seeds one. */
  random: () => number
}

/**
 * Exponential backoff with jitter applied after the cap: with full jitter a
 * delay is `random(0, min(maxDelayMs, initialDelayMs × factor^attempt))`, so
 * clients that failed together spread evenly under the cap instead of
 * piling up at it (as when jitter is added first and the sum clamped).
 */
export class Backoff {
  /** Attempts since the last connection that stayed up `minUptimeMs`. */
  attempt = 0
  /** Attempts since the last one whose upgrade succeeded. */
  notUpgraded = 0

  constructor (private readonly settings: BackoffSettings) {}

  get exhausted (): boolean {
    return this.attempt >= this.settings.maxRetries
  }

  /** The delay before the next attempt, which it counts. */
  next (): number {
    const { initialDelayMs, maxDelayMs, factor, jitter, random, slowAfter, slowDelayMs } = this.settings
    // factor^attempt reaches Infinity after enough attempts; min() keeps the cap.
    const ceiling = this.notUpgraded >= slowAfter ? slowDelayMs : Math.min(maxDelayMs, initialDelayMs * factor ** this.attempt)
    this.attempt++
    if (jitter === 'none') return ceiling
    if (jitter === 'equal') return ceiling / 2 + random() * ceiling / 2
    return random() * ceiling
  }

  /** Called when a connection ends: one that lasted `minUptimeMs` starts the count again. */
  connectionEnded (uptimeMs: number): void {
    if (uptimeMs >= this.settings.minUptimeMs) this.attempt = 0
  }

  /** Called as an attempt begins: it counts as a failed upgrade until upgraded() says otherwise. */
  attemptStarted (): void {
    this.notUpgraded++
  }

  /** The server accepted the upgrade: whatever happens next, this client was not refused. */
  upgraded (): void {
    this.notUpgraded = 0
  }
}
