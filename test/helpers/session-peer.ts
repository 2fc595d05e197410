// A client speaking the reliable subprotocol by hand, for tests of what a server's sessions do.
import WebSocket from 'ws'
import type { ReliableWebSocket } from '../../lib/client'
import { PROTOCOL } from '../../lib/protocol/protocol'
import type { FaultProxy } from './fault-proxy'
import { closeEvent, waitFor } from './helpers'

export interface Welcome { t: 'welcome', session: string, token: string, resumed: boolean, n: number }

/** A client speaking the subprotocol by hand: every frame it gets, control frames parsed. */
export class Peer {
  readonly frames: unknown[] = []
  readonly ws: WebSocket
  readonly closed: Promise<{ code: number, reason: string }>

  constructor (url: string, token?: string, headers: Record<string, string> = {}) {
    this.ws = new WebSocket(url, token === undefined ? PROTOCOL : [PROTOCOL, token], { headers })
    this.ws.on('error', () => {})
    this.ws.on('message', (data: Buffer) => {
      const text = data.toString()
      this.frames.push(text.charCodeAt(0) === 0 ? JSON.parse(text.slice(1)) : text)
    })
    this.closed = closeEvent(this.ws)
  }

  async welcome (): Promise<Welcome> {
    await waitFor(() => this.frames.length > 0, 2000, 'welcome')
    return this.frames[0] as Welcome
  }

  data (): unknown[] {
    return this.frames.filter((frame) => typeof frame === 'string')
  }
}

/** How `peer`'s connection closed; fails after 3 s. */
export async function closed (peer: Peer): Promise<{ code: number, reason: string }> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error('timed out waiting for the close')), 3000) })
  try {
    return await Promise.race([peer.closed, late])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * The client's connection through `proxy` dropped, and its next one sent to `next`: resolves once `next`'s handler has
 * seen one more connection (`resumed` has one entry per connection) and the client is open again.
 */
export async function moveTo (proxy: FaultProxy, ws: ReliableWebSocket, next: { port: number, resumed: boolean[] }, what: string): Promise<void> {
  const resumes = next.resumed.length
  proxy.target = next.port
  proxy.cut()
  await waitFor(() => next.resumed.length > resumes && ws.readyState === ws.OPEN, 10_000, what)
}
