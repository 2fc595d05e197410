import { execFile, execFileSync, spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { find, REDIS } from './programs'

/**
 * A free loopback port below the system's ephemeral range: no outgoing connection is ever given one of those, so a
 * server stopped for a while (a restart, a crash) finds its port still free when it binds it again. Random, so that
 * test files running side by side rarely pick the same one.
 */
export async function freePort (): Promise<number> {
  const below = ephemeralLow()
  for (;;) {
    const port = 10_000 + Math.floor(Math.random() * (below - 10_000))
    const server = net.createServer()
    const bound = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false))
      server.listen(port, '127.0.0.1', () => resolve(true))
    })
    if (!bound) continue
    await new Promise((resolve) => server.close(resolve))
    return port
  }
}

/** The first port the system hands out on its own (Linux's net.ipv4.ip_local_port_range; its default elsewhere). */
function ephemeralLow (): number {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').split(/\s+/)[0])
  } catch {
    return 32_768
  }
}

/**
 * A redis-server of the test's own (declare the test with `needs(REDIS)`), on a free loopback port, with nothing
 * saved to disk; killed and its directory removed in teardown. `stop` and `restart` keep the port.
 */
export class RedisServer {
  private child: ChildProcess | null = null
  private readonly clients: Redis[] = []

  private constructor (readonly port: number, private readonly dir: string, private readonly args: string[]) {}

  /**
   * One command through redis-cli, its reply as redis-cli prints it. Synchronous: this process's event loop is held
   * until it is answered, so this process's own clients (a broker refreshing its slots) do nothing between two such
   * commands.
   */
  commandSync (...args: Array<string | number>): string {
    return execFileSync(redisCli(), ['-h', '127.0.0.1', '-p', String(this.port), ...args.map(String)], { encoding: 'utf8' }).trim()
  }

  static async start (t: { teardown: (fn: () => unknown) => void }, args: string[] = []): Promise<RedisServer> {
    // A port found free can be taken by someone else before redis-server binds it (other test files open connections
    // all the time): then another. A cluster node also listens on a bus port, by default its own plus 10,000, which
    // nothing keeps free: it gets one found free too.
    for (let attempt = 1; ; attempt++) {
      const bus = args.includes('--cluster-enabled') ? ['--cluster-port', String(await freePort())] : []
      const server = new RedisServer(await freePort(), mkdtempSync(join(tmpdir(), 'redis-')), [...args, ...bus])
      t.teardown(() => server.destroy())
      try {
        await server.restart()
        return server
      } catch (err) {
        if (attempt === 3 || !(err as Error).message.includes('Address already in use')) throw err
      }
    }
  }

  get url (): string {
    return `redis://127.0.0.1:${this.port}`
  }

  async restart (): Promise<void> {
    const child = spawn(find(REDIS), ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', this.dir, ...this.args], { stdio: ['ignore', 'pipe', 'inherit'] })
    this.child = child
    let output = ''
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (chunk: Buffer) => {
        output += chunk.toString()
        if (output.includes('Ready to accept connections')) resolve()
      })
      child.once('exit', (code) => reject(new Error(`redis-server exited (${code}) before it was ready:\n${output}`)))
    })
    child.stdout!.resume()
  }

  /** Kills the server with `signal` and waits for it to be gone. */
  async stop (signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const child = this.child
    if (child === null || child.exitCode !== null || child.signalCode !== null) return
    this.child = null
    const exited = once(child, 'exit')
    child.kill(signal)
    await exited
  }

  /** A client for the test's own commands, closed in teardown. */
  client (): Redis {
    const client = new Redis(this.port, '127.0.0.1', { lazyConnect: false })
    client.on('error', () => {})
    this.clients.push(client)
    return client
  }

  /** Sends `signal` to the server (SIGSTOP, SIGCONT). */
  signal (signal: NodeJS.Signals): void {
    this.child!.kill(signal)
  }

  private async destroy (): Promise<void> {
    for (const client of this.clients) client.disconnect()
    await this.stop()
    rmSync(this.dir, { recursive: true, force: true })
  }
}

/**
 * A Redis Cluster of `masters` redis-server processes on loopback ports, no replicas, slots spread by redis-cli
 * (found beside redis-server); every process killed in teardown.
 */
export async function startCluster (t: { teardown: (fn: () => unknown) => void }, masters = 3): Promise<RedisServer[]> {
  const servers: RedisServer[] = []
  for (let i = 0; i < masters; i++) servers.push(await clusterNode(t))
  await promisify(execFile)(redisCli(), ['--cluster', 'create', ...servers.map(({ port }) => `127.0.0.1:${port}`), '--cluster-replicas', '0', '--cluster-yes'])
  // Every node, not the first alone: a client's ready check asks any node, and one not yet ok makes ioredis reconnect
  // (leaving the promise of its first connect() pending for good).
  await settled(servers, async (client) => (await client.cluster('INFO') as string).includes('cluster_state:ok'), 'the cluster did not come up')
  return servers
}

/** A redis-server in cluster mode, not yet part of any cluster. */
async function clusterNode (t: { teardown: (fn: () => unknown) => void }): Promise<RedisServer> {
  return await RedisServer.start(t, ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000'])
}

/** Until `condition` holds on every one of `servers`. */
async function settled (servers: RedisServer[], condition: (client: Redis) => Promise<boolean>, failure: string): Promise<void> {
  const clients = servers.map((server) => server.client())
  for (let tries = 0; !(await Promise.all(clients.map(condition))).every(Boolean); tries++) {
    if (tries > 200) throw new Error(failure)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/**
 * A new node joins the cluster of `servers` (CLUSTER MEET), serving no slot yet: a master once a slot is moved to it.
 * Resolves once every node knows every other.
 */
export async function joinCluster (t: { teardown: (fn: () => unknown) => void }, servers: RedisServer[]): Promise<RedisServer> {
  const node = await clusterNode(t)
  const bus = (await node.client().config('GET', 'cluster-port') as string[])[1]
  await servers[0].client().cluster('MEET', '127.0.0.1', node.port, bus)
  const all = [...servers, node]
  // Past the handshake (each node lists the others under their own ids, with their address), and the new node has
  // learnt whose every slot is: until then it answers CLUSTERDOWN.
  const joined = async (client: Redis): Promise<boolean> => {
    const lines = (await client.cluster('NODES') as string).trim().split('\n')
    return lines.length === all.length && !lines.some((line) => /handshake|noaddr/.test(line)) &&
      (await client.cluster('INFO') as string).includes('cluster_state:ok')
  }
  await settled(all, joined, 'the node did not join')
  return node
}

/** redis-cli, beside the redis-server the tests run (Debian's package ships both). */
function redisCli (): string {
  return join(dirname(find(REDIS)), 'redis-cli')
}
