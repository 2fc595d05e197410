// The broker through Redis: each topic's messages numbered in a stream, announced on its channel; this instance
// listens to the channels of its topics only, delivers each message once in order, and reads what it missed from
// the stream (docs/redis.md).
import { once } from 'node:events'
import type { FastifyBaseLogger } from 'fastify'
import { FST_RELIABLE_WS_BROKER_UNAVAILABLE } from '../core/errors'
import type { TopicSettings } from '../core/options'
import { createIdGenerator } from '../core/ids'
import type { Broker, BrokerEvents, BrokerState, GapReason } from './broker'
import { openConnection } from '../redis/redis-connection'
import type { Connection, RedisOption } from '../redis/redis-connection'
import { pubSubFor } from '../redis/redis-pubsub'
import type { PubSub } from '../redis/redis-pubsub'
import { entryNotification, parseNotification, publishScript, READ_SCRIPT, topicKeys } from './redis-scripts'
import type { Notification, TopicKeys } from './redis-scripts'

// Messages read from a stream per command while catching up: one read never holds Redis long.
const READ_BATCH = 500
// Weight of the newest sample in lagMs.
const LAG_WEIGHT = 0.2

// For the commands whose failure needs no handling of its own: the connection that failed them reconnects, and its
// 'ready' subscribes everything again (a subscription) or the next tick finds the probe missing.
function ignore (): void {}

/**
 * Connects; resolves once the connection is ready. A Cluster client whose ready check fails (a node not yet, or no
 * longer, `cluster_state:ok`) reconnects by itself and leaves the promise of that first connect() pending for good:
 * its 'ready' says when it is up.
 */
async function connected (connection: Connection): Promise<unknown> {
  return await Promise.race([connection.connect(), once(connection, 'ready')])
}

type ReadReply = [Buffer | null, number, Array<[Buffer, Buffer[]]>]

interface ScriptedRedis extends Connection {
  reliableWsPublish: (meta: string, stream: string, channel: string, ...args: Array<string | Buffer | number>) => Promise<[number, string]>
  reliableWsReadBuffer: (meta: string, stream: string, from: number, count: number) => Promise<ReadReply>
}

/** Where this instance stands in one topic it listens to. */
interface Listened {
  readonly topic: string
  readonly keys: TopicKeys
  /** The epoch of `last`; null when the topic had no history yet: the next epoch seen is taken as it comes. */
  epoch: string | null
  /** The last offset delivered (or passed over when listening began). */
  last: number
  /** False until the topic's position when listening began has been read. */
  based: boolean
  /** Live notifications wait in `pending` while the stream is read up to the topic's last offset. */
  behind: boolean
  reading: boolean
  /** Read the stream once more after the read in progress: something arrived that it may not cover. */
  again: boolean
  pending: Notification[]
  /** An epoch whose history was lost: its notifications, late or waiting, are no longer this instance's to deliver. */
  abandoned: string | null
  /** The first read of the topic's position failed: messages published before a later one succeeds went unseen. */
  baseLate: boolean
}

export class RedisBroker implements Broker {
  state: BrokerState = 'connecting'
  private events: BrokerEvents | null = null
  private readonly pub: ScriptedRedis
  private readonly sub: Connection
  private readonly topics = new Map<string, Listened>()
  private readonly byChannel = new Map<string, Listened>()
  private readonly nextEpoch = createIdGenerator()
  private readonly pubsub: PubSub
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

  constructor (option: RedisOption, private readonly settings: TopicSettings, private readonly log: FastifyBaseLogger) {
    // No offline queue and a command timeout: a command Redis cannot take now fails now, or within the bound. No
    // resending either (a refused publish must stay refused), and no key prefix of the application's: every instance
    // must name the keys as its channels are named, by `topics.keyPrefix` alone.
    const own = { enableOfflineQueue: false, commandTimeout: settings.publishTimeoutMs, autoResubscribe: false, autoResendUnfulfilledCommands: false, keyPrefix: '' }
    this.pubsub = pubSubFor(option)
    this.pub = openConnection(option, own, false) as ScriptedRedis
    this.sub = openConnection(option, own, this.pubsub.sharded)
    this.pub.defineCommand('reliableWsPublish', { numberOfKeys: 3, lua: publishScript(this.pubsub.publishCommand) })
    this.pub.defineCommand('reliableWsRead', { numberOfKeys: 2, lua: READ_SCRIPT })
    this.probeBase = `${settings.keyPrefix}:probe:${this.nextEpoch()}`
  }

  get lagMs (): number {
    // A probe overdue says delivery runs at least that far behind, though no message shows it.
    return Math.max(this.lag, this.probeSentAt === null ? 0 : Date.now() - this.probeSentAt)
  }

  async start (events: BrokerEvents): Promise<void> {
    this.events = events
    const remember = (err: Error): void => { this.lastError = err }
    this.pub.on('error', remember)
    this.sub.on('error', remember)
    this.pub.on('ready', () => this.pubReady())
    this.pub.on('close', () => this.update())
    // The first time, start() subscribes.
    this.sub.on('ready', () => { if (this.state !== 'connecting') this.resubscribe().catch(this.resubscribeFailed) })
    this.sub.on('close', this.unsubscribed)
    // A Cluster replaces the subscriber connection of one master by itself ('-subscriber'), subscribes its channels
    // again, then says 'subscribersReady': the broker subscribes again too, and reads what the gap in between missed.
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
    this.timer = setInterval(() => this.tick(), this.settings.probeIntervalMs).unref()
  }

  async publish (topic: string, data: Buffer | string, binary: boolean): Promise<{ offset: number, epoch: string }> {
    const { meta, stream, channel } = topicKeys(this.settings.keyPrefix, topic)
    const { historySize, historyTtlMs } = this.settings
    try {
      const [offset, epoch] = await this.pub.reliableWsPublish(meta, stream, channel, data, binary ? 1 : 0, Date.now(),
        this.nextEpoch(), historySize, historyTtlMs)
      return { offset, epoch }
    } catch (err) {
      throw new FST_RELIABLE_WS_BROKER_UNAVAILABLE((err as Error).message, { cause: err })
    }
  }

  listen (topic: string): void {
    const listened: Listened = {
      topic,
      keys: topicKeys(this.settings.keyPrefix, topic),
      epoch: null,
      last: 0,
      based: false,
      behind: true,
      reading: false,
      again: false,
      pending: [],
      abandoned: null,
      baseLate: false
    }
    this.topics.set(topic, listened)
    this.byChannel.set(listened.keys.channel, listened)
    this.stale.delete(listened.keys.channel)
    // The position now, then the channel; once subscribed, the stream once more for what came between the two.
    this.catchUp(listened)
    if (this.subscribed) this.pubsub.subscribe(this.sub, [listened.keys.channel]).then(() => this.catchUp(listened), this.resubscribeFailed)
  }

  unlisten (topic: string): void {
    const listened = this.topics.get(topic)
    if (listened === undefined) return
    this.topics.delete(topic)
    this.byChannel.delete(listened.keys.channel)
    if (this.subscribed) this.pubsub.unsubscribe(this.sub, [listened.keys.channel]).catch(ignore)
    else this.stale.add(listened.keys.channel)
  }

  async close (): Promise<void> {
    this.closed = true
    if (this.timer !== null) clearInterval(this.timer)
    this.topics.clear()
    this.byChannel.clear()
    // quit() lets Redis answer what is in flight; a connection that is not up is just dropped.
    await Promise.all([this.pub, this.sub].map((connection) => connection.quit().catch(() => connection.disconnect())))
  }

  /** The state as the connections and the probe say; the change is told once start() has resolved. */
  private update (): void {
    if (this.closed || this.state === 'connecting') return
    const state = this.pub.status === 'ready' && this.subscribed && !this.probeFailed ? 'up' : 'down'
    if (state === this.state) return
    this.state = state
    if (state === 'down') this.log.warn({ err: this.lastError }, 'topic broker: Redis is unreachable or not delivering; publishes are refused until it is back')
    else this.log.info('topic broker: Redis is back')
    this.events!.state(state)
  }

  private pubReady (): void {
    this.update()
    this.retryStalled()
  }

  private readonly unsubscribed = (): void => {
    this.subscribed = false
    this.update()
  }

  /**
   * (Re)subscribes the probe channels and every listened topic's channel on a new subscriber connection (or after the
   * Cluster's masters changed), then reads each topic's stream for what was published while it was not subscribed.
   */
  private async resubscribe (): Promise<void> {
    const probes = this.pubsub.probeChannels(this.probeBase, this.sub)
    const channels = [...this.byChannel.keys()]
    const stale = [...this.stale, ...[...this.probes].filter((channel) => !probes.includes(channel))]
    this.stale.clear()
    await this.pubsub.subscribe(this.sub, [...probes, ...channels])
    // Topics listened to or left while that subscription was on its way: it did not name them.
    const sent = new Set(channels)
    const added = [...this.byChannel.keys()].filter((channel) => !sent.has(channel))
    const left = [...stale, ...channels.filter((channel) => !this.byChannel.has(channel))]
    if (added.length > 0) await this.pubsub.subscribe(this.sub, added)
    if (left.length > 0) this.pubsub.unsubscribe(this.sub, left).catch(ignore)
    this.probes = new Set(probes)
    this.subscribed = true
    this.probeFailed = false
    this.probeSentAt = null
    if (this.state === 'connecting') this.state = 'down'
    this.update()
    for (const listened of this.topics.values()) this.catchUp(listened)
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
    const listened = this.byChannel.get(channel)
    const notification = parseNotification(message)
    if (listened === undefined || notification === null) return
    if (listened.behind) this.hold(listened, notification)
    else this.apply(listened, notification)
  }

  /** Keeps a live notification until the stream has been read; past historySize of them, reads the stream again instead. */
  private hold (listened: Listened, notification: Notification): void {
    if (listened.pending.length < this.settings.historySize) {
      listened.pending.push(notification)
      return
    }
    listened.pending = []
    listened.again = true
  }

  /** A live notification while nothing is pending: delivered if next, passed over if old, read up to if ahead. */
  private apply (listened: Listened, notification: Notification): void {
    if (notification.epoch === listened.abandoned) return
    if (notification.epoch !== listened.epoch) {
      if (listened.epoch !== null) {
        this.abandon(listened)
        listened.last = notification.offset - 1
      }
      listened.epoch = notification.epoch
    }
    if (notification.offset <= listened.last) return
    if (notification.offset === listened.last + 1) {
      this.deliver(listened, notification)
      return
    }
    listened.pending.push(notification)
    this.catchUp(listened)
  }

  /**
   * Reads the topic's stream from the last offset delivered up to its last offset, then delivers the notifications
   * that waited. A read Redis cannot answer leaves the topic behind, to be read again on the next probe tick or
   * reconnection.
   */
  private async catchUp (listened: Listened): Promise<void> {
    // Live notifications wait from now on: delivered meanwhile, they would come again from the stream.
    listened.behind = true
    if (listened.reading) {
      listened.again = true
      return
    }
    listened.reading = true
    try {
      do {
        listened.again = false
        while (await this.readOnce(listened));
      } while (listened.again)
    } catch {
      // Listening was to begin with this read: whatever is published until one succeeds goes unseen.
      if (!listened.based) listened.baseLate = true
      return
    } finally {
      listened.reading = false
    }
    if (this.topics.get(listened.topic) !== listened) return
    listened.behind = false
    const pending = listened.pending
    listened.pending = []
    // One ahead of the last delivered sends the topic back to the stream, which has the rest of these as well.
    for (let i = 0; i < pending.length && !listened.behind; i++) this.apply(listened, pending[i])
  }

  /** One read of the stream; true when there is more to read. */
  private async readOnce (listened: Listened): Promise<boolean> {
    const { keys } = listened
    const [epochBytes, top, entries] = await this.pub.reliableWsReadBuffer(keys.meta, keys.stream, listened.last + 1, listened.based ? READ_BATCH : 0)
    if (this.topics.get(listened.topic) !== listened) return false
    const epoch = epochBytes === null ? null : epochBytes.toString()
    if (!listened.based) {
      // Listening begins now: what the topic holds already is not delivered.
      listened.based = true
      listened.epoch = epoch
      listened.last = top
      // Begun late (Redis was away when the topic was first listened to): messages published meanwhile are missed.
      if (listened.baseLate) this.gap(listened, 'trimmed')
      return false
    }
    if (listened.epoch !== null && epoch !== listened.epoch) {
      // The history this instance followed is gone: go on from the topic's position now.
      this.abandon(listened)
      listened.epoch = epoch
      listened.last = epoch === null ? 0 : top
      return false
    }
    // A topic without history when listening began: its first epoch is read from its first offset.
    listened.epoch = epoch
    if (entries.length === 0) {
      if (top > listened.last) {
        this.gap(listened, 'trimmed')
        listened.last = top
      }
      return false
    }
    for (const entry of entries) {
      const notification = entryNotification(epoch!, entry)
      if (notification.offset > listened.last + 1) this.gap(listened, 'trimmed')
      this.deliver(listened, notification)
    }
    return listened.last < top
  }

  private deliver (listened: Listened, notification: Notification): void {
    listened.last = notification.offset
    this.sample(Date.now() - notification.time)
    this.events!.deliver({
      topic: listened.topic,
      offset: notification.offset,
      epoch: notification.epoch,
      data: notification.data,
      binary: notification.binary
    })
  }

  /** The topic's epoch has changed under this instance: a gap, and what is left of the old epoch is dropped. */
  private abandon (listened: Listened): void {
    this.gap(listened, 'epoch')
    listened.abandoned = listened.epoch
    listened.pending = []
  }

  private gap (listened: Listened, reason: GapReason): void {
    this.events!.gap(listened.topic, reason)
  }

  private sample (ms: number): void {
    this.lag += (Math.max(0, ms) - this.lag) * LAG_WEIGHT
  }

  private retryStalled (): void {
    for (const listened of this.topics.values()) {
      if (listened.behind && !listened.reading) this.catchUp(listened)
    }
  }

  /**
   * Once per probe interval: a probe not back by the next tick means Redis does not deliver to this instance,
   * whether the connection looks fine (a failover can leave a subscription silently dead) or Redis does not answer
   * at all. On a Cluster a probe goes to each master, through the subscriber connection to that master: one dead
   * connection is enough. The broker goes down and the subscriber reconnects; the new subscription brings it up.
   * Otherwise another probe goes out, and topics whose read failed are read again.
   */
  private tick (): void {
    this.retryStalled()
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
      // The Cluster's masters changed: the new ones get probe channels, and every topic is read for what a moved
      // subscription may have missed.
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

/** The broker through Redis; `option` is the `redis` option as the application gave it. */
export function createRedisBroker (option: RedisOption, settings: TopicSettings, log: FastifyBaseLogger): RedisBroker {
  return new RedisBroker(option, settings, log)
}
