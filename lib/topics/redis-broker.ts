// The broker through Redis: each topic's messages numbered in a stream, announced on its channel; this instance
// listens to the channels of its topics only, delivers each message once in order, and reads what it missed from
// the stream (docs/redis.md). Its connections, their state and the liveness probe are the Redis link's.
import type { FastifyBaseLogger } from 'fastify'
import { FST_RELIABLE_WS_BROKER_UNAVAILABLE } from '../core/errors'
import type { TopicSettings } from '../core/options'
import { createIdGenerator } from '../core/ids'
import type { Connection, RedisOption } from '../redis/redis-connection'
import { RedisLink } from '../redis/redis-link'
import type { Broker, BrokerEvents, BrokerState, Delivery, GapReason, History } from './broker'
import { entryNotification, parseNotification, publishScript, READ_SCRIPT, topicKeys } from './redis-scripts'
import type { Notification, TopicKeys } from './redis-scripts'

// Messages read from a stream per command while catching up: one read never holds Redis long.
const READ_BATCH = 500

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
  private events: BrokerEvents | null = null
  // The link's command connection, with the broker's scripts defined on it.
  private readonly pub: ScriptedRedis
  private readonly topics = new Map<string, Listened>()
  private readonly nextEpoch = createIdGenerator()

  constructor (private readonly link: RedisLink, private readonly settings: TopicSettings, private readonly log: FastifyBaseLogger) {
    this.pub = link.pub as ScriptedRedis
    this.pub.defineCommand('reliableWsPublish', { numberOfKeys: 3, lua: publishScript(link.publishCommand) })
    this.pub.defineCommand('reliableWsRead', { numberOfKeys: 2, lua: READ_SCRIPT })
  }

  get state (): BrokerState {
    return this.link.state
  }

  get lagMs (): number {
    return this.link.lagMs
  }

  async start (events: BrokerEvents): Promise<void> {
    this.events = events
    await this.link.start({ state: this.changed, retry: () => this.retryStalled() })
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
    // The position now, then the channel; once subscribed, the stream once more for what came between the two.
    this.catchUp(listened)
    this.link.subscribe(listened.keys.channel, {
      receive: (message) => this.receive(listened, message),
      subscribed: () => this.catchUp(listened)
    })
  }

  position (topic: string): { epoch: string, offset: number } | null {
    const listened = this.topics.get(topic)!
    return listened.based ? { epoch: listened.epoch ?? '', offset: listened.last } : null
  }

  async history (topic: string, offset: number, count: number): Promise<History> {
    const { meta, stream } = topicKeys(this.settings.keyPrefix, topic)
    const [epochBytes, top, entries] = await this.pub.reliableWsReadBuffer(meta, stream, offset + 1, count)
    if (epochBytes === null) return { epoch: '', top, messages: [] }
    const epoch = epochBytes.toString()
    const messages: Delivery[] = entries.map((entry) => {
      const { offset, data, binary } = entryNotification(epoch, entry)
      return { topic, offset, epoch, data, binary }
    })
    return { epoch, top, messages }
  }

  unlisten (topic: string): void {
    const listened = this.topics.get(topic)
    if (listened === undefined) return
    this.topics.delete(topic)
    this.link.unsubscribe(listened.keys.channel)
  }

  async close (): Promise<void> {
    this.topics.clear()
    await this.link.close()
  }

  // The hub logs every change ('topic broker up' at start too); only the broker knows why Redis went away.
  private readonly changed = (state: 'up' | 'down', cause: Error | null): void => {
    if (state === 'down') this.log.warn({ err: cause }, 'topic broker: Redis is unreachable or not delivering; publishes are refused until it is back')
    this.events!.state(state)
  }

  private receive (listened: Listened, message: Buffer): void {
    const notification = parseNotification(message)
    if (notification === null) return
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
    this.link.sample(Date.now() - notification.time)
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

  private retryStalled (): void {
    for (const listened of this.topics.values()) {
      if (listened.behind && !listened.reading) this.catchUp(listened)
    }
  }
}

/** The broker through Redis; `option` is the `redis` option as the application gave it. */
export function createRedisBroker (option: RedisOption, settings: TopicSettings, log: FastifyBaseLogger): RedisBroker {
  return new RedisBroker(new RedisLink(option, { keyPrefix: settings.keyPrefix, commandTimeoutMs: settings.publishTimeoutMs, probeIntervalMs: settings.probeIntervalMs }), settings, log)
}
