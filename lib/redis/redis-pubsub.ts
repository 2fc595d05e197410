// How messages and probes travel through the Redis link: plain pub/sub on one server, sharded pub/sub on a Cluster
// (docs/redis.md, "Redis Cluster").
import type { Cluster } from 'ioredis'
import type { Connection, RedisOption } from './redis-connection'
import { hashSlot } from './hash-slot'

export interface PubSub {
  /** True on a Cluster: the subscriber connection is to be made with ioredis's `shardedSubscribers`. */
  readonly sharded: boolean
  /** The command a script announces a message with (the topic broker's publish script). */
  readonly publishCommand: 'publish' | 'spublish'
  /** The subscriber connection's event for a message, (channel, message) as bytes. */
  readonly messageEvent: 'messageBuffer' | 'smessageBuffer'
  /** Resolves once Redis has confirmed every channel. */
  subscribe (sub: Connection, channels: string[]): Promise<unknown>
  unsubscribe (sub: Connection, channels: string[]): Promise<unknown>
  publish (pub: Connection, channel: string, message: string): Promise<unknown>
  /** The liveness probe's channels, named from `base`: one on each connection the subscriptions run on. */
  probeChannels (base: string, sub: Connection): string[]
}

const PLAIN: PubSub = {
  sharded: false,
  publishCommand: 'publish',
  messageEvent: 'messageBuffer',
  subscribe: (sub, channels) => sub.subscribe(...channels),
  unsubscribe: (sub, channels) => sub.unsubscribe(...channels),
  publish: (pub, channel, message) => pub.publish(channel, message),
  probeChannels: (base) => [base]
}

/**
 * On a Cluster, ioredis keeps one subscriber connection per master and sends each SSUBSCRIBE to the master of its
 * channel's slot (one slot per command, so one channel per command here). It also keeps its own list of the shard
 * channels, appends to it on every SSUBSCRIBE — a channel subscribed twice is listed twice — and subscribes that list
 * again by itself when it replaces a subscriber connection. A SUNSUBSCRIBE before each SSUBSCRIBE keeps the list to
 * one entry per channel however often the link subscribes again; what the channel carried in between is for its user to
 * read after subscribing (the topic broker reads the topic's stream).
 */
const SHARDED: PubSub = {
  sharded: true,
  publishCommand: 'spublish',
  messageEvent: 'smessageBuffer',
  subscribe: (sub, channels) => Promise.all(channels.flatMap((channel) => [sub.sunsubscribe(channel), sub.ssubscribe(channel)])),
  unsubscribe: (sub, channels) => Promise.all(channels.map((channel) => sub.sunsubscribe(channel))),
  publish: (pub, channel, message) => pub.spublish(channel, message),
  probeChannels: (base, sub) => shardProbeChannels(base, (sub as unknown as Cluster).slots)
}

/**
 * One probe channel per master serving slots in `slots` (ioredis's map of the Cluster: slot → node keys, master
 * first): `<base>:<n>` for the first n whose slot that master serves. The same map gives the same channels.
 */
export function shardProbeChannels (base: string, slots: string[][]): string[] {
  const masters = new Set<string>()
  for (const nodes of slots) if (nodes !== undefined) masters.add(nodes[0])
  const channels = new Map<string, string>()
  for (let n = 0; channels.size < masters.size; n++) {
    const channel = `${base}:${n}`
    const master = slots[hashSlot(channel)]?.[0]
    if (master !== undefined && !channels.has(master)) channels.set(master, channel)
  }
  return [...channels.values()]
}

/** Sharded pub/sub for a Cluster client; plain pub/sub for one server (any Redis 5 or newer, where it costs nothing more). */
export function pubSubFor (option: RedisOption): PubSub {
  return (option as Partial<Cluster>).isCluster === true ? SHARDED : PLAIN
}
