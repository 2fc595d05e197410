// Redis as the instance reaches it: two connections of the plugin's own (commands, and subscriptions), whether they
// are up, the liveness probe of the subscription, and subscribing again after a reconnection — for the topic broker
// now, and for whatever else of the plugin keeps state in Redis (docs/redis.md).
import { createIdGenerator } from '../core/ids'
import { closeConnection, connected, openConnection } from './redis-connection'
import type { Connection, RedisOption } from './redis-connection'
import { pubSubFor } from './redis-pubsub'
import type { PubSub } from './redis-pubsub'

// Weight of the newest sample in lagMs.
const LAG_WEIGHT = 0.2

// For the commands whose failure needs no handling of its own: the connection that failed them reconnects, and its
// 'ready' subscribes everything again (a subscription) or the next tick finds the probe missing.
function ignore (): void {}

/** `up`: commands are taken and the subscription delivers; `down`: either may fail. */
export type LinkState = 'up' | 'connecting' | 'down'

export interface LinkSettings {
  /** What the probe channels' names begin with. */
  readonly keyPrefix: string
  /** How long a command may wait for Redis's answer. */
  readonly commandTimeoutMs: number
  readonly probeIntervalMs: number
}

/** What the link tells its user; set once by `start`. */
export interface LinkEvents {
  /** The state changed (`up` first, as start() subscribes); `cause` of a `down`: the last error seen since the previous change, why the probe failed, or which connection closed. */
  state (state: 'up' | 'down', cause: Error | null): void
  /** A moment to retry commands that failed: the command connection is ready again, or a probe interval has passed. */
  retry (): void
}

/** What one subscribed channel is told. */
export interface ChannelListener {
  receive (message: Buffer): void
  /** Redis has confirmed the subscription, first or again: what the channel carried before it may have been missed. */
  subscribed (): void
}

export class RedisLink {
  state: LinkState = 'connecting'
  /** The command connection: no offline queue, `commandTimeoutMs`, nothing resent, no key prefix. */
  readonly pub: Connection
  readonly publishCommand: PubSub['publishCommand']
  private events: LinkEvents | null = null
  private readonly sub: Connection
  private readonly pubsub: PubSub
  private readonly channels = new Map<string, ChannelListener>()
  // What the channels of the liveness probe are named from; the channels subscribed now, one per subscriber connection.
  private readonly probeBase: string
  private probes = new Set<string>()
  // Channels left while not subscribed: a Cluster client may still hold them, to subscribe again by itself.
  private readonly stale = new Set<string>()
  private subscribed = false
  private probeFailed = false
  // When the probes in flight were sent, and the channels whose probe is not back yet; null when none is in flight.
  private probeSentAt: number | null = null
  private probesOut = new Set<string>()
  private lag = 0
  private timer: NodeJS.Timeout | null = null
  private lastError: Error | null = null
  private closed = false

  /** `option` is the `redis` option as the application gave it. */
  constructor (option: RedisOption, private readonly settings: LinkSettings) {
    // No offline queue and a command timeout: a command Redis cannot take now fails now, or within the bound. No
    // resending either (a refused publish must stay refused), and no key prefix of the application's: every instance
    // must name the keys as its channels are named, by `topics.keyPrefix` alone.
    const own = { enableOfflineQueue: false, commandTimeout: settings.commandTimeoutMs, autoResubscribe: false, autoResendUnfulfilledCommands: false, keyPrefix: '' }
    this.pubsub = pubSubFor(option)
    this.publishCommand = this.pubsub.publishCommand
    this.pub = openConnection(option, own, false)
    this.sub = openConnection(option, own, this.pubsub.sharded)
    this.probeBase = `${settings.keyPrefix}:probe:${createIdGenerator()()}`
  }

  /** How far behind delivery runs, in ms: the samples' average, or the probe overdue if longer. */
  get lagMs (): number {
    // A probe overdue says delivery runs at least that far behind, though no message shows it.
    return Math.max(this.lag, this.probeSentAt === null ? 0 : Date.now() - this.probeSentAt)
  }

  /** Connects and subscribes; resolves once both connections are up, or rejects with the first failure (then closed). */
  async start (events: LinkEvents): Promise<void> {
    this.events = events
    const remember = (err: Error): void => { this.lastError = err }
    this.pub.on('error', remember)
    this.sub.on('error', remember)
    this.pub.on('ready', () => {
      this.update()
      events.retry()
    })
    this.pub.on('close', () => this.update())
    // The first time, start() subscribes.
    this.sub.on('ready', () => { if (this.state !== 'connecting') this.resubscribe().catch(this.resubscribeFailed) })
    this.sub.on('close', this.unsubscribed)
    // A Cluster replaces the subscriber connection of one master by itself ('-subscriber'), subscribes its channels
    // again, then says 'subscribersReady': the link subscribes again too, and its users read what the gap missed.
    this.sub.on('-subscriber', this.unsubscribed)
    this.sub.on('subscribersReady', () => {
      if (this.state !== 'connecting' && !this.subscribed && this.sub.status === 'ready') this.resubscribe().catch(this.resubscribeFailed)
    })
    this.sub.on(this.pubsub.messageEvent, (channel: Buffer, message: Buffer) => this.receive(channel.toString(), message))
    // The first failure ends the start, with its own error (connect() rejects with a plain "Connection is closed").
    let fail!: (err: Error) => void
    const failed = new Promise<never>((_resolve, reject) => { fail = reject })
    this.pub.once('error', fail)
    this.sub.once('error', fail)
    try {
      await Promise.race([Promise.all([connected(this.pub), connected(this.sub)]).then(() => this.resubscribe()), failed])
      this.pub.off('error', fail)
      this.sub.off('error', fail)
    } catch (err) {
      await this.close()
      throw err
    }
    // Closed while the first subscription was on its way: Redis answered it before the QUIT, but nothing is left to probe.
    if (this.closed) return
    this.timer = setInterval(() => this.tick(), this.settings.probeIntervalMs).unref()
  }

  /**
   * Keeps `channel` subscribed, now and after every reconnection, and hands its messages to `listener`. Subscribing
   * again replaces the listener.
   */
  subscribe (channel: string, listener: ChannelListener): void {
    this.channels.set(channel, listener)
    this.stale.delete(channel)
    if (this.subscribed) this.pubsub.subscribe(this.sub, [channel]).then(() => listener.subscribed(), this.resubscribeFailed)
  }

  unsubscribe (channel: string): void {
    this.channels.delete(channel)
    if (this.subscribed) this.pubsub.unsubscribe(this.sub, [channel]).catch(ignore)
    else this.stale.add(channel)
  }

  /** Adds a sample of how far behind delivery runs (ms from publish to receipt). */
  sample (ms: number): void {
    this.lag += (Math.max(0, ms) - this.lag) * LAG_WEIGHT
  }

  async close (): Promise<void> {
    this.closed = true
    if (this.timer !== null) clearInterval(this.timer)
    this.channels.clear()
    await Promise.all([this.pub, this.sub].map((connection) => closeConnection(connection, this.settings.commandTimeoutMs)))
  }

  /** The state as the connections and the probe say; the change is told once start() has resolved. */
  private update (): void {
    if (this.closed || this.state === 'connecting') return
    const state = this.pub.status === 'ready' && this.subscribed && !this.probeFailed ? 'up' : 'down'
    if (state === this.state) return
    this.state = state
    // A connection that ends without an error (Redis's process gone, closing its sockets) is a cause all the same.
    const cause = state === 'up' ? null : this.lastError ?? new Error(`the ${this.pub.status === 'ready' ? 'subscriber' : 'command'} connection to Redis closed`)
    this.lastError = null
    this.events!.state(state, cause)
  }

  private readonly unsubscribed = (): void => {
    this.subscribed = false
    this.update()
  }

  /**
   * (Re)subscribes the probe channels and every channel kept on a new subscriber connection (or after the Cluster's
   * masters changed), then tells each channel's listener, which reads what was missed while it was not subscribed.
   */
  private async resubscribe (): Promise<void> {
    const probes = this.pubsub.probeChannels(this.probeBase, this.sub)
    const channels = [...this.channels.keys()]
    const stale = [...this.stale, ...[...this.probes].filter((channel) => !probes.includes(channel))]
    this.stale.clear()
    await this.pubsub.subscribe(this.sub, [...probes, ...channels])
    // Channels subscribed or left while that subscription was on its way: it did not name them.
    const sent = new Set(channels)
    const added = [...this.channels.keys()].filter((channel) => !sent.has(channel))
    const left = [...stale, ...channels.filter((channel) => !this.channels.has(channel))]
    if (added.length > 0) await this.pubsub.subscribe(this.sub, added)
    if (left.length > 0) this.pubsub.unsubscribe(this.sub, left).catch(ignore)
    this.probes = new Set(probes)
    this.subscribed = true
    this.probeFailed = false
    this.probeSentAt = null
    if (this.state === 'connecting') this.state = 'down'
    this.update()
    for (const listener of this.channels.values()) listener.subscribed()
  }

  // A subscription Redis refused (or did not answer in time) on a connection that stays up: nothing would bring it
  // back, so the subscriber connects again, and its 'ready' subscribes everything again.
  private readonly resubscribeFailed = (): void => {
    if (!this.closed) this.sub.disconnect(true)
  }

  private receive (channel: string, message: Buffer): void {
    if (this.probes.has(channel)) {
      const sentAt = Number(message.toString('latin1'))
      this.sample(Date.now() - sentAt)
      if (sentAt === this.probeSentAt && this.probesOut.delete(channel) && this.probesOut.size === 0) this.probeSentAt = null
      return
    }
    this.channels.get(channel)?.receive(message)
  }

  /**
   * Once per probe interval: a probe not back by the next tick means Redis does not deliver to this instance,
   * whether the connection looks fine (a failover can leave a subscription silently dead) or Redis does not answer
   * at all. On a Cluster a probe goes to each master, through the subscriber connection to that master: one dead
   * connection is enough. The link goes down and the subscriber reconnects; the new subscription brings it up.
   * Otherwise another probe goes out, and the user retries what failed.
   */
  private tick (): void {
    this.events!.retry()
    if (this.probeSentAt === null) {
      if (this.subscribed) this.probe()
      return
    }
    // Sent at the last tick, it has had an interval; but timers run before I/O, so after a stalled event loop its
    // answer may be waiting unread: the verdict comes once the loop has read what is there.
    setImmediate(this.judgeProbe, this.probeSentAt).unref()
  }

  private readonly judgeProbe = (sentAt: number): void => {
    if (this.closed || this.probeSentAt !== sentAt) return
    this.probeSentAt = null
    this.probeFailed = true
    this.lastError = new Error(`the liveness probe on ${[...this.probesOut].join(', ')} did not come back within ${this.settings.probeIntervalMs} ms`)
    this.update()
    this.sub.disconnect(true)
  }

  private probe (): void {
    const probes = this.pubsub.probeChannels(this.probeBase, this.sub)
    if (probes.length !== this.probes.size || probes.some((channel) => !this.probes.has(channel))) {
      // The Cluster's masters changed: the new ones get probe channels, and every channel's listener reads what a
      // moved subscription may have missed.
      this.resubscribe().catch(this.resubscribeFailed)
      return
    }
    const sentAt = Date.now()
    this.probeSentAt = sentAt
    this.probesOut = new Set(probes)
    // A probe Redis refuses does not come back either: the next tick counts it as missing.
    for (const channel of probes) this.pubsub.publish(this.pub, channel, String(sentAt)).catch(ignore)
  }
}
