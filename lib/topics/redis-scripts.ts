// What the Redis broker keeps in Redis and sends through it: key names, the two Lua scripts, the notification format.

/**
 * The Redis names of one topic. Every key and the channel carry the topic in one hash tag, so on Redis Cluster they
 * share a slot (a script may touch only keys and shard channels of one slot). Braces and `%` in the topic are percent-encoded: a brace
 * would end the tag early, or leave it empty (then Redis hashes the whole key and the keys part).
 */
export interface TopicKeys {
  readonly meta: string
  readonly stream: string
  readonly channel: string
}

export function topicKeys (prefix: string, topic: string): TopicKeys {
  const tag = `${prefix}:{${topic.replace(/[%{}]/g, (c) => `%${c.charCodeAt(0).toString(16)}`)}}`
  return { meta: `${tag}:meta`, stream: `${tag}:stream`, channel: `${tag}:channel` }
}

/**
 * Publishes one message: reads the topic's epoch (or sets the one given, when the meta hash is gone: new or lost
 * history), takes the next offset, appends the message to the stream under that offset as its id, trims the stream to
 * its size, renews both keys' time to live, and announces the notification with `command`: `publish` on one server,
 * `spublish` on a Cluster (sharded pub/sub: the notification stays on the shard of the topic's slot, instead of
 * crossing the cluster bus to every node). Atomic, so offsets are contiguous and the stream holds them in order. A
 * first offset drops a stream left over from a lost meta hash (evicted alone), whose ids would refuse the new ones.
 *
 * The channel is declared among the keys: Redis 7 counts a shard channel as a key of the script's slot, and checks
 * declared keys before the script runs, rather than failing it after the writes.
 *
 * KEYS: meta, stream, channel. ARGV: data, binary flag (0/1), publish time (ms), new epoch, history size, ttl (ms).
 * Returns [offset, epoch]. The notification: `offset:epoch:binary:time:` then the data, bytes as given.
 */
export function publishScript (command: 'publish' | 'spublish'): string {
  return `
local epoch = redis.call('hget', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[4]
  redis.call('hset', KEYS[1], 'e', epoch)
end
local offset = redis.call('hincrby', KEYS[1], 'o', 1)
if offset == 1 then
  redis.call('del', KEYS[2])
end
redis.call('xadd', KEYS[2], 'MAXLEN', ARGV[5], offset, 'd', ARGV[1], 'b', ARGV[2], 't', ARGV[3])
redis.call('pexpire', KEYS[1], ARGV[6])
redis.call('pexpire', KEYS[2], ARGV[6])
redis.call('${command}', KEYS[3], offset .. ':' .. epoch .. ':' .. ARGV[2] .. ':' .. ARGV[3] .. ':' .. ARGV[1])
return { offset, epoch }
`
}

/**
 * Reads a topic's position and, from `from` on, up to `count` messages of its stream, in one atomic step so the
 * entries belong to the epoch returned.
 *
 * KEYS: meta, stream. ARGV: from (an offset), count (0: the position alone).
 * Returns [epoch or false, last offset, entries]; each entry [id, [field, value, …]].
 */
export const READ_SCRIPT = `
local meta = redis.call('hmget', KEYS[1], 'e', 'o')
local entries = {}
if meta[1] and ARGV[2] ~= '0' then
  entries = redis.call('xrange', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])
end
return { meta[1], tonumber(meta[2] or '0'), entries }
`

/** A published message as it arrives, from the channel or from the stream. */
export interface Notification {
  readonly offset: number
  readonly epoch: string
  readonly binary: boolean
  /** When it was published, by the publishing instance's clock (ms). */
  readonly time: number
  readonly data: Buffer | string
}

const COLON = 0x3a

/** Parses a notification as the publish script formats it; null when the bytes are not one. */
export function parseNotification (message: Buffer): Notification | null {
  const a = message.indexOf(COLON)
  const b = message.indexOf(COLON, a + 1)
  const c = message.indexOf(COLON, b + 1)
  const d = message.indexOf(COLON, c + 1)
  if (a <= 0 || d < 0) return null
  // Anything else published on the channel is not a notification: a bad offset would open a gap that never closes.
  const offset = Number(message.toString('latin1', 0, a))
  if (!Number.isSafeInteger(offset) || offset < 1) return null
  const binary = message[b + 1] === 0x31
  const body = message.subarray(d + 1)
  return {
    offset,
    epoch: message.toString('latin1', a + 1, b),
    binary,
    time: Number(message.toString('latin1', c + 1, d)),
    data: binary ? body : body.toString()
  }
}

/** A stream entry as READ_SCRIPT returns it (fields d, b, t in the order the publish script writes them). */
export function entryNotification (epoch: string, entry: [Buffer, Buffer[]]): Notification {
  const [id, fields] = entry
  const binary = fields[3][0] === 0x31
  return {
    offset: parseInt(id.toString('latin1'), 10),
    epoch,
    binary,
    time: Number(fields[5].toString('latin1')),
    data: binary ? fields[1] : fields[1].toString()
  }
}
