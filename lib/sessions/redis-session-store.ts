// Sessions' records in Redis: one hash per session, each method one atomic Lua script, time taken from Redis
// (docs/sessions.md, "Records in Redis").
import type fastifyReliableWs = require('../../types/index')
import { checkKeyPrefix, DEFAULTS } from '../core/options'
import type { SessionStore } from './session-store'

type SessionRecord = fastifyReliableWs.SessionRecord
type ClaimRequest = fastifyReliableWs.ClaimRequest
type ClaimResult = fastifyReliableWs.ClaimResult
type ClaimRefusal = fastifyReliableWs.ClaimRefusal
type RecordChanges = fastifyReliableWs.RecordChanges
type WriteResult = fastifyReliableWs.WriteResult

/** A record's fields as the hash names them, in the order of `SessionRecord`; every script that returns a record returns them so. */
const FIELDS = ['id', 'rt', 'url', 'o', 's', 'h', 'f', 'a', 'st', 'cu', 'ea', 'ca'] as const

// How long an away record outlives its expiresAt in Redis. The holder ends its session by its own clock, which may
// run behind Redis's: its `end` should still find the record. Claims never rely on the key's expiry: a record away
// past expiresAt is refused by the claim itself.
export const GRACE_MS = 5000

/**
 * What every script begins with. Time is Redis's, one clock for every instance. A script that reads TIME and then
 * writes replicates its effects, not itself: the default from Redis 5 on (the least the project supports), the only
 * way from Redis 7. A record is kept while it is held (its holder ends or releases it: nothing refreshes it yet, so an
 * expiry would drop the record of a session still connected) and until `expiresAt` plus the grace once away.
 */
const PRELUDE = `
local time = redis.call('time')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local FIELDS = { ${FIELDS.map((field) => `'${field}'`).join(', ')} }
local function keep (state, expiresAt)
  if state == 'away' then
    redis.call('pexpire', KEYS[1], tonumber(expiresAt) - now + ${GRACE_MS})
  else
    redis.call('persist', KEYS[1])
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

/** KEYS: the record. ARGV: its fields and values, pairs as the hash names them. Returns 0 when the id is taken. */
const CREATE = `${PRELUDE}
if redis.call('exists', KEYS[1]) == 1 then return 0 end
redis.call('hset', KEYS[1], unpack(ARGV))
local kept = redis.call('hmget', KEYS[1], 'st', 'ea')
keep(kept[1], kept[2])
return 1
`

/**
 * Every check of MemorySessionStore.claim, in its order, and the take-over, in one step: two claims cannot both win.
 * The secrets are compared here, without a constant-time compare: Redis's Lua interns strings, so equality compares
 * references, and the bytes are compared only when a string is interned beside another of the same hash.
 *
 * KEYS: the record. ARGV: instance, route, url, owner (`0` for null, else `1` and the owner), secret, received, sent,
 * new secret, confirmMs. Returns [refusal] or ['busy', retryMs], or ['ok', previous instance, the record's fields].
 */
const CLAIM = `${PRELUDE}
local r = redis.call('hmget', KEYS[1], unpack(FIELDS))
if not r[7] then return { 'unknown' } end
if r[9] == 'away' and tonumber(r[11]) <= now then
  redis.call('del', KEYS[1])
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
if tonumber(ARGV[6]) > tonumber(ARGV[7]) then return { 'count' } end
redis.call('hincrby', KEYS[1], 'f', 1)
redis.call('hset', KEYS[1], 'a', ARGV[1], 'st', 'claimed', 'cu', now + tonumber(ARGV[9]), 's', ARGV[8], 'h', ARGV[5])
keep('claimed')
return { 'ok', r[8], redis.call('hmget', KEYS[1], unpack(FIELDS)) }
`

/** KEYS: the record. ARGV: fence, heard (0/1), away (0/1), ttlMs. Returns ok, fenced or lost. */
const WRITE = `${PRELUDE}
local refused = fenced()
if refused then return refused end
local kept = redis.call('hmget', KEYS[1], 'st', 'ea')
local state, expiresAt = kept[1], kept[2]
if ARGV[2] == '1' then
  state = 'connected'
  redis.call('hset', KEYS[1], 'st', state, 'h', '')
end
if ARGV[3] == '1' then
  state = 'away'
  expiresAt = now + tonumber(ARGV[4])
  redis.call('hset', KEYS[1], 'st', state, 'ea', expiresAt)
end
keep(state, expiresAt)
return 'ok'
`

/** KEYS: the record. ARGV: fence, ttlMs. Returns ok, fenced or lost. */
const RELEASE = `${PRELUDE}
local refused = fenced()
if refused then return refused end
local expiresAt = now + tonumber(ARGV[2])
redis.call('hset', KEYS[1], 'a', '', 'st', 'away', 'ea', expiresAt)
keep('away', expiresAt)
return 'ok'
`

/** KEYS: the record. ARGV: fence. Returns ok, fenced or lost. */
const END = `${PRELUDE}
local refused = fenced()
if refused then return refused end
redis.call('del', KEYS[1])
return 'ok'
`

/** KEYS: the record. Returns its fields, or nil when there is none or it is away past expiresAt. Changes nothing. */
const READ = `${PRELUDE}
local r = redis.call('hmget', KEYS[1], unpack(FIELDS))
if not r[7] or (r[9] == 'away' and tonumber(r[11]) <= now) then return false end
return r
`

type Fields = Array<string | null>
type ClaimReply = [ClaimRefusal, number?] | ['ok', string, Fields]

/** The scripts, as ioredis's defineCommand adds them to the client. */
interface ScriptedClient {
  reliableWsSessionCreate (key: string, ...fields: string[]): Promise<0 | 1>
  reliableWsSessionClaim (key: string, ...args: string[]): Promise<ClaimReply>
  reliableWsSessionWrite (key: string, fence: string, heard: string, away: string, ttlMs: string): Promise<WriteResult>
  reliableWsSessionRelease (key: string, fence: string, ttlMs: string): Promise<WriteResult>
  reliableWsSessionEnd (key: string, fence: string): Promise<WriteResult>
  reliableWsSessionRead (key: string): Promise<Fields | null>
}

const SCRIPTS = {
  reliableWsSessionCreate: CREATE,
  reliableWsSessionClaim: CLAIM,
  reliableWsSessionWrite: WRITE,
  reliableWsSessionRelease: RELEASE,
  reliableWsSessionEnd: END,
  reliableWsSessionRead: READ
}

/**
 * Sessions' records in Redis, through the application's ioredis client (or Cluster client): commands only, on the
 * client as it is (its own `keyPrefix`, if any, goes before the names), never closed. Every record is a hash of its
 * own, `<prefix>:{s:<id>}`: on a Cluster the hash tag keeps each session on one slot, where its scripts run.
 */
export class RedisSessionStore implements SessionStore {
  private readonly client: ScriptedClient
  private readonly prefix: string

  constructor (client: fastifyReliableWs.RedisScriptClient, options: fastifyReliableWs.RedisSessionStoreOptions = {}) {
    this.prefix = options.prefix === undefined ? DEFAULTS.topics.keyPrefix : checkKeyPrefix('prefix', options.prefix)
    for (const [name, lua] of Object.entries(SCRIPTS)) client.defineCommand(name, { numberOfKeys: 1, lua })
    this.client = client as unknown as ScriptedClient
  }

  /** The name of a session's record. */
  private key (id: string): string {
    return `${this.prefix}:{s:${id}}`
  }

  async create (record: SessionRecord): Promise<void> {
    const fields = [
      'id', record.id, 'rt', record.route, 'url', record.url, 's', record.secret, 'h', record.heldSecret,
      'f', String(record.fence), 'a', record.instance, 'st', record.state, 'cu', String(record.claimedUntil),
      'ea', String(record.expiresAt), 'ca', String(record.createdAt)
    ]
    // A null owner is no field at all: told apart from every string, '' and 'null' included.
    if (record.owner !== null) fields.push('o', record.owner)
    const created = await this.client.reliableWsSessionCreate(this.key(record.id), ...fields)
    // Integer replies are strings on a client with `stringNumbers`.
    if (Number(created) === 0) throw new Error(`session ${record.id} exists already`)
  }

  async claim (request: ClaimRequest): Promise<ClaimResult> {
    const reply = await this.client.reliableWsSessionClaim(this.key(request.id), request.instance, request.route, request.url,
      request.owner === null ? '0' : `1${request.owner}`, request.secret, String(request.received), String(request.sent),
      request.newSecret, String(request.confirmMs))
    if (reply[0] === 'ok') return { ok: true, record: toRecord(reply[2]), previous: reply[1] }
    return reply[0] === 'busy' ? { ok: false, refusal: 'busy', retryMs: Number(reply[1]) } : { ok: false, refusal: reply[0] }
  }

  async write (id: string, fence: number, changes: RecordChanges, ttlMs: number): Promise<WriteResult> {
    return await this.client.reliableWsSessionWrite(this.key(id), String(fence), changes.heard === true ? '1' : '0',
      changes.away === true ? '1' : '0', wholeMs(ttlMs))
  }

  async release (id: string, fence: number, ttlMs: number): Promise<WriteResult> {
    return await this.client.reliableWsSessionRelease(this.key(id), String(fence), wholeMs(ttlMs))
  }

  async end (id: string, fence: number): Promise<WriteResult> {
    return await this.client.reliableWsSessionEnd(this.key(id), String(fence))
  }

  async read (id: string): Promise<SessionRecord | null> {
    const fields = await this.client.reliableWsSessionRead(this.key(id))
    return fields === null ? null : toRecord(fields)
  }
}

// PEXPIRE takes whole milliseconds; ttlMs may have a fraction.
function wholeMs (ms: number): string {
  return String(Math.ceil(ms))
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
