import { ACK_EVERY, CLOSED, CLOSING, CONNECTING, CONTROL_MARK, countOf, decodeControl, encodeControl, isSessionKey, OPEN, PING_FRAME, PROTOCOL, resumeToken, SESSION_OVERFLOW_CODE, STATE_LOST_CODE, TOPIC_GAP_CODE } from '../protocol/protocol'
import { Backoff } from './backoff'
import { DropEvent, GiveUpEvent, ReconnectingEvent, ReliableCloseEvent, SessionLostEvent } from './events'
import { resolveClientOptions } from './options'
import type { ClientSettings, ReliableWebSocketOptions, WebSocketLike } from './options'
import { Outbox } from './outbox'
import type { Payload } from './outbox'

// Between two attempts: readyState CONNECTING, no socket.
const WAITING = 4
type State = typeof CONNECTING | typeof OPEN | typeof CLOSING | typeof CLOSED | typeof WAITING

export interface ReliableWebSocketEventMap {
  open: Event
  message: MessageEvent
  close: ReliableCloseEvent
  error: Event
  reconnecting: ReconnectingEvent
  reconnected: Event
  giveup: GiveUpEvent
  drop: DropEvent
  sessionlost: SessionLostEvent
}

type Handler<K extends keyof ReliableWebSocketEventMap> = ((event: ReliableWebSocketEventMap[K]) => void) | null

// What a browser page offers for waking a client early; absent in Node.
interface PageGlobals {
  addEventListener?: (type: string, listener: () => void) => void
  removeEventListener?: (type: string, listener: () => void) => void
  document?: { visibilityState?: string, addEventListener: (type: string, listener: () => void) => void, removeEventListener: (type: string, listener: () => void) => void }
}

/**
 * A WebSocket that reconnects. It has the browser WebSocket's API, and keeps
 * it across connections: messages sent while disconnected are queued and sent
 * in order on the next connection; on the reliable subprotocol it sends
 * heartbeats a browser could not, and so finds a dead or half-open server;
 * on a route with sessions it resumes the session, so that every message
 * either side sends is delivered once, in order (docs/protocol.md).
 *
 * One timer at most, whose meaning follows the state: the connect (or close)
 * timeout, the heartbeat, or the wait before the next attempt. Its deadlines
 * are wall-clock times: a timer a background tab held back fires late but
 * never pushes the deadlines after it, and the page coming back (visible,
 * online) checks them at once.
 */
export class ReliableWebSocket extends EventTarget {
  static readonly CONNECTING = CONNECTING
  static readonly OPEN = OPEN
  static readonly CLOSING = CLOSING
  static readonly CLOSED = CLOSED
  readonly CONNECTING = CONNECTING
  readonly OPEN = OPEN
  readonly CLOSING = CLOSING
  readonly CLOSED = CLOSED

  readonly url: string
  onopen: Handler<'open'> = null
  onmessage: Handler<'message'> = null
  onclose: Handler<'close'> = null
  onerror: Handler<'error'> = null

  private readonly settings: ClientSettings
  private readonly backoff: Backoff
  private readonly outbox: Outbox
  private state: State = CONNECTING
  private socket: WebSocketLike | null = null
  private binary: string | undefined
  // The server accepted the subprotocol's name: text is escaped from then on.
  private escaping = false
  // The server said welcome: it speaks the subprotocol, and heartbeats run.
  private framed = false
  private opened = false
  // The session, when the server keeps one: its id, the secret for the next resume (each welcome gives a new one),
  // the data messages received in it, how many of those the server was last told of, and how many of the client's
  // it has acknowledged.
  private sessionId: string | null = null
  private secret: string | null = null
  private received = 0
  private receivedAcked = 0
  // Outbox entries written on the current connection; in a session, entries written on any connection
  // (the ones whose fate is unknown if the session is lost).
  private written = 0
  private everWritten = 0
  private acked = 0
  // The server's hint (a restart) or Retry-After (a 503 or 429): the delay before the next attempt.
  private retryHintMs = -1
  // The HTTP status the current attempt's upgrade was refused with, where the WebSocket class shows it.
  private refusedStatus: number | undefined = undefined
  private openedAt = 0
  private lastReceivedAt = 0
  private pingSentAt = 0
  private timer: ReturnType<typeof setTimeout> | undefined = undefined
  private deadline = 0
  private readonly onTimer = (): void => this.timerDue()
  private readonly wake = (): void => this.pageAwake()

  constructor (url: string | URL, options?: ReliableWebSocketOptions) {
    super()
    this.settings = resolveClientOptions(options)
    this.url = String(url)
    this.backoff = new Backoff(this.settings.backoff)
    this.outbox = new Outbox(this.settings.maxQueuedMessages)
    this.watchPage(true)
    this.connect()
  }

  get readyState (): number {
    return this.state === WAITING ? CONNECTING : this.state
  }

  /** Bytes the current socket has not yet sent, plus every message waiting to be written. */
  get bufferedAmount (): number {
    return (this.socket?.bufferedAmount ?? 0) + this.outbox.bytesFrom(this.written)
  }

  /** The session's id while the server keeps one for this client, else null. */
  get session (): string | null {
    return this.sessionId
  }

  get protocol (): string {
    return this.socket?.protocol ?? ''
  }

  get extensions (): string {
    return this.socket?.extensions ?? ''
  }

  /** Applied to every connection; left unset, each keeps its class's default ('blob' in browsers, 'nodebuffer' in ws). */
  get binaryType (): string {
    return this.binary ?? this.socket?.binaryType ?? 'blob'
  }

  set binaryType (type: string) {
    this.binary = type
    if (this.socket !== null) this.socket.binaryType = type
  }

  /**
   * Sends now when connected, else queues the message for the next
   * connection. Returns false, and fires 'drop', when the message will never
   * be sent: the queue is full, or the client was closed or gave up.
   */
  send (data: Payload): boolean {
    if (this.state === CLOSING || this.state === CLOSED) return this.drop(data, 'closed')
    const writable = this.state === OPEN && this.socket!.readyState === OPEN
    // Without a session a message is done with once written: it skips the outbox.
    if (writable && this.sessionId === null) {
      this.socket!.send(this.escape(data))
      return true
    }
    if (!this.outbox.push(data)) return this.drop(data, 'queueFull')
    if (writable) this.flush()
    return true
  }

  sendJSON (value: unknown): boolean {
    return this.send(JSON.stringify(value))
  }

  /** Closes for good: no reconnection follows, and whatever is still queued is dropped. */
  close (code?: number, reason?: string): void {
    if (code !== undefined && code !== 1000 && !(code >= 3000 && code <= 4999)) {
      throw new RangeError(`close code must be 1000 or in 3000-4999, got ${code}`)
    }
    if (this.state === CLOSING || this.state === CLOSED) return
    this.watchPage(false)
    if (this.socket === null) {
      this.clearTimer()
      this.state = CLOSED
      this.dropQueued()
      this.emit(new ReliableCloseEvent(code ?? 1000, reason ?? '', true, false))
      return
    }
    this.state = CLOSING
    this.dropQueued()
    this.socket.close(code, reason)
    this.arm(Date.now() + this.settings.connectTimeoutMs)
  }

  override addEventListener<K extends keyof ReliableWebSocketEventMap> (type: K, listener: (event: ReliableWebSocketEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void
  override addEventListener (type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void
  override addEventListener (type: string, listener: any, options?: boolean | AddEventListenerOptions): void {
    super.addEventListener(type, listener, options)
  }

  override removeEventListener<K extends keyof ReliableWebSocketEventMap> (type: K, listener: (event: ReliableWebSocketEventMap[K]) => void, options?: boolean | EventListenerOptions): void
  override removeEventListener (type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void
  override removeEventListener (type: string, listener: any, options?: boolean | EventListenerOptions): void {
    super.removeEventListener(type, listener, options)
  }

  private connect (): void {
    this.state = CONNECTING
    this.refusedStatus = undefined
    this.backoff.attemptStarted()
    const { protocols, subprotocol } = this.settings
    const offered = !subprotocol
      ? protocols
      : this.secret === null ? [PROTOCOL, ...protocols] : [PROTOCOL, resumeToken(this.sessionId!, this.secret, this.received), ...protocols]
    const socket = new this.settings.WebSocket(this.url, offered, this.settings.socketOptions)
    if (this.binary !== undefined) socket.binaryType = this.binary
    socket.onopen = () => this.onSocketOpen(socket)
    socket.onmessage = (event) => this.onSocketMessage(event.data)
    socket.onclose = (event) => this.onSocketClose(event.code, event.reason, event.wasClean)
    socket.onerror = () => this.emit(new Event('error'))
    // ws (Node) shows the refused upgrade's response; a browser shows nothing of it.
    ;(socket as { on?: (event: string, listener: (...args: any[]) => void) => void }).on?.('unexpected-response', (_request: unknown, response: { statusCode: number, headers: Record<string, string | undefined> }) => {
      this.refusedStatus = response.statusCode
      this.retryHintMs = retryAfterMs(response.statusCode, response.headers['retry-after'])
      socket.terminate!()
    })
    this.socket = socket
    this.arm(Date.now() + this.settings.connectTimeoutMs)
  }

  private onSocketOpen (socket: WebSocketLike): void {
    this.backoff.upgraded()
    this.lastReceivedAt = Date.now()
    this.escaping = socket.protocol === PROTOCOL
    // On the subprotocol the connection is ready once the server's welcome has said where the session stands;
    // the connect timeout keeps running until then.
    if (!this.escaping) this.ready()
  }

  /** The connection is ready for the application: flush what waited for it, then tell the application. */
  private ready (): void {
    this.state = OPEN
    this.openedAt = Date.now()
    this.pingSentAt = 0
    this.clearTimer()
    if (this.framed && this.settings.heartbeat !== false) this.arm(this.lastReceivedAt + this.settings.heartbeat.intervalMs)
    this.flush()
    const reconnected = this.opened
    this.opened = true
    this.emit(new Event('open'))
    if (reconnected) this.emit(new Event('reconnected'))
  }

  /** Writes the outbox from where this connection stands; without a session, what is written is done with. */
  private flush (): void {
    const socket = this.socket!
    while (this.written < this.outbox.length && socket.readyState === OPEN) socket.send(this.escape(this.outbox.at(this.written++)))
    if (this.sessionId === null) this.written -= this.outbox.take(this.written).length
    else if (this.written > this.everWritten) this.everWritten = this.written
  }

  private onSocketMessage (data: unknown): void {
    this.lastReceivedAt = Date.now()
    if (this.escaping && typeof data === 'string' && data.charCodeAt(0) === CONTROL_MARK) {
      if (data.charCodeAt(1) !== CONTROL_MARK) return this.onControl(data)
      data = data.slice(1)
    }
    if (this.sessionId !== null && ++this.received - this.receivedAcked >= ACK_EVERY) this.sendControl('ack')
    this.emit(new MessageEvent('message', { data }))
  }

  // Frames that do not parse, and types this version does not know, are ignored: a newer server may send them.
  private onControl (text: string): void {
    const control = decodeControl(text.slice(1))
    if (control === null) return
    const n = countOf(control.n)
    if (control.t === 'welcome') {
      if (this.framed) return
      this.framed = true
      this.join(isSessionKey(control.session) ? control.session : null, control.resumed === true, n ?? 0)
      this.secret = this.sessionId !== null && isSessionKey(control.token) ? control.token : null
      // Heard on this connection, the server lets go of the secret it came with.
      if (this.secret !== null) this.sendControl('ack')
      // A 'sessionlost' listener may have closed the client.
      if (this.state === CONNECTING) this.ready()
    } else if (control.t === 'retry') {
      this.retryHintMs = countOf(control.ms) ?? -1
    } else if (n !== undefined && this.sessionId !== null) {
      // An ack, or a pong carrying one.
      this.acknowledge(n)
    }
  }

  /**
   * The welcome named a session (or none). If it is not the one this client
   * had, the old one is lost. In a resumed session, what the server has
   * acknowledged leaves the outbox and the rest is written again.
   */
  private join (id: string | null, resumed: boolean, acknowledged: number): void {
    if (this.sessionId !== null && (id !== this.sessionId || !resumed || !this.acknowledge(acknowledged))) this.loseSession()
    this.sessionId = id
    this.receivedAcked = this.received
    this.written = 0
  }

  /** The server has received `n` of this session's messages: those leave the outbox. */
  private acknowledge (n: number): boolean {
    const count = n - this.acked
    // An acknowledgement overtaken by a later one (a pong behind an ack) says nothing new.
    if (count < 0) return true
    if (count > this.everWritten) return false
    this.outbox.take(count)
    this.acked = n
    this.written = Math.max(0, this.written - count)
    this.everWritten -= count
    return true
  }

  private loseSession (): void {
    const unconfirmed = this.outbox.take(this.everWritten)
    this.sessionId = this.secret = null
    this.received = this.receivedAcked = this.acked = this.written = this.everWritten = 0
    this.emit(new SessionLostEvent(unconfirmed))
  }

  private sendControl (type: 'ack' | 'ping'): void {
    this.receivedAcked = this.received
    this.socket!.send(this.sessionId === null ? PING_FRAME : encodeControl({ t: type, n: this.received }))
  }

  private onSocketClose (code: number, reason: string, wasClean: boolean): void {
    this.detach()
    this.ended(code, reason, wasClean, this.refusedStatus)
  }

  /** The current socket is given up on without waiting for it to close (a peer that is gone never answers). */
  private abandon (reason: string): void {
    const socket = this.detach()
    if (socket.terminate !== undefined) socket.terminate()
    else socket.close()
    this.ended(1006, reason, false)
  }

  private detach (): WebSocketLike {
    const socket = this.socket!
    this.written = 0
    socket.onopen = socket.onmessage = socket.onclose = null
    // ws reports a handshake it aborts as an error: nobody listens any more, but it must not go unheard.
    socket.onerror = ignore
    this.socket = null
    this.escaping = this.framed = false
    this.clearTimer()
    return socket
  }

  /** A connection ended: reconnect, or give up, or finish an application close. */
  private ended (code: number, reason: string, wasClean: boolean, status?: number): void {
    if (this.state === CLOSING) {
      this.state = CLOSED
      this.emit(new ReliableCloseEvent(code, reason, wasClean, false))
      return
    }
    if (this.state === OPEN) this.backoff.connectionEnded(Date.now() - this.openedAt)
    if ((code === SESSION_OVERFLOW_CODE || code === TOPIC_GAP_CODE || code === STATE_LOST_CODE) && this.sessionId !== null) this.loseSession()
    const retry = this.settings.shouldReconnect(status === undefined ? { code, reason, wasClean } : { code, reason, wasClean, status })
    if (!retry || this.backoff.exhausted) {
      return this.giveUp(code, reason, wasClean, retry ? 'maxRetries' : status === undefined ? 'closeCode' : 'httpStatus', status)
    }
    // A hint from the server replaces the backoff's delay, and still counts as an attempt.
    const backoffMs = this.backoff.next()
    const delayMs = this.retryHintMs >= 0 ? this.retryHintMs : backoffMs
    this.retryHintMs = -1
    this.state = WAITING
    this.emit(new ReliableCloseEvent(code, reason, wasClean, true))
    // A listener may have called close().
    if (this.state !== WAITING) return
    this.emit(new ReconnectingEvent(this.backoff.attempt, delayMs, code))
    if (this.state === WAITING) this.arm(Date.now() + delayMs)
  }

  private giveUp (code: number, reason: string, wasClean: boolean, why: GiveUpEvent['reason'], status: number | undefined): void {
    this.state = CLOSED
    this.watchPage(false)
    this.emit(new ReliableCloseEvent(code, reason, wasClean, false))
    this.emit(new GiveUpEvent(why, code, status))
    this.dropQueued()
  }

  private timerDue (): void {
    this.timer = undefined
    const now = Date.now()
    // Clocks can step: a timer may come back before its deadline.
    if (now < this.deadline) return this.arm(this.deadline)
    if (this.state === WAITING) return this.connect()
    if (this.state === OPEN) return this.heartbeat(now)
    // Open, but no welcome: the server echoed the subprotocol's name without speaking it.
    if (this.state === CONNECTING && this.socket!.readyState === OPEN) {
      this.escaping = false
      return this.ready()
    }
    this.abandon(this.state === CLOSING ? 'Close timeout' : 'Connect timeout')
  }

  /**
   * Any frame from the server is a sign of life. After `intervalMs` of
   * silence a ping goes out; no frame within `timeoutMs` of it, and the
   * server is taken for gone: at most intervalMs + timeoutMs after its last frame.
   */
  private heartbeat (now: number): void {
    const { intervalMs, timeoutMs } = this.settings.heartbeat as { intervalMs: number, timeoutMs: number }
    if (this.pingSentAt !== 0) {
      if (this.lastReceivedAt < this.pingSentAt) {
        if (now >= this.pingSentAt + timeoutMs) return this.abandon('Heartbeat timeout')
        return this.arm(this.pingSentAt + timeoutMs)
      }
      this.pingSentAt = 0
    }
    const pingAt = this.lastReceivedAt + intervalMs
    if (now < pingAt) return this.arm(pingAt)
    this.sendControl('ping')
    this.pingSentAt = now
    this.arm(now + timeoutMs)
  }

  /** The page is visible again, or back online: a pending attempt goes now, a heartbeat deadline is checked. */
  private pageAwake (): void {
    const document = (globalThis as PageGlobals).document
    if (document?.visibilityState === 'hidden') return
    if (this.state === WAITING) {
      this.clearTimer()
      this.connect()
    } else if (this.state === OPEN && this.framed && this.settings.heartbeat !== false) {
      this.clearTimer()
      this.heartbeat(Date.now())
    }
  }

  private watchPage (on: boolean): void {
    const page = globalThis as PageGlobals
    if (typeof page.addEventListener !== 'function' || page.document === undefined) return
    const method = on ? 'addEventListener' : 'removeEventListener'
    page[method]!('online', this.wake)
    page.document[method]('visibilitychange', this.wake)
  }

  private arm (deadline: number): void {
    if (this.timer !== undefined) clearTimeout(this.timer)
    this.deadline = deadline
    this.timer = setTimeout(this.onTimer, Math.max(0, deadline - Date.now()))
  }

  private clearTimer (): void {
    if (this.timer === undefined) return
    clearTimeout(this.timer)
    this.timer = undefined
  }

  private escape (data: Payload): Payload {
    return this.escaping && typeof data === 'string' && data.charCodeAt(0) === CONTROL_MARK ? '\u0000' + data : data
  }

  private drop (data: Payload, reason: 'queueFull' | 'closed'): false {
    this.emit(new DropEvent(data, reason))
    return false
  }

  /** The client is done: what it never sent is dropped; what it sent and the server has not acknowledged is let go. */
  private dropQueued (): void {
    this.outbox.take(this.everWritten)
    this.written = this.everWritten = 0
    for (const data of this.outbox.clear()) this.drop(data, 'closed')
  }

  // The on<event> property runs first, then the listeners: the order browsers give a handler set before them.
  private emit (event: Event): void {
    const handler = (this as unknown as Record<string, unknown>)['on' + event.type]
    if (typeof handler === 'function') handler.call(this, event)
    this.dispatchEvent(event)
  }
}

function ignore (): void {}

/** How long a refused upgrade asks the client to wait: Retry-After on a 503 or 429, in seconds or as a date. */
function retryAfterMs (status: number, header: string | undefined): number {
  if ((status !== 503 && status !== 429) || header === undefined) return -1
  const seconds = Number(header)
  if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000
  const at = Date.parse(header)
  return Number.isNaN(at) ? -1 : Math.max(0, at - Date.now())
}
