import { CONTROL_MARK, decodeControl, PING_FRAME, PROTOCOL } from '../protocol'
import { Backoff } from './backoff'
import { DropEvent, GiveUpEvent, ReconnectingEvent, ReliableCloseEvent } from './events'
import { resolveClientOptions } from './options'
import type { ClientSettings, ReliableWebSocketOptions, WebSocketLike } from './options'
import { SendQueue } from './send-queue'
import type { Payload } from './send-queue'

const CONNECTING = 0
const OPEN = 1
const CLOSING = 2
const CLOSED = 3
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
 * heartbeats a browser could not, and so finds a dead or half-open server.
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
  private readonly queue: SendQueue
  private readonly offered: string[]
  private state: State = CONNECTING
  private socket: WebSocketLike | null = null
  private binary: string | undefined
  // The server accepted the subprotocol's name: text is escaped from then on.
  private escaping = false
  // The server said welcome: it speaks the subprotocol, and heartbeats run.
  private framed = false
  private opened = false
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
    this.queue = new SendQueue(this.settings.maxQueuedMessages)
    const { protocols, subprotocol } = this.settings
    this.offered = subprotocol ? [PROTOCOL, ...protocols] : protocols
    this.watchPage(true)
    this.connect()
  }

  get readyState (): number {
    return this.state === WAITING ? CONNECTING : this.state
  }

  /** Bytes the current socket has not yet sent, plus every queued message. */
  get bufferedAmount (): number {
    return (this.socket?.bufferedAmount ?? 0) + this.queue.bytes
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
    if (this.state === OPEN && this.socket!.readyState === OPEN) {
      this.socket!.send(this.escape(data))
      return true
    }
    if (this.state === CLOSING || this.state === CLOSED) return this.drop(data, 'closed')
    if (!this.queue.push(data)) return this.drop(data, 'queueFull')
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
    const socket = new this.settings.WebSocket(this.url, this.offered)
    if (this.binary !== undefined) socket.binaryType = this.binary
    socket.onopen = () => this.onSocketOpen(socket)
    socket.onmessage = (event) => this.onSocketMessage(event.data)
    socket.onclose = (event) => this.onSocketClose(event.code, event.reason, event.wasClean)
    socket.onerror = () => this.emit(new Event('error'))
    this.socket = socket
    this.arm(Date.now() + this.settings.connectTimeoutMs)
  }

  private onSocketOpen (socket: WebSocketLike): void {
    this.state = OPEN
    this.openedAt = this.lastReceivedAt = Date.now()
    this.pingSentAt = 0
    this.escaping = socket.protocol === PROTOCOL
    // The heartbeat starts with the server's welcome; until then only the connect timeout is off.
    this.clearTimer()
    while (this.queue.length > 0 && socket.readyState === OPEN) socket.send(this.escape(this.queue.shift()))
    const reconnected = this.opened
    this.opened = true
    this.emit(new Event('open'))
    if (reconnected) this.emit(new Event('reconnected'))
  }

  private onSocketMessage (data: unknown): void {
    this.lastReceivedAt = Date.now()
    if (this.escaping && typeof data === 'string' && data.charCodeAt(0) === CONTROL_MARK) {
      if (data.charCodeAt(1) !== CONTROL_MARK) return this.onControl(data)
      data = data.slice(1)
    }
    this.emit(new MessageEvent('message', { data }))
  }

  // Frames that do not parse, and types this version does not know, are ignored: a newer server may send them.
  private onControl (text: string): void {
    const control = decodeControl(text.slice(1))
    if (control?.t === 'welcome' && !this.framed) {
      this.framed = true
      if (this.settings.heartbeat !== false) this.arm(this.lastReceivedAt + this.settings.heartbeat.intervalMs)
    }
  }

  private onSocketClose (code: number, reason: string, wasClean: boolean): void {
    this.detach()
    this.ended(code, reason, wasClean)
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
    socket.onopen = socket.onmessage = socket.onclose = null
    // ws reports a handshake it aborts as an error: nobody listens any more, but it must not go unheard.
    socket.onerror = ignore
    this.socket = null
    this.escaping = this.framed = false
    this.clearTimer()
    return socket
  }

  /** A connection ended: reconnect, or give up, or finish an application close. */
  private ended (code: number, reason: string, wasClean: boolean): void {
    if (this.state === CLOSING) {
      this.state = CLOSED
      this.emit(new ReliableCloseEvent(code, reason, wasClean, false))
      return
    }
    if (this.state === OPEN) this.backoff.connectionEnded(Date.now() - this.openedAt)
    const retry = this.settings.shouldReconnect({ code, reason, wasClean })
    if (!retry || this.backoff.exhausted) return this.giveUp(code, reason, wasClean, retry ? 'maxRetries' : 'closeCode')
    const delayMs = this.backoff.next()
    this.state = WAITING
    this.emit(new ReliableCloseEvent(code, reason, wasClean, true))
    // A listener may have called close().
    if (this.state !== WAITING) return
    this.emit(new ReconnectingEvent(this.backoff.attempt, delayMs, code))
    if (this.state === WAITING) this.arm(Date.now() + delayMs)
  }

  private giveUp (code: number, reason: string, wasClean: boolean, why: 'closeCode' | 'maxRetries'): void {
    this.state = CLOSED
    this.watchPage(false)
    this.emit(new ReliableCloseEvent(code, reason, wasClean, false))
    this.emit(new GiveUpEvent(why, code))
    this.dropQueued()
  }

  private timerDue (): void {
    this.timer = undefined
    const now = Date.now()
    // Clocks can step: a timer may come back before its deadline.
    if (now < this.deadline) return this.arm(this.deadline)
    if (this.state === WAITING) return this.connect()
    if (this.state === OPEN) return this.heartbeat(now)
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
    this.socket!.send(PING_FRAME)
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

  private dropQueued (): void {
    for (const data of this.queue.clear()) this.drop(data, 'closed')
  }

  // The on<event> property runs first, then the listeners: the order browsers give a handler set before them.
  private emit (event: Event): void {
    const handler = (this as unknown as Record<string, unknown>)['on' + event.type]
    if (typeof handler === 'function') handler.call(this, event)
    this.dispatchEvent(event)
  }
}

function ignore (): void {}
