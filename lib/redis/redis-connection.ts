// The plugin's own Redis connections, from what the application gives: its ioredis client, ioredis options or a URL.
import { once } from 'node:events'
import type { Cluster, Redis, RedisOptions } from 'ioredis'
import { FST_RELIABLE_WS_REDIS_MISSING } from '../core/errors'
import { loadOptionalPeer } from '../core/optional-peer'

/**
 * What the `redis` option takes: an ioredis client or Cluster client (duplicated, never used nor closed), ioredis
 * options, or a URL.
 */
export type RedisOption = Redis | Cluster | RedisOptions | string

/** One of the link's connections: one server's, or a Cluster's (the same commands and events, as the link and its users use them). */
export type Connection = Redis

type Ioredis = typeof import('ioredis')

/** ioredis, an optional peer dependency: required only when the `redis` option is options or a URL (a client brings its own). */
export function loadIoredis (load?: (id: string) => unknown): Ioredis {
  return loadOptionalPeer('ioredis', FST_RELIABLE_WS_REDIS_MISSING, load)
}

function isClient (option: RedisOption): option is Redis | Cluster {
  return typeof (option as Partial<Redis>).duplicate === 'function'
}

/**
 * A new connection of the plugin's own, with `overrides` over the application's settings. Connecting is left to
 * the caller (`lazyConnect`), so that it sees the first failure. `sharded`: a Cluster's connection subscribes through
 * one connection per master (ioredis's `shardedSubscribers`), as SSUBSCRIBE needs.
 */
export function openConnection (option: RedisOption, overrides: RedisOptions, sharded: boolean, load?: (id: string) => unknown): Connection {
  const settings = { ...overrides, lazyConnect: true }
  if (isClient(option)) {
    if (!option.isCluster) return (option as Redis).duplicate(settings)
    // A Cluster takes the offline queue, lazyConnect and the key prefix itself, the rest for each node's connection.
    const { enableOfflineQueue, lazyConnect, keyPrefix, ...perNode } = settings
    return (option as Cluster).duplicate([], { enableOfflineQueue, lazyConnect, keyPrefix, shardedSubscribers: sharded, redisOptions: perNode }) as unknown as Connection
  }
  const { Redis } = loadIoredis(load)
  return typeof option === 'string' ? new Redis(option, settings) : new Redis({ ...option, ...settings })
}

/**
 * Connects; resolves once the connection is ready. A Cluster client whose ready check fails (a node not yet, or no
 * longer, `cluster_state:ok`) reconnects by itself and leaves the promise of that first connect() pending for good:
 * its 'ready' says when it is up.
 */
export async function connected (connection: Connection): Promise<unknown> {
  // A command sent before (wsSessions.send while the application starts) may have begun connecting already.
  if (connection.status === 'ready') return
  const up = once(connection, 'ready')
  return await Promise.race([connection.status === 'wait' ? connection.connect() : up, up])
}

/** Connects; resolves once the connection is ready, or rejects with its first error. */
export async function ready (connection: Connection): Promise<void> {
  let fail!: (err: Error) => void
  const failed = new Promise<never>((_resolve, reject) => { fail = reject })
  connection.once('error', fail)
  try {
    await Promise.race([connected(connection), failed])
  } finally {
    connection.off('error', fail)
  }
}

/**
 * Closes: QUIT lets Redis answer what is in flight. A connection that is not up, or whose QUIT Redis does not answer
 * within `ms` (stalled, or a Cluster node's connection queueing it until it reconnects), is dropped.
 */
export async function closeConnection (connection: Connection, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<false>((resolve) => { timer = setTimeout(resolve, ms, false).unref() })
  const quit = connection.quit().then(() => true, () => false)
  const quitted = await Promise.race([quit, late])
  clearTimeout(timer)
  if (!quitted) connection.disconnect()
  if (connection.isCluster) stopRefreshing(connection as unknown as Cluster)
}

/**
 * Stops a closed Cluster client's `slotsRefreshInterval` for good. A refresh still under way when it closed sets that
 * timer again as it ends, and from then on every refresh fails at once and sets it again (ioredis 6.0): the process
 * never exits. A refresh asked for now ends right after that one, at once if none is under way (the client holds no
 * node after disconnect(), so none is asked), and the disconnect() after it clears the timer.
 */
export function stopRefreshing (cluster: Cluster): void {
  cluster.disconnect()
  cluster.refreshSlotsCache(() => cluster.disconnect())
}
