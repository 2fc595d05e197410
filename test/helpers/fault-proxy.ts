import { once } from 'node:events'
import net from 'node:net'

/**
 * A TCP proxy on localhost (a load balancer, as far as clients can tell) that breaks connections on demand: `cut()` resets
 * every connection through it, `freeze()` stops forwarding while keeping
 * both TCP connections open (a half-open path, as a dead NAT or a crashed
 * host would leave), `refuse` turns new connections away.
 */
export class FaultProxy {
  readonly pairs = new Set<{ client: net.Socket, upstream: net.Socket }>()
  frozen = false
  refuse = false
  connections = 0
  private server!: net.Server

  /** The port new connections are forwarded to: a load balancer moving to a new server. */
  target: number

  private constructor (target: number) {
    this.target = target
  }

  static async start (target: number): Promise<FaultProxy> {
    const proxy = new FaultProxy(target)
    proxy.server = net.createServer((client) => proxy.accept(client))
    proxy.server.listen(0, '127.0.0.1')
    await once(proxy.server, 'listening')
    return proxy
  }

  get port (): number {
    return (this.server.address() as net.AddressInfo).port
  }

  url (path: string): string {
    return `ws://127.0.0.1:${this.port}${path}`
  }

  /** Resets every connection now; returns how many there were. */
  cut (): number {
    const count = this.pairs.size
    for (const { client, upstream } of this.pairs) {
      client.resetAndDestroy()
      upstream.resetAndDestroy()
    }
    this.pairs.clear()
    return count
  }

  /** Stops forwarding in both directions; nothing is closed. */
  freeze (): void {
    this.frozen = true
    for (const { client, upstream } of this.pairs) {
      client.pause()
      upstream.pause()
    }
  }

  async close (): Promise<void> {
    this.cut()
    await new Promise((resolve) => this.server.close(resolve))
  }

  private accept (client: net.Socket): void {
    client.on('error', () => {})
    if (this.refuse) {
      client.resetAndDestroy()
      return
    }
    this.connections++
    const upstream = net.connect(this.target, '127.0.0.1')
    upstream.on('error', () => {})
    const pair = { client, upstream }
    this.pairs.add(pair)
    const forward = (from: net.Socket, to: net.Socket): void => {
      from.on('data', (chunk) => { if (!this.frozen) to.write(chunk) })
      from.on('close', () => {
        if (this.frozen) return
        this.pairs.delete(pair)
        to.destroy()
      })
    }
    forward(client, upstream)
    forward(upstream, client)
    if (this.frozen) this.freeze()
  }
}
