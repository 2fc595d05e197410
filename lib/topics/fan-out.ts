import type { FastifyBaseLogger } from 'fastify'
import type { Counters, ReliableSocket, Sessions, SocketSession, TopicPlace } from '../core/shapes'
import { failConnection } from '../core/socket-errors'
import { kCompressFrom, kFramed, kMidMessage, kOverHighWater, kPlaces, kPublished, kRoute, kTransmit } from '../core/symbols'
import { frameMessage, writeFrame } from '../core/ws-internals'
import { refuse, watchHighWater } from '../limits/backpressure'
import { Session } from '../sessions/session'
import { CONTROL_MARK, OPEN } from '../protocol/protocol'
import type { Delivery } from './broker'

/** A topic's local subscribers: sockets without a session, and sessions. */
export type Subscriber = ReliableSocket | SocketSession

/** A topic with local subscribers, and its messages on their way to them. */
export interface Topic {
  readonly name: string
  readonly subscribers: Set<Subscriber>
  // Deliveries not yet handed to every subscriber, oldest first from `head`.
  readonly queue: Array<Delivery | undefined>
  head: number
  // Where the fan-out of queue[head] stands between two slices (a Set iterator sees later changes to the Set).
  cursor: Iterator<Subscriber> | null
  // Who subscribed while queue[head] was going out: it is not theirs (one who left and came back would otherwise
  // be met again at the Set's end, and get it twice).
  joined: Set<Subscriber> | null
  // queue[head]'s payload as bytes, its frame, and the frame escaped for the subprotocol: built once, when first needed.
  payload: Buffer | null
  frame: Buffer[] | null
  escaped: Buffer[] | null
  // In the fan-out's list of topics with work.
  pending: boolean
  dropped: number
  // Messages of the topic that reached this instance: a history read asked before the last of them may not reach it.
  arrived: number
}

// Subscribers served in one turn of the event loop. Each costs a write to the kernel, 10-15 µs on a loaded 2-core
// machine: about 10-15 ms of the loop per slice.
export const SLICE = 1000

// Sent messages are cut off the queue's front once they are this many and at least half of it, as a session's
// outbox is: a queue never empty under a steady backlog would otherwise grow forever.
const COMPACT_AFTER = 1024

const ZERO = Buffer.alloc(1)

/**
 * Hands each delivery to every local subscriber of its topic, in offset order per topic: a topic's next message
 * starts once the one before has reached every subscriber. At most SLICE subscribers per turn of the event loop,
 * over all topics, the rest after a setImmediate, so a topic of 50,000 sockets never holds the loop for its whole
 * fan-out. A socket gets the frame built once for all of them; a session keeps the message itself (its outbox
 * references the same data) as part of its own numbered stream, and its connection writes the same frame.
 */
export class FanOut {
  private readonly pending: Topic[] = []
  private running = false
  private immediate: NodeJS.Immediate | null = null

  constructor (
    private readonly stats: Counters,
    private readonly sessions: Sessions,
    // Messages a session catching up on a topic's history may have waiting for it, as a topic's fan-out may.
    private readonly maxHeld: number,
    private readonly log: FastifyBaseLogger
  ) {}

  add (topic: Topic, message: Delivery): void {
    topic.queue.push(message)
    this.stats.topics.queued++
    if (!topic.pending) {
      topic.pending = true
      this.pending.push(topic)
    }
    if (!this.running && this.immediate === null) this.run()
  }

  stop (): void {
    if (this.immediate !== null) clearImmediate(this.immediate)
    this.immediate = null
    for (const topic of this.pending) this.stats.topics.queued -= topic.queue.length - topic.head
    this.pending.length = 0
  }

  /** A message of `topic` that none of its remaining subscribers (sockets: the sessions have ended) will get. */
  dropAll (topic: Topic): void {
    topic.dropped += topic.subscribers.size
    this.stats.topics.dropped += topic.subscribers.size
  }

  /** A subscriber joins `topic`: a message already going out is not for it. */
  joined (topic: Topic, subscriber: Subscriber): void {
    if (topic.cursor !== null) (topic.joined ??= new Set()).add(subscriber)
  }

  /** One turn's slice of the work: SLICE subscribers at most. */
  run (): void {
    this.immediate = null
    this.running = true
    let budget = SLICE
    const pending = this.pending
    try {
      while (pending.length > 0 && budget > 0) {
        const topic = pending[0]
        budget = this.serve(topic, budget)
        pending.shift()
        if (topic.head < topic.queue.length) {
          // Out of budget mid-topic: the other topics' turn comes first next time.
          pending.push(topic)
        } else {
          topic.queue.length = topic.head = 0
          topic.pending = false
        }
      }
    } finally {
      // Each delivery catches its own throws; should anything else throw, later deliveries must still run.
      this.running = false
      if (pending.length > 0) this.immediate = setImmediate(runAgain, this).unref()
    }
  }

  /** Serves `topic` until its queue is empty or the budget is spent; returns what is left of the budget. */
  private serve (topic: Topic, budget: number): number {
    const queue = topic.queue
    while (topic.head < queue.length) {
      const message = queue[topic.head]!
      topic.cursor ??= topic.subscribers.values()
      while (true) {
        if (budget === 0) return 0
        const next = topic.cursor.next()
        if (next.done === true) break
        if (topic.joined?.has(next.value) !== true) this.tryDeliver(topic, message, next.value)
        budget--
      }
      topic.cursor = topic.joined = null
      topic.payload = topic.frame = topic.escaped = null
      // Let go of it now; the queue itself is emptied once it has all gone out.
      queue[topic.head++] = undefined
      this.stats.topics.queued--
      if (topic.head >= COMPACT_AFTER && topic.head * 2 >= queue.length) {
        queue.splice(0, topic.head)
        topic.head = 0
      }
    }
    return budget
  }

  /** What throws for one subscriber (an application's session store, a log serializer) ends its connection only. */
  private tryDeliver (topic: Topic, message: Delivery, subscriber: Subscriber): void {
    try {
      this.deliver(topic, message, subscriber)
    } catch (err) {
      const socket = subscriber instanceof Session ? subscriber.socket : subscriber as ReliableSocket
      if (socket !== null) failConnection(socket, err)
      else this.log.error({ err, topic: topic.name }, 'topic delivery to a session failed')
    }
  }

  private deliver (topic: Topic, message: Delivery, subscriber: Subscriber): void {
    const stats = this.stats.topics
    if (subscriber instanceof Session) {
      const place = subscriber[kPlaces]!.get(topic.name)!
      if (place.held !== null) {
        // Its messages before this one are being read from the topic's history: this one waits for them.
        if (place.held.push(message) > this.maxHeld) {
          this.stats.topics.gaps++
          this.sessions.topicLost(subscriber)
        }
        return
      }
      // Its connection writes the shared frame too, unless it compresses (its route's compressor sees the string).
      const connection = subscriber.socket
      const frame = connection !== null && connection.readyState === OPEN && connection[kCompressFrom] === Infinity
        ? frameOf(topic, message, connection[kFramed])
        : undefined
      keepPublished(subscriber, place, message, frame, this.stats)
      return
    }
    const socket = subscriber as ReliableSocket
    // Closing: its subscriptions end with its 'close' event.
    if (socket.readyState !== OPEN) return
    const route = socket[kRoute]!
    // A frame between the fragments of a message the application is sending would corrupt both.
    if (socket[kMidMessage]) {
      route.counters.dropped++
      this.dropped(topic)
      return
    }
    if (socket[kOverHighWater]) {
      const buffered: number = socket.bufferedAmount
      if (buffered > route.backpressure.highWaterMark) {
        refuse(socket, route, buffered, undefined)
        this.dropped(topic)
        return
      }
    }
    // A socket that compresses takes the ordinary path: its route's shared compressor sees the same string once.
    if (socket[kCompressFrom] !== Infinity || !writeFrame(socket, frameOf(topic, message, socket[kFramed]))) {
      socket[kTransmit](message.data, message.binary, undefined)
    } else {
      watchHighWater(socket, route)
    }
    route.counters.messagesSent++
    stats.delivered++
  }

  private dropped (topic: Topic): void {
    topic.dropped++
    this.stats.topics.dropped++
  }
}

/**
 * A message of a topic for a session subscribed to it: kept, and where the session stands in the topic from then on,
 * unless it has it already (read from the topic's history as it caught up). False when the session has ended (it
 * overflowed: the registry counted it, and it has left its topics).
 */
export function keepPublished (session: Session, place: TopicPlace, message: Delivery, frame: Buffer[] | undefined, stats: Counters): boolean {
  if (message.offset <= place.offset && message.epoch === place.epoch) return true
  place.epoch = message.epoch
  place.offset = message.offset
  if (!session[kPublished](message.data, message.binary, frame)) return false
  stats.topics.delivered++
  return true
}

function runAgain (fanOut: FanOut): void {
  fanOut.run()
}

/** The message's frame for this socket: on the subprotocol, a text starting with U+0000 goes out escaped. */
function frameOf (topic: Topic, message: Delivery, framed: boolean): Buffer[] {
  const payload = topic.payload ??= typeof message.data === 'string' ? Buffer.from(message.data) : message.data
  if (framed && !message.binary && payload[0] === CONTROL_MARK) {
    topic.escaped ??= frameMessage(Buffer.concat([ZERO, payload]), false)
    return topic.escaped
  }
  topic.frame ??= frameMessage(payload, message.binary)
  return topic.frame
}
