// Sessions' records in Redis: one hash per session (and lists of the messages handed over with it and posted to it),
// each method one atomic Lua script, time taken from Redis (docs/sessions.md, "Records in Redis").
import type fastifyReliableWs = require('../../types/index')
import { checkKeyPrefix, DEFAULTS } from '../core/options'
import { closeConnection, openConnection, ready } from '../redis/redis-connection'
import type { RedisOption } from '../redis/redis-connection'
import type { SessionStore } from './session-store'

type SessionRecord = fastifyReliableWs.SessionRecord
type ClaimRequest = fastifyReliableWs.ClaimRequest
type ClaimResult = fastifyReliableWs.ClaimResult
type ClaimRefusal = fastifyReliableWs.ClaimRefusal
type RecordChanges = fastifyReliableWs.RecordChanges
type WriteResult = fastifyReliableWs.WriteResult
type SessionHandover = fastifyReliableWs.SessionHandover
type SessionMessage = fastifyReliableWs.SessionMessage
type StoreNotices = fastifyReliableWs.StoreNotices
type PostResult = fastifyReliableWs.PostResult

/** A record's fields as the hash names them, in the order of `SessionRecord`; every script that returns a record returns them so. */
const FIELDS = ['id', 'rt', 'url', 'o', 's', 'h', 'f', 'a', 'st', 'cu', 'ea', 'ca'] as const

// How long an away record outlives its expiresAt in Redis. The holder ends its session by its own clock, which may
// run behind Redis's: its `end` should still find the record. Claims never rely on the key's expiry: a record away
// past expiresAt is refused by the claim itself.
export const GRACE_MS = 5000

// How long the listening connection's QUIT may wait for Redis before the connection is dropped: a stalled Redis must
// not hold the instance's close.
const QUIT_MS = 1000

// How long a command on the `redis` option's own connection may wait for Redis: the bound docs/sessions.md advises for
// a client given.
const COMMAND_TIMEOUT_MS = 2000

// Messages RPUSHed per call: Lua's unpack takes at most a few thousand values at once.
const PUSH_CHUNK = 1000

/**
 * What every script begins with. Time is Redis's, one clock for every instance. A script that reads TIME and then
 * writes replicates its effects, not itself: the default from Redis 5 on (the least the project supports), the only
 * way from Redis 7. A record is kept until `expiresAt` plus the grace: `ttlMs` after it went away, or, held, after
 * its holder last wrote it (a live holder renews it; the records of one that died go). Its lists of messages handed
 * over and posted (KEYS[2] and KEYS[3], where a script names them) are kept alike: they go with the record.
 */
const PRELUDE = `
local time = redis.call('time')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local FIELDS = { ${FIELDS.map((field) => `'${field}'`).join(', ')} }
local function keep (expiresAt)
  for _, key in ipairs(KEYS) do
    redis.call('pexpire', key, tonumber(expiresAt) - now + ${GRACE_MS})
  end
end
-- Pushes values[first], values[first + 1]… onto a list, PUSH_CHUNK at a time.
local function pushAll (key, values, first)
  for from = first, #values, ${PUSH_CHUNK} do
    redis.call('rpush', key, unpack(values, from, math.min(from + ${PUSH_CHUNK - 1}, #values)))
  end
end
-- Nil while the claim numbered ARGV[1] holds the record; else 'lost' (no record) or 'fenced' (another claim since).
local function fenced ()
  local fence = redis.call('hget', KEYS[1], 'f')
  if not fence then return 'lost' end
  if fence ~= ARGV[1] then return 'fenced' end
  return nil
end
`

/**
 * KEYS: the record. ARGV: its fields and values, pairs as the hash names them, `cu` and `ea` as distances from its
 * beginning: it begins now, by Redis's clock, whatever the instance's says. Returns 0 when the id is taken.
 */
const CREATE = `${PRELUDE}
if redis.call('exists', KEYS[1]) == 1 then return 0 end
redis.call('hset', KEYS[1], unpack(ARGV))
local after = redis.call('hmget', KEYS[1], 'cu', 'ea')
local expiresAt = now + tonumber(after[2])
redis.call('hset', KEYS[1], 'ca', now, 'cu', now + tonumber(after[1]), 'ea', expiresAt)
keep(expiresAt)
return 1
`

/**
 * Every check of MemorySessionStore.claim, in its order, and the take-over, in one step: two claims cannot both win.
 * The secrets are compared here, without a constant-time compare: Redis's Lua interns strings, so equality compares
 * references, and the bytes are compared only when a string is interned beside another of the same hash.
 *
 * KEYS: the record, its messages handed over, its messages posted. ARGV: instance, route, url, owner (`0` for null,
 * else `1` and the owner), secret, received, sent (`''` for null), new secret, confirmMs, askMs, ttlMs, durable (0/1),
 * the instance known dead (or `''`). Returns [refusal], ['busy', retryMs], ['held', holder, fence, retryMs?], or ['ok',
 * previous instance, the record's fields], followed, when a handover was taken, by its received, its acknowledged, its
 * messages then those posted, its topics and its reserved. Taken out, unless the claim is durable: then it stays, the
 * posts joined to its messages, as the claimer's kept copy. The moment until which the holder, asked for the session,
 * may hand it over is the hash's field `q`, until the record changes hands. A handover (`hr ha ht hm`, the list `:m`)
 * with a holder is a copy that holder kept (`keep`): a durable claim takes it once the holder is dead.
 */
const CLAIM = `${PRELUDE}
local r = redis.call('hmget', KEYS[1], unpack(FIELDS))
if not r[7] then return { 'unknown' } end
if r[9] == 'away' and tonumber(r[11]) <= now then
  redis.call('del', KEYS[1], KEYS[2], KEYS[3])
  return { 'unknown' }
end
local owner = r[4] and ('1' .. r[4]) or '0'
if r[2] ~= ARGV[2] or r[3] ~= ARGV[3] or owner ~= ARGV[4] then return { 'mismatch' } end
local held = r[6] ~= '' and r[6] == ARGV[5]
local waiting = r[9] == 'claimed' and (tonumber(r[10]) > now or r[8] == ARGV[1])
if r[5] ~= ARGV[5] and not (held and not waiting) then
  if held and waiting then return { 'busy', math.max(tonumber(r[10]) - now, 0) } end
  return { 'secret' }
end
local handover = redis.call('hmget', KEYS[1], 'hr', 'ha', 'ht', 'hm')
local kept = ARGV[12] == '1' and r[8] ~= '' and handover[2]
local died = tonumber(r[11]) <= now and r[8] ~= ARGV[1]
if died and not kept then
  redis.call('del', KEYS[1], KEYS[2], KEYS[3])
  return { 'unknown' }
end
local received = tonumber(ARGV[6])
-- Durable, a count from an instance the record names no more is of a copy gone stale: judged as a claim from elsewhere.
local fromElsewhere = ARGV[7] == '' or (ARGV[12] == '1' and r[8] ~= ARGV[1])
local sent = tonumber(ARGV[7])
local take = handover[2] and (r[8] == '' or (fromElsewhere and kept and (died or ARGV[13] == r[8])))
if fromElsewhere then
  if not take then
    local holder = r[8]
    if holder == '' or holder == ARGV[1] then return { 'held', holder, r[7] } end
    local asked = redis.call('hget', KEYS[1], 'q')
    if not asked then
      redis.call('hset', KEYS[1], 'q', now + tonumber(ARGV[10]))
      return { 'held', holder, r[7], tonumber(ARGV[10]) }
    end
    if tonumber(asked) > now then return { 'held', holder, r[7], tonumber(asked) - now } end
    return { 'held', holder, r[7] }
  end
  if received < tonumber(handover[2]) then return { 'count' } end
  sent = tonumber(handover[2]) + redis.call('llen', KEYS[2])
end
if received > sent then return { 'count' } end
redis.call('hincrby', KEYS[1], 'f', 1)
local expiresAt = now + tonumber(ARGV[11])
redis.call('hset', KEYS[1], 'a', ARGV[1], 'st', 'claimed', 'cu', now + tonumber(ARGV[9]), 'ea', expiresAt, 's', ARGV[8], 'h', ARGV[5])
redis.call('hdel', KEYS[1], 'q')
local reply = { 'ok', r[8], redis.call('hmget', KEYS[1], unpack(FIELDS)) }
if take then
  reply[4] = handover[1]
  reply[5] = handover[2]
  local posts = redis.call('lrange', KEYS[3], 0, -1)
  redis.call('hdel', KEYS[1], 'pb')
  redis.call('del', KEYS[3])
  if ARGV[12] == '1' then
    pushAll(KEYS[2], posts, 1)
    reply[6] = redis.call('lrange', KEYS[2], 0, -1)
    redis.call('hset', KEYS[1], 'hn', tonumber(handover[2]) + #reply[6])
  else
    local messages = redis.call('lrange', KEYS[2], 0, -1)
    for _, posted in ipairs(posts) do messages[#messages + 1] = posted end
    reply[6] = messages
    redis.call('hdel', KEYS[1], 'hr', 'ha', 'ht', 'hm', 'hn')
    redis.call('del', KEYS[2])
  end
  reply[7] = handover[3]
  reply[8] = handover[4]
end
keep(expiresAt)
return reply
`

/**
 * KEYS: the record, its messages handed over, its messages posted. ARGV: fence, heard (0/1), away (0/1), ttlMs.
 * Returns ok, posted (ok, and messages wait to be taken), fenced or lost.
 */
const WRITE = `${PRELUDE}
local refused = fenced()
if refused then return refused end
local kept = redis.call('hmget', KEYS[1], 'st', 'ea')
local state, expiresAt = kept[1], kept[2]
if ARGV[2] == '1' then
  state = 'connected'
  redis.call('hset', KEYS[1], 'st', state, 'h', '')
end
-- Its holder lives: held, it is kept ttlMs more. Away, it keeps the moment it left by.
if ARGV[3] == '1' or state ~= 'away' then
  if ARGV[3] == '1' then state = 'away' end
  expiresAt = now + tonumber(ARGV[4])
  redis.call('hset', KEYS[1], 'st', state, 'ea', expiresAt)
end
keep(expiresAt)
if redis.call('exists', KEYS[3]) == 1 then return 'posted' end
return 'ok'
`

/**
 * Writes the handover given from ARGV[first] on: its received, its acknowledged, its topics (JSON), its reserved, and
 * its messages, each a byte (0 text, 1 binary) and the message's bytes. `hn`: the number of its last message, what
 * a keep with `since` checks the copy by (the list may hold more: posts taken after it).
 */
const HAND_OVER = `
local function handOver (first)
  redis.call('hset', KEYS[1], 'hr', ARGV[first], 'ha', ARGV[first + 1], 'ht', ARGV[first + 2], 'hm', ARGV[first + 3],
    'hn', tonumber(ARGV[first + 1]) + #ARGV - first - 3)
  redis.call('del', KEYS[2])
  pushAll(KEYS[2], ARGV, first + 4)
end
`

/**
 * KEYS: the record, its messages handed over, its messages posted (kept for the next claim). ARGV: fence, ttlMs, then
 * the handover, if any (HAND_OVER). Returns ok, fenced or lost.
 */
const RELEASE = `${PRELUDE}${HAND_OVER}
local refused = fenced()
if refused then return refused end
local expiresAt = now + tonumber(ARGV[2])
redis.call('hset', KEYS[1], 'a', '', 'st', 'away', 'ea', expiresAt)
redis.call('hdel', KEYS[1], 'hr', 'ha', 'ht', 'hm', 'hn')
redis.call('del', KEYS[2])
if #ARGV > 2 then handOver(3) end
keep(expiresAt)
return 'ok'
`

/**
 * KEYS: the record, its messages handed over (here: kept), its messages posted. ARGV: fence, ttlMs, `since`, the copy
 * kept (HAND_OVER). With `since` '', its messages are all of them. Else they are those after number `since`, and the
 * list holds those up to it: it keeps its messages after the copy's acknowledged up to `since` (what `take` joined to
 * it after them the holder sends again in their place), then gets the rest. A copy that does not reach `since` (an
 * older keep landed after the one the holder heard of) is not added to: `whole` asks for all the messages. Refused
 * once released. Returns as WRITE.
 */
const KEEP = `${PRELUDE}${HAND_OVER}
local refused = fenced()
if refused then return refused end
local r = redis.call('hmget', KEYS[1], 'a', 'st', 'ea', 'ha', 'hn')
if r[1] == '' then return 'fenced' end
if ARGV[3] == '' then
  handOver(4)
else
  local since, acknowledged = tonumber(ARGV[3]), tonumber(ARGV[5])
  local was, length = tonumber(r[4] or '0'), redis.call('llen', KEYS[2])
  local last = tonumber(r[5] or (was + length))
  if was > acknowledged or last < since or was + length < since then return 'whole' end
  if since > acknowledged then redis.call('ltrim', KEYS[2], acknowledged - was, since - was - 1) else redis.call('del', KEYS[2]) end
  redis.call('hset', KEYS[1], 'hr', ARGV[4], 'ha', ARGV[5], 'ht', ARGV[6], 'hm', ARGV[7], 'hn', since + #ARGV - 7)
  pushAll(KEYS[2], ARGV, 8)
end
local expiresAt = r[3]
if r[2] ~= 'away' then
  expiresAt = now + tonumber(ARGV[2])
  redis.call('hset', KEYS[1], 'ea', expiresAt)
end
keep(expiresAt)
if redis.call('exists', KEYS[3]) == 1 then return 'posted' end
return 'ok'
`

/** KEYS: the record, its messages handed over, its messages posted. ARGV: fence. Returns ok, fenced or lost. */
const END = `${PRELUDE}
local refused = fenced()
if refused then return refused end
redis.call('del', KEYS[1], KEYS[2], KEYS[3])
return 'ok'
`

/**
 * KEYS: the record, its messages posted. ARGV: how many messages and bytes may wait (-1: no bound), the message (as
 * handed over: a byte, then its bytes). Returns ['unknown'] (no record, or past expiresAt), ['full'], or ['ok', the
 * holder]. The bytes waiting are the hash's field `pb`.
 */
const POST = `${PRELUDE}
local r = redis.call('hmget', KEYS[1], 'f', 'ea', 'a', 'pb')
if not r[1] or tonumber(r[2]) <= now then return { 'unknown' } end
local maxMessages, maxBytes = tonumber(ARGV[1]), tonumber(ARGV[2])
local bytes = (tonumber(r[4]) or 0) + string.len(ARGV[3]) - 1
if (maxMessages >= 0 and redis.call('llen', KEYS[2]) >= maxMessages) or (maxBytes >= 0 and bytes > maxBytes) then return { 'full' } end
redis.call('rpush', KEYS[2], ARGV[3])
redis.call('hset', KEYS[1], 'pb', bytes)
keep(r[2])
return { 'ok', r[3] }
`

/**
 * KEYS: the record, its messages handed over (here: kept), its messages posted. ARGV: fence. Returns the messages posted
 * (taken out), fenced or lost. Released, its claim holds it no more: what is posted waits for the claim that takes the
 * handover. A durable holder's kept copy gets them as they leave: should it die before it keeps them itself, they are
 * not lost.
 */
const TAKE = `${PRELUDE}
local refused = fenced()
if refused then return refused end
if redis.call('hget', KEYS[1], 'a') == '' then return 'fenced' end
local posted = redis.call('lrange', KEYS[3], 0, -1)
redis.call('del', KEYS[3])
redis.call('hdel', KEYS[1], 'pb')
if redis.call('hexists', KEYS[1], 'ha') == 1 then
  pushAll(KEYS[2], posted, 1)
  -- The list may be new (a copy without messages): it goes with the record.
  keep(redis.call('hget', KEYS[1], 'ea'))
end
return posted
`

/** KEYS: the record. Returns its fields, or nil when there is none or it is past expiresAt. Changes nothing. */
const READ = `${PRELUDE}
local r = redis.call('hmget', KEYS[1], unpack(FIELDS))
if not r[7] or tonumber(r[11]) <= now then return false end
return r
`

type Fields = Array<string | null>
/** The claim's replies, every string as bytes (integers stay numbers, or strings with `stringNumbers`). */
type ClaimReply = [Buffer, (number | string)?] | ClaimHeld | ClaimWon
type ClaimHeld = [Buffer, Buffer, Buffer, (number | string)?]
type ClaimWon = [Buffer, Buffer, Array<Buffer | null>, Buffer?, Buffer?, Buffer[]?, (Buffer | null)?, (Buffer | null)?]

/** The scripts, as ioredis's defineCommand adds them to the client. */
interface ScriptedClient {
  reliableWsSessionCreate (key: string, ...fields: string[]): Promise<0 | 1>
  // Its Buffer variant: messages handed over keep their bytes exactly.
  reliableWsSessionClaimBuffer (key: string, messagesKey: string, postsKey: string, ...args: string[]): Promise<ClaimReply>
  reliableWsSessionWrite (key: string, messagesKey: string, postsKey: string, fence: string, heard: string, away: string, ttlMs: string): Promise<WriteResult>
  // The handover as one array: ioredis flattens it (a spread of many thousand arguments could overflow the stack).
  reliableWsSessionRelease (key: string, messagesKey: string, postsKey: string, fence: string, ttlMs: string, handover: Array<string | Buffer>): Promise<WriteResult>
  reliableWsSessionEnd (key: string, messagesKey: string, postsKey: string, fence: string): Promise<WriteResult>
  reliableWsSessionRead (key: string): Promise<Fields | null>
  reliableWsSessionPost (key: string, postsKey: string, maxMessages: string, maxBytes: string, message: Buffer): Promise<[string, string?]>
  reliableWsSessionTakeBuffer (key: string, messagesKey: string, postsKey: string, fence: string): Promise<Buffer | Buffer[]>
  reliableWsSessionKeep (key: string, messagesKey: string, postsKey: string, fence: string, ttlMs: string, since: string, kept: Array<string | Buffer>): Promise<WriteResult | 'whole'>
}

/** Each script and how many keys it names: the record, then its lists of messages handed over and posted where it touches them. */
const SCRIPTS = {
  reliableWsSessionCreate: [CREATE, 1],
  reliableWsSessionClaim: [CLAIM, 3],
  reliableWsSessionWrite: [WRITE, 3],
  reliableWsSessionRelease: [RELEASE, 3],
  reliableWsSessionEnd: [END, 3],
  reliableWsSessionRead: [READ, 1],
  reliableWsSessionPost: [POST, 2],
  reliableWsSessionTake: [TAKE, 3],
  reliableWsSessionKeep: [KEEP, 3]
} as const

/**
 * Sessions' records in Redis, through the application's ioredis client (or Cluster client): commands on the client
 * as it is (its own `keyPrefix`, if any, goes before the names), never closed; `listen` subscribes on a duplicate of
 * it. Every record is a hash of its own, `<prefix>:{s:<id>}`, the messages handed over with it a list,
 * `<prefix>:{s:<id>}:m`, and those posted to it another, `<prefix>:{s:<id>}:p`: on a Cluster the hash tag keeps each
 * session on one slot, where its scripts run.
 */
export class RedisSessionStore implements SessionStore {
  private readonly client: ScriptedClient & fastifyReliableWs.RedisScriptClient
  private readonly prefix: string

  constructor (client: fastifyReliableWs.RedisScriptClient, options: fastifyReliableWs.RedisSessionStoreOptions = {}) {
    this.prefix = options.prefix === undefined ? DEFAULTS.topics.keyPrefix : checkKeyPrefix('prefix', options.prefix)
    for (const [name, [lua, numberOfKeys]] of Object.entries(SCRIPTS)) client.defineCommand(name, { numberOfKeys, lua })
    this.client = client as ScriptedClient & fastifyReliableWs.RedisScriptClient
  }

  /** The name of a session's record. */
  private key (id: string): string {
    return `${this.prefix}:{s:${id}}`
  }

  /** The name of the list of messages handed over with a session's record. */
  private messagesKey (id: string): string {
    return `${this.key(id)}:m`
  }

  /** The name of the list of messages posted to a session, waiting for its holder. */
  private postsKey (id: string): string {
    return `${this.key(id)}:p`
  }

  async create (record: SessionRecord): Promise<void> {
    const fields = [
      'id', record.id, 'rt', record.route, 'url', record.url, 's', record.secret, 'h', record.heldSecret,
      'f', String(record.fence), 'a', record.instance, 'st', record.state,
      'cu', wholeMs(record.claimedUntil - record.createdAt), 'ea', wholeMs(record.expiresAt - record.createdAt)
    ]
    // A null owner is no field at all: told apart from every string, '' and 'null' included.
    if (record.owner !== null) fields.push('o', record.owner)
    const created = await this.client.reliableWsSessionCreate(this.key(record.id), ...fields)
    // Integer replies are strings on a client with `stringNumbers`.
    if (Number(created) === 0) throw new Error(`session ${record.id} exists already`)
  }

  async claim (request: ClaimRequest): Promise<ClaimResult> {
    const reply = await this.client.reliableWsSessionClaimBuffer(this.key(request.id), this.messagesKey(request.id), this.postsKey(request.id),
      request.instance, request.route, request.url, request.owner === null ? '0' : `1${request.owner}`, request.secret,
      String(request.received), request.sent === null ? '' : String(request.sent), request.newSecret, wholeMs(request.confirmMs),
      wholeMs(request.askMs), wholeMs(request.ttlMs), request.durable === true ? '1' : '0', request.dead ?? '')
    const answer = reply[0].toString()
    if (answer === 'ok') {
      const [, previous, fields, received, acknowledged, messages, topics, reserved] = reply as ClaimWon
      const handover: SessionHandover | null = messages === undefined
        ? null
        : { received: Number(received!.toString()), acknowledged: Number(acknowledged!.toString()), messages: messages.map(toMessage), topics: topicsOf(topics!) }
      // Absent from a handover written before durable sessions existed.
      if (handover !== null && reserved !== undefined && reserved !== null) handover.reserved = Number(reserved.toString())
      return { ok: true, record: toRecord(fields.map((field) => field === null ? null : field.toString())), previous: previous.toString(), handover }
    }
    if (answer === 'held') {
      const [, holder, fence, retryMs] = reply as ClaimHeld
      const held = { ok: false as const, refusal: 'held' as const, holder: holder.toString(), fence: Number(fence.toString()) }
      return retryMs === undefined ? held : { ...held, retryMs: Number(retryMs) }
    }
    return answer === 'busy' ? { ok: false, refusal: 'busy', retryMs: Number(reply[1]) } : { ok: false, refusal: answer as Exclude<ClaimRefusal, 'held'> }
  }

  async write (id: string, fence: number, changes: RecordChanges, ttlMs: number): Promise<WriteResult> {
    return await this.client.reliableWsSessionWrite(this.key(id), this.messagesKey(id), this.postsKey(id), String(fence),
      changes.heard === true ? '1' : '0', changes.away === true ? '1' : '0', wholeMs(ttlMs))
  }

  async release (id: string, fence: number, ttlMs: number, handover?: SessionHandover): Promise<WriteResult> {
    return await this.client.reliableWsSessionRelease(this.key(id), this.messagesKey(id), this.postsKey(id), String(fence), wholeMs(ttlMs),
      handover === undefined ? [] : handoverArgs(handover))
  }

  /**
   * With `since`, only the messages after it go to Redis: a client that acknowledges nothing does not make each keep
   * write its whole outbox again. The whole copy goes when the list in Redis is not the one `since` speaks of.
   */
  async keep (id: string, fence: number, ttlMs: number, kept: SessionHandover, since?: number): Promise<WriteResult> {
    const keys = [this.key(id), this.messagesKey(id), this.postsKey(id)] as const
    if (since !== undefined && since >= kept.acknowledged) {
      const result = await this.client.reliableWsSessionKeep(...keys, String(fence), wholeMs(ttlMs), String(since), handoverArgs(kept, since - kept.acknowledged))
      if (result !== 'whole') return result
    }
    return await this.client.reliableWsSessionKeep(...keys, String(fence), wholeMs(ttlMs), '', handoverArgs(kept)) as WriteResult
  }

  async end (id: string, fence: number): Promise<WriteResult> {
    return await this.client.reliableWsSessionEnd(this.key(id), this.messagesKey(id), this.postsKey(id), String(fence))
  }

  async post (id: string, message: SessionMessage, maxMessages: number, maxBytes: number): Promise<PostResult> {
    const [answer, holder] = await this.client.reliableWsSessionPost(this.key(id), this.postsKey(id), bound(maxMessages), bound(maxBytes), fromMessage(message))
    if (answer !== 'ok') return answer as 'unknown' | 'full'
    // The message is kept whatever becomes of the notice: without it, the holder takes it at its next write.
    if (holder !== '') await this.client.publish(this.channel(holder!), `+ ${id}`).catch(ignore)
    return { holder: holder! }
  }

  async take (id: string, fence: number): Promise<SessionMessage[] | 'fenced' | 'lost'> {
    const reply = await this.client.reliableWsSessionTakeBuffer(this.key(id), this.messagesKey(id), this.postsKey(id), String(fence))
    return Array.isArray(reply) ? reply.map(toMessage) : reply.toString() as 'fenced' | 'lost'
  }

  async read (id: string): Promise<SessionRecord | null> {
    const fields = await this.client.reliableWsSessionRead(this.key(id))
    return fields === null ? null : toRecord(fields)
  }

  /**
   * Subscribes to the instance's channel, `<prefix>:i:<instance>`, on a connection of the store's own (the client's
   * duplicate); resolves once subscribed, or rejects with the first failure. Notices published while that connection
   * is down are lost: asked-for sessions do not move, and posted messages wait for their holder's next write.
   */
  async listen (instance: string, notices: StoreNotices): Promise<() => Promise<void>> {
    const channel = this.channel(instance)
    // It reconnects and subscribes again by itself, whatever the client's settings; until then, asks are lost as
    // documented.
    // An offline queue and no command timeout, whatever the client's: ioredis subscribes again after a reconnection
    // without catching a failure, and a SUBSCRIBE refused or timed out there would be an unhandled rejection.
    const connection = openConnection(this.client as unknown as RedisOption, { autoResubscribe: true, enableOfflineQueue: true, commandTimeout: undefined }, false)
    connection.on('error', ignore)
    // `<fence> <id>`: asked for; `+ <id>`: posted to.
    connection.on('message', (from: string, message: string) => {
      const space = message.indexOf(' ')
      if (from !== channel || space <= 0) return
      const id = message.slice(space + 1)
      if (message[0] === '+') notices.posted(id)
      else notices.asked(id, Number(message.slice(0, space)))
    })
    const stop = async (): Promise<void> => { await closeConnection(connection, QUIT_MS) }
    try {
      await ready(connection)
      await connection.subscribe(channel)
    } catch (err) {
      connection.disconnect()
      throw err
    }
    return stop
  }

  /**
   * False when nobody subscribes to the instance's channel: it died, or its listening connection is down (an ask would
   * be lost either way). On a Cluster, PUBLISH counts only the subscribers of the node it ran on: there, never false.
   */
  async ask (instance: string, id: string, fence: number): Promise<boolean> {
    const reached = await this.client.publish(this.channel(instance), `${fence} ${id}`)
    return this.client.isCluster === true || Number(reached) > 0
  }

  /** The channel on which an instance is asked for the sessions it holds. */
  private channel (instance: string): string {
    return `${this.prefix}:i:${instance}`
  }
}

/**
 * The sessions' store of the `redis` option, when the application gives no store of its own: a `RedisSessionStore` on
 * a connection of the plugin's own, keys named by `topics.keyPrefix` alone (as the topics' are), whatever key prefix
 * a client given has. As the broker's: no offline queue and a command timeout, so that while Redis is away a session
 * that begins or resumes is told to retry now, not held; and nothing resent on reconnection (a script whose answer was
 * lost may have run: run again, a post would be kept twice). `start` connects, `close` ends the connection.
 */
export function openRedisSessionStore (option: RedisOption, prefix: string): { store: RedisSessionStore, start: () => Promise<void>, close: () => Promise<void> } {
  const own = { keyPrefix: '', enableOfflineQueue: false, commandTimeout: COMMAND_TIMEOUT_MS, autoResendUnfulfilledCommands: false }
  const connection = openConnection(option, own, false)
  // Every command's failure is its caller's, and logged there; the connection reconnects by itself.
  connection.on('error', ignore)
  return {
    store: new RedisSessionStore(connection, { prefix }),
    // A first connection that fails fails the instance's start, and is dropped: nothing reconnects behind it.
    start: async () => {
      try {
        await ready(connection)
      } catch (err) {
        connection.disconnect()
        throw err
      }
    },
    close: async () => { await closeConnection(connection, QUIT_MS) }
  }
}

// For the errors of the plugin's own connections (each reconnects by itself), and of a post's notice (it may be lost).
function ignore (): void {}

// A bound for a script: -1 for none (Lua's tonumber reads no Infinity).
function bound (limit: number): string {
  return limit === Infinity ? '-1' : String(limit)
}

// PEXPIRE takes whole milliseconds; ttlMs may have a fraction.
function wholeMs (ms: number): string {
  return String(Math.ceil(ms))
}

const TEXT = Buffer.of(0)
const BINARY = Buffer.of(1)

/** A message handed over as one list element: a byte saying whether it is binary, then its bytes (a string's in UTF-8). */
function fromMessage ({ data, binary }: SessionMessage): Buffer {
  return Buffer.concat([binary ? BINARY : TEXT, typeof data === 'string' ? Buffer.from(data) : data])
}

/** A handover as HAND_OVER reads it; its messages from index `skip` on. */
function handoverArgs (handover: SessionHandover, skip = 0): Array<string | Buffer> {
  const args: Array<string | Buffer> = [String(handover.received), String(handover.acknowledged), JSON.stringify(handover.topics),
    String(handover.reserved ?? handover.received)]
  for (let i = skip; i < handover.messages.length; i++) args.push(fromMessage(handover.messages[i]!))
  return args
}

function toMessage (element: Buffer): SessionMessage {
  return element[0] === 1 ? { data: element.subarray(1), binary: true } : { data: element.toString('utf8', 1), binary: false }
}

// A handover written without its topics (by a version of the plugin that handed over only sessions without any).
function topicsOf (field: Buffer | null): SessionHandover['topics'] {
  return field === null ? [] : JSON.parse(field.toString())
}

function toRecord (fields: Fields): SessionRecord {
  // Every field but the owner is always there.
  const [id, route, url, , secret, heldSecret, fence, instance, state, claimedUntil, expiresAt, createdAt] = fields as string[]
  return {
    id,
    route,
    url,
    owner: fields[3],
    secret,
    heldSecret,
    fence: Number(fence),
    instance,
    state: state as SessionRecord['state'],
    claimedUntil: Number(claimedUntil),
    expiresAt: Number(expiresAt),
    createdAt: Number(createdAt)
  }
}
