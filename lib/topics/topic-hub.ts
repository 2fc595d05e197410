// Topics: publish/subscribe between the instance's sockets and sessions, through a broker (memory or Redis).
import type { FastifyBaseLogger } from 'fastify'
import type fastifyReliableWs = require('../../types/index')
import {
  FST_RELIABLE_WS_BROKER_UNAVAILABLE, FST_RELIABLE_WS_NOT_OPEN, FST_RELIABLE_WS_NOT_PUBLISHABLE, FST_RELIABLE_WS_PUBLISH_BACKLOG,
  FST_RELIABLE_WS_SESSION_ENDED, FST_RELIABLE_WS_TOO_MANY_SUBSCRIPTIONS, FST_RELIABLE_WS_TOO_MANY_TOPICS
} from '../core/errors'
import type { TopicSettings } from '../core/options'
import type { Counters, ReliableSocket, Sessions, SocketSession, TopicPlace, Topics } from '../core/shapes'
import { kPlaces, kSession, kTopics } from '../core/symbols'
import { OPEN } from '../protocol/protocol'
import { Session } from '../sessions/session'
import type { Broker, BrokerEvents, BrokerState, Delivery, GapReason, History } from './broker'
import { FanOut, keepPublished } from './fan-out'
import type { Subscriber, Topic } from './fan-out'
import { invalidTopic, isTopic } from './topic-names'

type Publishable = string | Buffer | ArrayBuffer | ArrayBufferView
type TopicPosition = fastifyReliableWs.TopicPosition

// Messages read from a topic's history per call while a session handed over catches up.
const HISTORY_BATCH = 500

/**
 * The instance's subscriptions: topic → local subscribers, each a socket without a session or a session (whose
 * subscriptions outlive its connections). The broker is asked for a topic's messages while the instance has a
 * subscriber of it: listen on the first, unlisten when the last has gone.
 */
export class TopicHub implements Topics, BrokerEvents {
  private readonly topics = new Map<string, Topic>()
  private readonly fanOut: FanOut
  // History reads on their way, by place and topic: the sessions an instance hands over stand at the same place in a
  // topic (they kept the same messages), and the instance they move to reads from there once for them all.
  private readonly reads = new Map<string, { entry: Topic, arrived: number, history: Promise<History> }>()
  // Publishes are taken between the instance's ready and its close.
  private phase: 'not ready' | 'open' | 'closed' = 'not ready'

  constructor (
    private readonly broker: Broker,
    private readonly stats: Counters,
    private readonly sessions: Sessions,
    private readonly settings: TopicSettings,
    private readonly log: FastifyBaseLogger
  ) {
    this.fanOut = new FanOut(stats, sessions, settings.maxQueuedMessages, log)
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
    const mine = subscriber[kTopics]
    if (mine?.has(topic) === true) return false
    if (mine !== null && mine.size >= maxSubscriptions) {
      this.stats.topics.refused++
      throw new FST_RELIABLE_WS_TOO_MANY_SUBSCRIPTIONS(maxSubscriptions)
    }
    const entry = this.entryOf(topic)
    if (entry === null) throw new FST_RELIABLE_WS_TOO_MANY_TOPICS(maxTopics)
    if (subscriber instanceof Session) {
      this.join(subscriber, entry, placeOf(entry, this.broker, entry.cursor !== null))
      subscriber.subscriptionsChanged()
    } else {
      this.add(subscriber, entry)
    }
    return true
  }

  /**
   * Where a session stands in each topic it subscribes to, for its handover; null when the broker has not yet read
   * where one stood when the session subscribed (Redis out of reach), and nothing of it has reached the session.
   */
  positions (session: SocketSession): TopicPosition[] | null {
    const positions: TopicPosition[] = []
    for (const [topic, place] of session[kPlaces] ?? []) {
      // Nothing of it has reached the session: it stands before the first message queued here, or the broker's last.
      const { epoch, offset } = place.offset >= 0 ? place : placeOf(this.topics.get(topic)!, this.broker, false)
      if (offset < 0) return null
      positions.push({ topic, epoch, offset })
    }
    return positions
  }

  /**
   * A session another instance handed over subscribes again to its topics, each from where it stood: the messages
   * after that are read from the topic's history, while those arriving meanwhile wait. A topic whose history no longer
   * holds them (trimmed, or another epoch: a broker in memory keeps none) ends the session with 4801, as a gap does.
   * False, the session partly subscribed, when the instance's limits have no room for its topics.
   */
  rejoin (session: Session, positions: TopicPosition[]): boolean {
    if (positions.length > this.settings.maxSubscriptions) {
      this.stats.topics.refused++
      return false
    }
    for (const { topic, epoch, offset } of positions) {
      const entry = this.entryOf(topic)
      if (entry === null) return false
      const place: TopicPlace = { epoch, offset, held: [] }
      this.join(session, entry, place)
      this.catchUp(session, topic, place)
    }
    return true
  }

  private async catchUp (session: Session, topic: string, place: TopicPlace): Promise<void> {
    // False once the session has ended (or been handed over again), or left the topic.
    const here = (): boolean => session[kPlaces]?.get(topic) === place
    try {
      let top = Infinity
      while (place.offset < top) {
        const history = await this.historyAfter(this.topics.get(topic)!, place.offset)
        if (!here()) return
        const { messages } = history
        top = history.top
        // Another epoch, or trimmed past where it stood (a stream's messages follow each other from its first; any
        // epoch goes on from a place in a topic that had none).
        if (history.epoch !== place.epoch && place.epoch !== '') return this.lost(session)
        if (place.offset < top && messages[0]?.offset !== place.offset + 1) return this.lost(session)
        for (const message of messages) {
          if (!keepPublished(session, place, message, undefined, this.stats)) return
        }
      }
    } catch (err) {
      if (!here()) return
      this.log.warn({ err, topic, session: session.id }, 'topic history could not be read for a session handed over')
      return this.lost(session)
    }
    // What arrived meanwhile follows what was read: the broker delivers each epoch's messages in order, from at most
    // the history's last offset when it was read, and whatever it cannot deliver ends the session (a gap).
    const held = place.held!
    place.held = null
    for (const message of held) {
      if (!keepPublished(session, place, message, undefined, this.stats)) return
    }
  }

  /**
   * The topic's history after `offset`: a read already on its way from there is shared if nothing of the topic has
   * arrived here since it was asked, as its answer then reaches at least as far as what a newcomer did not get live;
   * not if the topic was let go and listened to again meanwhile (its arrivals counted afresh).
   */
  private historyAfter (entry: Topic, offset: number): Promise<History> {
    const key = `${offset} ${entry.name}`
    const read = this.reads.get(key)
    if (read !== undefined && read.entry === entry && read.arrived === entry.arrived) return read.history
    const mine = { entry, arrived: entry.arrived, history: this.broker.history(entry.name, offset, HISTORY_BATCH) }
    this.reads.set(key, mine)
    const done = (): void => { if (this.reads.get(key) === mine) this.reads.delete(key) }
    mine.history.then(done, done)
    return mine.history
  }

  private lost (session: Session): void {
    this.stats.topics.gaps++
    this.sessions.topicLost(session)
  }

  /** The topic's entry, made (and listened to) if it is new; null when the instance holds as many topics as it may. */
  private entryOf (topic: string): Topic | null {
    let entry = this.topics.get(topic)
    if (entry !== undefined) return entry
    if (this.topics.size >= this.settings.maxTopics) {
      this.stats.topics.refused++
      return null
    }
    entry = { name: topic, subscribers: new Set(), queue: [], head: 0, cursor: null, joined: null, payload: null, frame: null, escaped: null, pending: false, dropped: 0, arrived: 0 }
    this.topics.set(topic, entry)
    this.stats.topics.topics++
    this.broker.listen(topic)
    return entry
  }

  private join (session: Session, entry: Topic, place: TopicPlace): void {
    (session[kPlaces] ??= new Map()).set(entry.name, place)
    this.add(session, entry)
  }

  private add (subscriber: Subscriber, entry: Topic): void {
    (subscriber[kTopics] ??= new Set()).add(entry.name)
    entry.subscribers.add(subscriber)
    this.fanOut.joined(entry, subscriber)
    this.stats.topics.subscriptions++
  }

  unsubscribe (socket: ReliableSocket, topic: string): boolean {
    // A socket that has closed speaks no more for its session, whose subscriptions wait for its next connection.
    if (socket.readyState !== OPEN) return false
    const subscriber = subscriberOf(socket)
    if (subscriber[kTopics]?.delete(topic) !== true) return false
    this.leave(subscriber, topic)
    if (subscriber instanceof Session) subscriber.subscriptionsChanged()
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
    entry.arrived++
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
    if (subscriber instanceof Session) subscriber[kPlaces] = null
    for (const topic of mine) this.leave(subscriber, topic)
  }

  private leave (subscriber: Subscriber, topic: string): void {
    if (subscriber instanceof Session) subscriber[kPlaces]?.delete(topic)
    const entry = this.topics.get(topic)!
    entry.subscribers.delete(subscriber)
    this.stats.topics.subscriptions--
    if (entry.subscribers.size > 0) return
    this.topics.delete(topic)
    this.stats.topics.topics--
    this.broker.unlisten(topic)
  }
}

/**
 * Where a session joining `entry` now stands: before the first message queued for the topic here (at it, when that
 * one's fan-out has `started`: it is not the newcomer's), else at the broker's last; offset -1 while that is unknown.
 */
function placeOf (entry: Topic, broker: Broker, started: boolean): TopicPlace {
  const first = entry.queue[entry.head]
  if (first !== undefined) return { epoch: first.epoch, offset: started ? first.offset : first.offset - 1, held: null }
  const last = broker.position(entry.name)
  return last === null ? { epoch: '', offset: -1, held: null } : { epoch: last.epoch, offset: last.offset, held: null }
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
