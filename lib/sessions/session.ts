import type fastifyReliableWs = require('../../types/index')
import type { ReliableSocket, SessionRoute, SocketSession, TopicPlace } from '../core/shapes'
import { kPlaces, kPublished, kSendControl, kSession, kTopics, kTransmit, kWheelPos, kWheelTick } from '../core/symbols'
import { FST_RELIABLE_WS_SESSION_ENDED } from '../core/errors'
import { toJSONText } from '../messages/json-messages'
import { ACK_EVERY, encodeControl } from '../protocol/protocol'

type SendCallback = (err?: Error) => void
type SessionHandover = fastifyReliableWs.SessionHandover

/**
 * What a session asks of the instance's sessions (session-registry.ts): room for its messages under their limits,
 * and word to its record that the client was heard.
 */
export interface SessionBudget {
  reserve (session: Session, bytes: number): boolean
  overflow (session: Session): void
  release (bytes: number, count: number): void
  heard (session: Session): void
}

interface Outgoing {
  readonly data: unknown
  readonly binary: boolean
  readonly bytes: number
}

// Sent messages the client has acknowledged leave the front of the outbox; it is compacted once they are most of it.
const COMPACT_AFTER = 1024

/**
 * One client's conversation across its connections. Messages are numbered
 * by position: the n-th data message either side sends in the session is
 * message n, so a count is all an acknowledgement needs. Sent messages stay
 * in the outbox until the client acknowledges them, and are sent again, in
 * order, when it resumes; the count of messages received tells the client
 * where to resume its own.
 *
 * Who may resume it is the store's judgement, on the session's record
 * (session-store.ts); this is the live copy its instance holds.
 */
export class Session implements SocketSession {
  [kWheelTick] = -1;
  [kWheelPos] = -1;
  [kTopics]: Set<string> | null = null;
  [kPlaces]: Map<string, TopicPlace> | null = null
  socket: ReliableSocket | null = null
  resumed = false
  ended = false
  /** Bytes of the messages the client has not acknowledged. */
  bufferedBytes = 0
  /** Data messages received from the client in this session. */
  received = 0
  // Messages the client has acknowledged; outbox[head + i] is message acked + 1 + i.
  private acked = 0
  private readonly outbox: Array<Outgoing | undefined> = []
  private head = 0
  private receivedAcked = 0
  /** The fence of the claim this instance holds it by: every write to its record names it. */
  fence = 0
  // Whether the client has been heard on its current connection: it has had the welcome (a client sends nothing
  // before it), so the secret it resumed with may be forgotten.
  private heardHere = false

  constructor (
    readonly id: string,
    readonly route: SessionRoute,
    private readonly registry: SessionBudget,
    readonly url: string,
    readonly owner: string | null,
    /** The address of its latest connection, for the per-address cap. */
    public ip: string
  ) {}

  get connected (): boolean {
    return this.socket !== null
  }

  /** Data messages sent in the session, acknowledged or not. */
  get sent (): number {
    return this.acked + this.unacknowledged
  }

  /** Messages sent and not yet acknowledged. */
  get unacknowledged (): number {
    return this.outbox.length - this.head
  }

  /**
   * Sends now if the client is connected, and keeps the message until it is
   * acknowledged. False once the session has ended, or when this message
   * would take it past its limits, which ends it.
   */
  send (data: unknown, options?: { binary?: boolean }, cb?: SendCallback): boolean {
    return this.keep(data, options?.binary ?? typeof data !== 'string', cb, undefined)
  }

  /** A published message, as send; `frame` is its frame as built once for all the topic's subscribers, if it fits this connection. */
  [kPublished] (data: unknown, binary: boolean, frame: Buffer[] | undefined): boolean {
    return this.keep(data, binary, undefined, frame)
  }

  private keep (data: unknown, binary: boolean, cb: SendCallback | undefined, frame: Buffer[] | undefined): boolean {
    if (!this.ended) {
      const bytes = Buffer.byteLength(data as string | Uint8Array)
      if (this.fits(bytes)) return this.push(data, binary, bytes, cb, frame)
      this.registry.overflow(this)
    }
    if (cb !== undefined) process.nextTick(cb, new FST_RELIABLE_WS_SESSION_ENDED())
    return false
  }

  private push (data: unknown, binary: boolean, bytes: number, cb: SendCallback | undefined, frame: Buffer[] | undefined): boolean {
    this.outbox.push({ data, binary, bytes })
    this.bufferedBytes += bytes
    this.route.counters.messagesSent++
    if (this.socket !== null) this.socket[kTransmit](data, binary, cb, frame)
    return true
  }

  sendJSON (value: unknown): boolean {
    return this.send(toJSONText(value))
  }

  /**
   * The client has received `n` messages. False when it claims more than
   * were sent: it is not speaking of this session.
   */
  acknowledge (n: number): boolean {
    const count = n - this.acked
    // An older acknowledgement overtaken by a newer one says nothing new; nor does one to a session handed over,
    // whose messages went with it.
    if (count <= 0 || this.ended) return true
    if (count > this.unacknowledged) return false
    let bytes = 0
    for (let i = this.head; i < this.head + count; i++) {
      bytes += this.outbox[i]!.bytes
      this.outbox[i] = undefined
    }
    this.bufferedBytes -= bytes
    this.registry.release(bytes, count)
    this.head += count
    this.acked = n
    if (this.head >= COMPACT_AFTER && this.head * 2 >= this.outbox.length) {
      this.outbox.splice(0, this.head)
      this.head = 0
    }
    return true
  }

  /**
   * A data message from the client is on its way to the application: false when it is not to reach it, the session
   * having been handed to another instance (the client sends it again there, as it was not acknowledged).
   */
  onMessage (): boolean {
    if (this.ended) return false
    this.heard()
    if (++this.received - this.receivedAcked >= ACK_EVERY) this.sendAck()
    return true
  }

  /** A frame from the client on its current connection: the first tells the record (a handed-over record no more). */
  heard (): void {
    if (this.heardHere || this.ended) return
    this.heardHere = true
    this.registry.heard(this)
  }

  /** The count of messages received, for a ping's answer; it acknowledges them too. */
  pong (): string {
    this.receivedAcked = this.received
    return encodeControl({ t: 'pong', n: this.received })
  }

  /**
   * Makes `socket` the session's connection, given how many messages the
   * client has received (checked by the store's claim): says welcome (with
   * `secret`, for the next resume, and how many of the client's messages the
   * session has), then sends again every message the client has not had.
   */
  attach (socket: ReliableSocket, clientReceived: number, secret: string): void {
    this.acknowledge(clientReceived)
    this.heardHere = false
    this.socket = socket
    socket[kSession] = this
    this.receivedAcked = this.received
    socket[kSendControl](encodeControl({ t: 'welcome', session: this.id, token: secret, resumed: this.resumed, n: this.received }))
    for (let i = this.head; i < this.outbox.length; i++) {
      const message = this.outbox[i]!
      socket[kTransmit](message.data, message.binary, undefined)
    }
  }

  /**
   * What another instance needs to go on with the session: the counts, the messages the client has not acknowledged,
   * each as a string or a Buffer of its bytes (the outbox keeps whatever the application sent), and its `topics`.
   */
  handOver (topics: SessionHandover['topics']): SessionHandover {
    const messages: SessionHandover['messages'] = []
    for (let i = this.head; i < this.outbox.length; i++) {
      const { data, binary } = this.outbox[i]!
      messages.push({ data: typeof data === 'string' ? data : bytesOf(data as ArrayBuffer | ArrayBufferView), binary })
    }
    return { received: this.received, acknowledged: this.acked, messages, topics }
  }

  /**
   * Takes on what another instance handed over, before the client's connection is attached: the messages count
   * against the session's limits and the instance's as if sent here. False when they do not fit.
   */
  restore (handover: SessionHandover): boolean {
    this.received = handover.received
    this.acked = handover.acknowledged
    for (const { data, binary } of handover.messages) {
      const bytes = Buffer.byteLength(data)
      if (!this.fits(bytes)) return false
      this.outbox.push({ data, binary, bytes })
      this.bufferedBytes += bytes
    }
    return true
  }

  /** Lets go of every message it holds; returns their bytes and count, for the instance's budget. */
  clear (): { bytes: number, count: number } {
    const freed = { bytes: this.bufferedBytes, count: this.unacknowledged }
    this.outbox.length = this.head = this.bufferedBytes = 0
    return freed
  }

  /** Room for one more message of `bytes` under the session's limits and the instance's, taken if there is. */
  private fits (bytes: number): boolean {
    const { maxBufferedMessages, maxBufferedBytes } = this.route.resume
    return this.unacknowledged < maxBufferedMessages && this.bufferedBytes + bytes <= maxBufferedBytes && this.registry.reserve(this, bytes)
  }

  private sendAck (): void {
    this.receivedAcked = this.received
    this.socket![kSendControl](encodeControl({ t: 'ack', n: this.received }))
  }
}

/** The bytes of a message the application sent as a Buffer, typed array or ArrayBuffer, without copying them. */
export function bytesOf (data: ArrayBuffer | ArrayBufferView): Buffer {
  return ArrayBuffer.isView(data) ? Buffer.from(data.buffer, data.byteOffset, data.byteLength) : Buffer.from(data)
}
