import type fastifyReliableWs = require('../../types/index')
import { DELIVER, DROP, WAIT } from '../core/shapes'
import type { ReliableSocket, SessionRoute, SocketSession, TopicPlace, Verdict } from '../core/shapes'
import { kDeliver, kPlaces, kPublished, kSendControl, kSession, kTopics, kTransmit, kWheelPos, kWheelTick } from '../core/symbols'
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
  /** With `resume.durable`: the session is to be kept in the store before it goes on (messages to send, the client's to count). */
  dirty (session: Session): void
  /** A message of the client's reached the application again, marked `redelivered`. */
  redelivered (): void
}

interface Outgoing {
  readonly data: unknown
  readonly binary: boolean
  readonly bytes: number
  // Waiting to be kept in the store (resume.durable), the callback its first transmission is to call.
  cb: SendCallback | undefined
}

/** What a keep of the session wrote: its counts then. */
export interface Kept {
  readonly sent: number
  readonly received: number
  readonly reserved: number
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
  // With resume.durable, what the store keeps: messages up to number keptSent (only those go out), the client's
  // messages counted (acknowledgements never say more) and reserved (none reaches the application past it). Without,
  // everything at once.
  private keptSent = Infinity
  private keptReceived = Infinity
  private reserved = Infinity
  // Message number last transmitted on the current connection (durable only).
  private transmitted = 0
  // After a crash of the instance before: the client's messages up to this number may have reached the application.
  private redeliverUntil = 0
  /** During a `message` event: whether the application may have had this message before (resume.durable). */
  redelivered = false
  // The client's messages the application had already, sent again on this connection (a resume here, the count kept
  // behind it): dropped, uncounted.
  private skip = 0
  // The client's messages on the current connection waiting for their reservation, in order; reading is paused meanwhile.
  private readonly waiting: Array<[unknown, boolean]> = []
  private pausedHere = false

  constructor (
    readonly id: string,
    readonly route: SessionRoute,
    private readonly registry: SessionBudget,
    readonly url: string,
    readonly owner: string | null,
    /** The address of its latest connection, for the per-address cap. */
    public ip: string
  ) {
    if (route.resume.durable) this.keptSent = this.keptReceived = this.reserved = 0
  }

  get connected (): boolean {
    return this.socket !== null
  }

  /** Data messages sent in the session, acknowledged or not. */
  get sent (): number {
    return this.acked + this.unacknowledged
  }

  /** Data messages sent in the session that may have reached the client: with resume.durable, those the store keeps. */
  get sentKept (): number {
    return Math.min(this.sent, this.keptSent)
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
    this.bufferedBytes += bytes
    this.route.counters.messagesSent++
    if (this.keptSent === Infinity) {
      this.outbox.push({ data, binary, bytes, cb: undefined })
      if (this.socket !== null) this.socket[kTransmit](data, binary, cb, frame)
      return true
    }
    // Goes out once the store keeps it: an instance that dies has sent nothing its successor does not have.
    this.outbox.push({ data, binary, bytes, cb })
    this.registry.dirty(this)
    return true
  }

  /** The store keeps what `kept` says (resume.durable): what it covers goes out, and the client's messages it reserved come in. */
  landed (kept: Kept): void {
    if (this.ended) return
    this.keptSent = kept.sent
    this.keptReceived = kept.received
    this.reserved = kept.reserved
    if (this.socket === null) return
    this.transmit()
    if (this.counted - this.receivedAcked >= ACK_EVERY) this.sendAck()
    this.admit()
  }

  /** Sends the messages kept and not yet sent on the current connection. */
  private transmit (): void {
    const socket = this.socket!
    const last = Math.min(this.keptSent, this.sent)
    for (let n = Math.max(this.transmitted, this.acked) + 1; n <= last; n++) {
      const message = this.outbox[this.head + n - this.acked - 1]!
      socket[kTransmit](message.data, message.binary, message.cb)
      message.cb = undefined
    }
    if (last > this.transmitted) this.transmitted = last
  }

  /** The client's messages that waited for their reservation, as far as it goes; reading goes on once none waits. */
  private admit (): void {
    const socket = this.socket!
    // Ended by the application's handler of one of them (it overflowed the session, say): the rest go nowhere.
    while (this.waiting.length > 0 && this.received < this.reserved && !this.ended) {
      const [data, binary] = this.waiting.shift()!
      this.count()
      socket[kDeliver](data, binary)
    }
    if (this.waiting.length === 0 && this.pausedHere) {
      this.pausedHere = false
      socket.resume()
    }
  }

  /** It subscribed or unsubscribed: with resume.durable, the store is to know before a crash could lose that. */
  subscriptionsChanged (): void {
    if (this.keptReceived !== Infinity) this.registry.dirty(this)
  }

  /** A message of the client's waits for its reservation: reading stops until it comes. */
  hold (data: unknown, binary: boolean): void {
    this.waiting.push([data, binary])
    this.pausedHere = true
    this.socket!.pause()
    this.registry.dirty(this)
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
    // Durable: messages not kept yet were never sent either.
    if (n > this.sentKept) return false
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
   * A data message from the client is on its way to the application: dropped when the session was handed to another
   * instance (the client sends it again there, as it was not acknowledged), or when the application had it already;
   * waiting when the store has not reserved its number yet (resume.durable).
   */
  onMessage (): Verdict {
    if (this.ended) return DROP
    this.heard()
    if (this.skip > 0) {
      this.skip--
      return DROP
    }
    // Those waiting already are past the reservation too: this one waits behind them.
    if (this.received >= this.reserved) return WAIT
    this.count()
    return DELIVER
  }

  private count (): void {
    const received = ++this.received
    if (this.keptReceived !== Infinity) {
      this.redelivered = received <= this.redeliverUntil
      if (this.redelivered) this.registry.redelivered()
      // Reserved ahead, half a window at a time: reading seldom waits for the store.
      if (received >= this.reserved - this.route.resume.receiveWindow / 2) this.registry.dirty(this)
    }
    if (this.counted - this.receivedAcked >= ACK_EVERY) this.sendAck()
  }

  /** What the client may be told the session has of its messages: with resume.durable, no more than the store counts. */
  private get counted (): number {
    return this.received < this.keptReceived ? this.received : this.keptReceived
  }

  /** A frame from the client on its current connection: the first tells the record (a handed-over record no more). */
  heard (): void {
    if (this.heardHere || this.ended) return
    this.heardHere = true
    this.registry.heard(this)
  }

  /** The count of messages received, for a ping's answer; it acknowledges them too. */
  pong (): string {
    this.receivedAcked = this.counted
    return encodeControl({ t: 'pong', n: this.receivedAcked })
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
    this.receivedAcked = this.counted
    this.skip = this.received - this.receivedAcked
    this.waiting.length = 0
    this.pausedHere = false
    socket[kSendControl](encodeControl({ t: 'welcome', session: this.id, token: secret, resumed: this.resumed, n: this.receivedAcked }))
    this.transmitted = 0
    this.transmit()
  }

  /** Its connection is gone: the client's messages that waited for it are the client's to send again. */
  detach (): void {
    this.socket = null
    this.waiting.length = 0
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
      this.outbox.push({ data, binary, bytes, cb: undefined })
      this.bufferedBytes += bytes
    }
    // A durable claim left it all in the store, as this instance's: its instance before may have died after it let
    // the application have the client's messages up to `reserved`.
    if (this.keptSent !== Infinity) {
      this.keptSent = this.sent
      this.keptReceived = handover.received
      this.reserved = this.redeliverUntil = handover.reserved ?? handover.received
    }
    return true
  }

  /**
   * Calls the callbacks of messages that waited to be kept (resume.durable): with an error when they never go out,
   * without when they go with a handover (its next holder sends them).
   */
  settleCallbacks (failed: boolean): void {
    for (let i = this.head; i < this.outbox.length; i++) {
      const message = this.outbox[i]!
      if (message.cb !== undefined) process.nextTick(message.cb, failed ? new FST_RELIABLE_WS_SESSION_ENDED() : undefined)
      message.cb = undefined
    }
  }

  /** Lets go of every message it holds; returns their bytes and count, for the instance's budget. */
  clear (): { bytes: number, count: number } {
    const freed = { bytes: this.bufferedBytes, count: this.unacknowledged }
    this.settleCallbacks(true)
    this.outbox.length = this.head = this.bufferedBytes = 0
    return freed
  }

  /** Room for one more message of `bytes` under the session's limits and the instance's, taken if there is. */
  private fits (bytes: number): boolean {
    const { maxBufferedMessages, maxBufferedBytes } = this.route.resume
    return this.unacknowledged < maxBufferedMessages && this.bufferedBytes + bytes <= maxBufferedBytes && this.registry.reserve(this, bytes)
  }

  private sendAck (): void {
    this.receivedAcked = this.counted
    this.socket![kSendControl](encodeControl({ t: 'ack', n: this.receivedAcked }))
  }
}

/** The bytes of a message the application sent as a Buffer, typed array or ArrayBuffer, without copying them. */
export function bytesOf (data: ArrayBuffer | ArrayBufferView): Buffer {
  return ArrayBuffer.isView(data) ? Buffer.from(data.buffer, data.byteOffset, data.byteLength) : Buffer.from(data)
}
