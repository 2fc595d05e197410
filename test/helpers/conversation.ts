import WebSocket from 'ws'
import { ReliableWebSocket } from '../../lib/client'

/**
 * A client of test/fixtures/instance.mjs's durable `/session` route, sending `c0`, `c1`… and checking the server's
 * replies `s0`, `s1`… (`r<k>` for a message redelivered after a crash), the messages of its session's topic, `u<n>`,
 * numbered by their publisher, and those sent to its session from anywhere (`wsSessions.send`), `p<n>`, numbered from 1.
 */
export class Conversation {
  readonly ws: ReliableWebSocket
  sent = 0
  refused = 0
  /**
   * Replies received in order: the next one expected is `s<replies>`, or `r<replies>` when its message was redelivered
   * after the crash. Never both: a reply goes out once a copy holding it is kept, and that copy counts its message.
   */
  replies = 0
  redelivered = 0
  /** The topic's messages: the first one's number, and the last one's (each must follow the one before). */
  firstUpdate = 0
  lastUpdate = 0
  updates = 0
  /** Messages sent to the session: each must follow the one before, from `p1`. */
  posts = 0
  /** Anything else: a message twice or out of order, or the server's report of a message it saw twice or missed. */
  wrong: string[] = []
  /** Every connection's greeting: its session, the instance it reached, whether it resumed the session, when it arrived. */
  greetings: Array<{ session: string, instance: number, resumed: boolean, at: number }> = []
  lost = 0
  closeCodes: number[] = []

  /** Connects from `localAddress`: a load balancer passes it on, and the instances' per-address limits apply to it. */
  constructor (url: string, localAddress: string, backoff = { initialDelayMs: 200, maxDelayMs: 1000 }) {
    const From = class extends WebSocket {
      constructor (address: string, protocols: string[]) { super(address, protocols, { localAddress }) }
    }
    this.ws = new ReliableWebSocket(url, { WebSocket: From as unknown as typeof WebSocket, backoff })
    this.ws.addEventListener('message', (event) => {
      const data = (event as MessageEvent).data as string
      if (data.startsWith('{')) {
        this.greetings.push({ ...JSON.parse(data) as { session: string, instance: number, resumed: boolean }, at: Date.now() })
      } else if (data === `s${this.replies}`) {
        this.replies++
      } else if (data.startsWith('u') && (this.updates === 0 || data === `u${this.lastUpdate + 1}`)) {
        this.lastUpdate = Number(data.slice(1))
        if (this.updates++ === 0) this.firstUpdate = this.lastUpdate
      } else if (data === `p${this.posts + 1}`) {
        this.posts++
      } else if (data === `r${this.replies}`) {
        this.replies++
        this.redelivered++
      } else {
        this.wrong.push(data)
      }
    })
    this.ws.addEventListener('sessionlost', () => { this.lost++ })
    this.ws.addEventListener('close', (event) => { this.closeCodes.push(event.code) })
  }

  get instance (): number {
    return this.greetings.at(-1)?.instance ?? 0
  }

  /** Sends the next message (queued by the client while it reconnects). */
  next (): void {
    if (this.ws.send(`c${this.sent}`)) this.sent++
    else this.refused++
  }
}
