// Topics: publish/subscribe between the instance's sockets and sessions, through a broker (memory or Redis).
import type { FastifyBaseLogger } from 'fastify'
import {
  FST_RELIABLE_WS_BROKER_UNAVAILABLE, FST_RELIABLE_WS_NOT_OPEN, FST_RELIABLE_WS_NOT_PUBLISHABLE, FST_RELIABLE_WS_PUBLISH_BACKLOG,
  FST_RELIABLE_WS_SESSION_ENDED, FST_RELIABLE_WS_TOO_MANY_SUBSCRIPTIONS, FST_RELIABLE_WS_TOO_MANY_TOPICS
} from '../core/errors'
import type { TopicSettings } from '../core/options'
import type { Counters, ReliableSocket, Sessions, SocketSession, Topics } from '../core/shapes'
import { kSession, kTopics } from '../core/symbols'
import { OPEN } from '../protocol/protocol'
import { Session } from '../sessions/session'
import type { Broker, BrokerEvents, BrokerState, Delivery, GapReason } from './broker'
import { FanOut } from './fan-out'
import type { Subscriber, Topic } from './fan-out'
import { invalidTopic, isTopic } from './topic-names'

type Publishable = string | Buffer | ArrayBuffer | ArrayBufferView

/**
 * The instance's subscriptions: topic → local subscribers, each a socket without a session or a session (whose
 * subscriptions outlive its connections). The broker is asked for a topic's messages while the instance has a
 * subscriber of it: listen on the first, unlisten when the last has gone.
 */
export class TopicHub implements Topics, BrokerEvents {
  private readonly topics = new Map<string, Topic>()
  private readonly fanOut: FanOut
  // Publishes are taken between the instance's ready and its close.
  private phase: 'not ready' | 'open' | 'closed' = 'not ready'

  constructor (
    private readonly broker: Broker,
    private readonly stats: Counters,
    private readonly sessions: Sessions,
    private readonly settings: TopicSettings,
    private readonly log: FastifyBaseLogger
  ) {
    this.fanOut = new FanOut(stats, log)
  }

  async start (): Promise<void> {
    await this.broker.start(this)
    this.stats.broker = this.broker
    this.phase = 'open'
  }

  async close (): Promise<void> {
    this.phase = 'closed'
    this.fanOut.stop()
    await this.broker.close()
  }

  publish (topic: string, data: Publishable, binary: boolean | undefined): Promise<{ offset: number }> {
    const state = this.phase === 'open' ? this.broker.state : this.phase
    if (state !== 'up') return Promise.reject(new FST_RELIABLE_WS_BROKER_UNAVAILABLE(state))
    if (!isTopic(topic, this.settings.maxTopicLength)) return Promise.reject(invalidTopic(topic, this.settings.maxTopicLength))
    const bytes = typeof data === 'string' ? data : copyOf(data)
    if (bytes === null) return Promise.reject(new FST_RELIABLE_WS_NOT_PUBLISHABLE(data === null ? 'null' : typeof data))
    // The in-process broker delivers in this turn: a topic whose fan-out cannot keep up refuses the publish.
    const entry = this.topics.get(topic)
    if (entry !== undefined && backlogOf(entry) >= this.settings.maxQueuedMessages) {
      return Promise.reject(new FST_RELIABLE_WS_PUBLISH_BACKLOG(topic, this.settings.maxQueuedMessages))
    }
    return this.broker.publish(topic, bytes, binary ?? typeof data !== 'string').then(this.published)
  }

  private readonly published = ({ offset }: { offset: number }): { offset: number } => {
    this.stats.topics.published++
    return { offset }
  }

  subscribe (socket: ReliableSocket, topic: string): boolean {
    const { maxTopicLength, maxSubscriptions, maxTopics } = this.settings
    if (!isTopic(topic, maxTopicLength)) {
      this.stats.topics.invalid++
      throw invalidTopic(topic, maxTopicLength)
    }
    if (socket.readyState !== OPEN) throw new FST_RELIABLE_WS_NOT_OPEN(socket.readyState)
    const subscriber = subscriberOf(socket)
    // Handed over to another instance as this one closes, its socket not closed yet: nothing would ever take it out.
    if (subscriber instanceof Session && subscriber.ended) throw new FST_RELIABLE_WS_SESSION_ENDED()
    let mine = subscriber[kTopics]
    if (mine?.has(topic) === true) return false
    if (mine !== null && mine.size >= maxSubscriptions) {
      this.stats.topics.refused++
      throw new FST_RELIABLE_WS_TOO_MANY_SUBSCRIPTIONS(maxSubscriptions)
    }
    let entry = this.topics.get(topic)
    if (entry === undefined) {
      if (this.topics.size >= maxTopics) {
        this.stats.topics.refused++
        throw new FST_RELIABLE_WS_TOO_MANY_TOPICS(maxTopics)
      }
      entry = { name: topic, subscribers: new Set(), queue: [], head: 0, cursor: null, joined: null, payload: null, frame: null, escaped: null, pending: false, dropped: 0 }
      this.topics.set(topic, entry)
      this.stats.topics.topics++
      this.broker.listen(topic)
    }
    mine ??= subscriber[kTopics] = new Set()
    mine.add(topic)
    entry.subscribers.add(subscriber)
    this.fanOut.joined(entry, subscriber)
    this.stats.topics.subscriptions++
    return true
  }

  unsubscribe (socket: ReliableSocket, topic: string): boolean {
    // A socket that has closed speaks no more for its session, whose subscriptions wait for its next connection.
    if (socket.readyState !== OPEN) return false
    const subscriber = subscriberOf(socket)
    if (subscriber[kTopics]?.delete(topic) !== true) return false
    this.leave(subscriber, topic)
    return true
  }

  isSubscribed (socket: ReliableSocket, topic: string): boolean {
    return socket.readyState === OPEN && subscriberOf(socket)[kTopics]?.has(topic) === true
  }

  socketClosed (socket: ReliableSocket): void {
    this.leaveAll(socket)
  }

  /** From the session registry: whatever ends a session ends its subscriptions. */
  sessionEnded (session: SocketSession): void {
    this.leaveAll(session)
  }

  /** A topic as this instance holds it, or null when nobody here subscribes to it. */
  topicStats (topic: string): { subscribers: number, dropped: number } | null {
    const entry = this.topics.get(topic)
    return entry === undefined ? null : { subscribers: entry.subscribers.size, dropped: entry.dropped }
  }

  deliver (message: Delivery): void {
    // Unlistened meanwhile: nobody here is waiting for it.
    const entry = this.topics.get(message.topic)
    if (entry === undefined) return
    if (backlogOf(entry) < this.settings.maxQueuedMessages) {
      this.fanOut.add(entry, message)
      return
    }
    // From another instance, past the bound: the message is lost here, a gap for sessions, a drop for the others.
    this.gap(message.topic, 'backlog')
    this.fanOut.dropAll(entry)
  }

  /**
   * Messages of `topic` will never reach this instance. A session promised its client every message of its topics:
   * each subscribed session ends (4801), so its client knows. A socket without one was promised nothing more than
   * live messages: the gap is counted.
   */
  gap (topic: string, _reason: GapReason): void {
    this.stats.topics.gaps++
    const entry = this.topics.get(topic)
    if (entry === undefined) return
    // Ending a session takes it out of this Set, which the loop then skips.
    for (const subscriber of entry.subscribers) {
      if (subscriber instanceof Session) this.sessions.topicLost(subscriber)
    }
  }

  // wsStats and the health route read the state from the broker itself, when asked: this tells the operator.
  state (state: BrokerState): void {
    if (state === 'up') this.log.info({ broker: state }, 'topic broker up')
    else this.log.warn({ broker: state }, 'topic broker not up: publishes are refused')
  }

  private leaveAll (subscriber: Subscriber): void {
    const mine = subscriber[kTopics]
    if (mine === null) return
    subscriber[kTopics] = null
    for (const topic of mine) this.leave(subscriber, topic)
  }

  private leave (subscriber: Subscriber, topic: string): void {
    const entry = this.topics.get(topic)!
    entry.subscribers.delete(subscriber)
    this.stats.topics.subscriptions--
    if (entry.subscribers.size > 0) return
    this.topics.delete(topic)
    this.stats.topics.topics--
    this.broker.unlisten(topic)
  }
}

/** Messages of the topic waiting for its fan-out. */
function backlogOf (entry: Topic): number {
  return entry.queue.length - entry.head
}

/** Who holds a socket's subscriptions: its session when it has one (they outlive the socket), else the socket. */
function subscriberOf (socket: ReliableSocket): Subscriber {
  return socket[kSession] ?? socket
}

/**
 * A copy of the bytes of a Buffer, typed array or ArrayBuffer, made once per publish: the application may reuse its
 * buffer as soon as wsPublish returns, while later slices and sessions' replays still send these bytes. Null for
 * anything else.
 */
function copyOf (data: unknown): Buffer | null {
  if (ArrayBuffer.isView(data)) return Buffer.from(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
  return data instanceof ArrayBuffer ? Buffer.from(new Uint8Array(data)) : null
}
