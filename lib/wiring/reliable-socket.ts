import type { Socket } from 'node:net'
import type { FastifyBaseLogger } from 'fastify'
import type WebSocket from 'ws'
import type fastifyReliableWs = require('../../types/index')
import { FST_RELIABLE_WS_NO_TOPICS, FST_RELIABLE_WS_NOT_OPEN } from '../core/errors'
import { createIdGenerator } from '../core/ids'
import { ALIVE, DELIVER, WAIT } from '../core/shapes'
import type { PongState, Route, SocketSession, Topics } from '../core/shapes'
import {
  kPongState, kBytesReadAtOpen, kLatency, kBytesWrittenAtOpen, kCause, kNextPingAt, kOpenedAt, kOverHighWater, kPingAt,
  kRoute, kWheelPos, kWheelTick, kHeartbeatDueAt, kLastMessageAt, kTat, kRateNoticeAt, kIp, kLog, kFramed, kSendControl, kSession, kTransmit, kDeliver, kOnConnectPending,
  kCloseCodeSent, kMessageStartedAt, kPendingPongs, kPongSent, kTcp, kErrorListeners, kMidMessage, kCompressFrom, kTopics
} from '../core/symbols'
import { closeFrameReceived, writeFrame } from '../core/ws-internals'
import { refuse, watchHighWater } from '../limits/backpressure'
import { pingFlood } from '../limits/ping-flood'
import { admitMessage } from '../limits/rate-limiter'
import { toJSONText } from '../messages/json-messages'
import { escapeText, unframe } from '../messages/subprotocol'
import { compressionOptions, sizeAtLeast, UNCOMPRESSED } from '../messages/compression'
import { CONTROL_MARK, OPEN } from '../protocol/protocol'

type Cause = fastifyReliableWs.DisconnectInfo['cause']
type SendCallback = fastifyReliableWs.SendCallback

type Listener = (...args: any[]) => void

/**
 * What the subclass below takes from ws's WebSocket as declared here rather than through Omit: the methods it overrides,
 * typed loosely enough to hand on whatever it is given, and the listener methods, whose `this` result a mapped type
 * would pin to ws's class.
 */
interface Redeclared {
  send (data: unknown, options?: unknown, cb?: SendCallback): void
  emit (event: string | symbol, ...args: unknown[]): boolean
  close (code?: number, data?: string | Buffer): void
  terminate (): void
  on (event: string | symbol, listener: Listener): this
  once (event: string | symbol, listener: Listener): this
  off (event: string | symbol, listener: Listener): this
  addListener (event: string | symbol, listener: Listener): this
  removeListener (event: string | symbol, listener: Listener): this
  prependListener (event: string | symbol, listener: Listener): this
  prependOnceListener (event: string | symbol, listener: Listener): this
  removeAllListeners (event?: string | symbol): this
  setMaxListeners (n: number): this
}

// ws's WebSocket as the subclass builds on it. ws's class as typed by 'ws' already claims the extensions (the public
// types merge them into it): left out here, `implements` checks that the class itself provides each one.
type WsBase = Redeclared & Omit<WebSocket.WebSocket, keyof fastifyReliableWs.SocketExtensions | keyof Redeclared>

/**
 * Subclasses the WebSocket class ws builds server sockets from (ws's
 * `WebSocket` option), so every field exists from construction (one hidden
 * class for all sockets) and `send` stays a prototype method. Sockets of
 * routes that opted out keep ws's behaviour: their route is undefined.
 */
export function createSocketClass (Base: typeof WebSocket): typeof WebSocket {
  const nextId = createIdGenerator()
  const WsBase: new (...args: any[]) => WsBase = Base
  class ReliableWebSocket extends WsBase implements fastifyReliableWs.SocketExtensions, Pick<WebSocket.WebSocket, 'send'> {
    id = nextId()
    isAlive = true;
    // -1 until the first pong. Kept numeric so V8 stores each new round trip in place;
    // a field that also held null would box every one of them.
    [kLatency] = -1;
    [kRoute]: Route | undefined = undefined;
    [kCause]: Cause | undefined = undefined;
    [kOpenedAt] = 0;
    [kBytesReadAtOpen] = 0;
    [kBytesWrittenAtOpen] = 0;
    [kPongState]: PongState = ALIVE;
    [kPingAt] = 0;
    [kNextPingAt] = 0;
    [kWheelTick] = -1;
    [kWheelPos] = -1;
    [kOverHighWater] = false;
    [kHeartbeatDueAt] = Infinity;
    [kLastMessageAt] = 0;
    [kTat] = 0;
    [kRateNoticeAt] = -Infinity;
    [kIp]: string = '';
    [kLog]: FastifyBaseLogger | null = null;
    [kFramed] = false;
    [kSession]: SocketSession | null = null;
    [kOnConnectPending] = false;
    [kCloseCodeSent] = 1006;
    [kMessageStartedAt] = -1;
    [kPendingPongs] = 0;
    [kPongSent]: (() => void) | null = null;
    [kTcp]: Socket | null = null;
    [kErrorListeners] = 0;
    [kMidMessage] = false;
    [kCompressFrom] = Infinity;
    [kTopics]: Set<string> | null = null

    get latencyMs (): number | null {
      const latency = this[kLatency]
      return latency < 0 ? null : latency
    }

    get session (): SocketSession | null {
      return this[kSession]
    }

    override send (data: unknown, options?: object | SendCallback, cb?: SendCallback): boolean {
      if (typeof options === 'function') {
        cb = options as SendCallback
        options = undefined
      }
      const route = this[kRoute]
      if (route === undefined) {
        super.send(data, options, cb)
        return this.readyState === OPEN
      }
      // A session outlives its sockets and keeps each message until it is acknowledged, within its own limits:
      // nothing is dropped, and a socket that has closed still reaches its client through it.
      const session = this[kSession]
      if (session !== null) return session.send(data, options as { binary?: boolean } | undefined, cb)
      if (this.readyState !== OPEN) {
        // ws would count the bytes into bufferedAmount (and wsStats with it) although they are never sent.
        if (cb !== undefined) process.nextTick(cb, new FST_RELIABLE_WS_NOT_OPEN(this.readyState))
        return false
      }
      if (this[kFramed]) data = escapeText(data, (options as { binary?: boolean } | undefined)?.binary)
      const highWaterMark = route.backpressure.highWaterMark
      // A message sent in fragments (fin: false) is never cut short: dropping a
      // later fragment would leave ws's sender mid-message.
      if (this[kOverHighWater] && !this[kMidMessage]) {
        const buffered: number = this.bufferedAmount
        if (buffered > highWaterMark) return refuse(this, route, buffered, cb)
      }
      // ws takes a missing `fin` for true and any other falsy one for false (its defaults are spread under the options).
      this[kMidMessage] = typeof options === 'object' && options !== null && 'fin' in options && !(options as { fin?: boolean }).fin
      const compressFrom = this[kCompressFrom]
      if (compressFrom !== Infinity) options = compressionOptions(data, options as object | undefined, compressFrom)
      super.send(data, options, cb)
      route.counters.messagesSent++
      watchHighWater(this, route)
      return true
    }

    // The one place a message can be stopped before every 'message' listener, the application's included.
    override emit (event: string | symbol, ...args: unknown[]): boolean {
      if (event === 'message') {
        const route = this[kRoute]
        if (route !== undefined) {
          // A message arrived whole: the fragment timeout measures the next one from scratch (see messageDue).
          this[kMessageStartedAt] = -1
          // Text messages arrive as Buffers whatever the binaryType.
          if (this[kFramed] && args[1] === false && (args[0] as Buffer)[0] === CONTROL_MARK) {
            const data = unframe(this, route, args[0] as Buffer)
            if (data === null) return false
            args[0] = data
          }
          // Counted before the gate: a message the rate limit drops still has its number in the session.
          const session = this[kSession]
          if (session !== null) {
            const verdict = session.onMessage()
            if (verdict !== DELIVER) {
              if (verdict === WAIT) session.hold(args[0], args[1] as boolean)
              return false
            }
          // Cut loose from its session by a resume elsewhere: what ws still parses is the client's to send again there.
          } else if (this[kCause] === 'replaced') return false
          if (route.gateMessages && !admitMessage(this, route)) return false
        }
      }
      return super.emit(event, ...args)
    }

    [kDeliver] (data: unknown, binary: boolean): void {
      const route = this[kRoute]!
      if (route.gateMessages && !admitMessage(this, route)) return
      super.emit('message', data, binary)
    }

    // A session's message going out, new or replayed: counted by the session, watched for backpressure, never refused.
    [kTransmit] (data: unknown, binary: boolean, cb: SendCallback | undefined, frame?: Buffer[]): void {
      // Closing, it would count the bytes in bufferedAmount; the session sends the message again on resume.
      if (this.readyState !== OPEN) {
        if (cb !== undefined) process.nextTick(cb)
        return
      }
      // A topic's frame, shared by its subscribers, goes as it is unless ws's sender is busy with an earlier message.
      if (frame === undefined || !writeFrame(this, frame)) {
        data = escapeText(data, binary)
        // A session keeps no options of the application's: the route's threshold decides.
        const compressFrom = this[kCompressFrom]
        super.send(data, { binary, compress: compressFrom !== Infinity && sizeAtLeast(data, compressFrom) }, cb)
      }
      watchHighWater(this, this[kRoute]!)
    }

    // Control frames bypass the application's accounting and backpressure: they are a few bytes, and rare
    // (a peer's pings are answered only while few pongs are pending: see answerPing). Too small to compress.
    [kSendControl] (frame: string, cb?: SendCallback): boolean {
      // A data frame must not land between the fragments of a message the application is sending.
      if (this[kMidMessage]) return false
      super.send(frame, UNCOMPRESSED, cb)
      return true
    }

    sendJSON (value: unknown, cb?: SendCallback): boolean {
      return this.send(toJSONText(value), cb)
    }

    subscribe (topic: string): boolean {
      return topicsOf(this).subscribe(this, topic)
    }

    unsubscribe (topic: string): boolean {
      return topicsOf(this).unsubscribe(this, topic)
    }

    isSubscribed (topic: string): boolean {
      return topicsOf(this).isSubscribed(this, topic)
    }

    override close (code?: number, data?: string | Buffer): void {
      // ws also calls close() to answer the peer's close frame: that one is the client's doing.
      if (this[kCause] === undefined && !closeFrameReceived(this)) this[kCause] = 'server'
      const open = this.readyState === OPEN
      super.close(code, data)
      // Only the first close() sends a frame (a later one finds the socket closing); no code means 1005.
      if (open) this[kCloseCodeSent] = code ?? 1005
    }

    override terminate (): void {
      // ws terminates a peer that floods pings itself: that is the peer's doing, not the app's.
      if (this[kCause] === undefined) this[kCause] = pingFlood(this) ? 'error' : 'server'
      super.terminate()
    }
  }
  // ws's statics (OPEN and the rest) and constructor signatures are inherited at run time; the class's type, built on a
  // base typed by what the class uses, does not list them.
  return ReliableWebSocket as unknown as typeof WebSocket
}

// A socket of a route that opted out has no route, and so no instance to subscribe in.
function topicsOf (socket: { [kRoute]: Route | undefined }): Topics {
  const route = socket[kRoute]
  if (route === undefined) throw new FST_RELIABLE_WS_NO_TOPICS()
  return route.ctx.topics
}
