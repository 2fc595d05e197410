import { timingSafeEqual } from 'node:crypto'
import type fastifyReliableWs = require('../../types/index')

type SessionRecord = fastifyReliableWs.SessionRecord
type ClaimRequest = fastifyReliableWs.ClaimRequest
type ClaimResult = fastifyReliableWs.ClaimResult
type RecordChanges = fastifyReliableWs.RecordChanges
type WriteResult = fastifyReliableWs.WriteResult
type SessionHandover = fastifyReliableWs.SessionHandover
type SessionMessage = fastifyReliableWs.SessionMessage
type StoreNotices = fastifyReliableWs.StoreNotices
type PostResult = fastifyReliableWs.PostResult

// A write that changes nothing: a held record is kept ttlMs more.
const KEEP: RecordChanges = Object.freeze({})

/** Messages posted to a session, waiting for its holder to take them (or its next claim, with a handover). */
interface Posts {
  readonly messages: SessionMessage[]
  bytes: number
}

export type SessionStore = fastifyReliableWs.SessionStore

/**
 * The default store: records in this process's memory, copied in and out so
 * that nothing outside changes one behind the store's back (as a shared store
 * could not be). Every answer is a plain value, never a promise: with it,
 * beginning and resuming a session stays synchronous. It keeps the whole
 * contract (fences, the claim's window, expiry) so that the one contract test
 * holds for it as for any store.
 */
export class MemorySessionStore implements SessionStore {
  private readonly records = new Map<string, SessionRecord>()
  /** What was handed over with a record, by its id: kept beside it, never part of what `read` gives. */
  private readonly handovers = new Map<string, SessionHandover>()
  /** Until when the holder of a record, asked for it, may still hand it over; by its id, until the record changes hands. */
  private readonly asked = new Map<string, number>()
  /**
   * What the holder of a record keeps of it for the next holder should it die (`keep`), by its id: its handover, were
   * it to hand it over now.
   */
  private readonly kept = new Map<string, SessionHandover>()
  /** Messages posted to a record, by its id: kept beside it, like a handover, and gone with it. */
  private readonly posts = new Map<string, Posts>()
  /** Each listening instance's notices. */
  private readonly listeners = new Map<string, StoreNotices>()

  create (record: SessionRecord): void {
    if (this.records.has(record.id)) throw new Error(`session ${record.id} exists already`)
    this.records.set(record.id, { ...record })
  }

  claim (request: ClaimRequest): ClaimResult {
    const now = Date.now()
    const record = this.records.get(request.id)
    if (record === undefined) return { ok: false, refusal: 'unknown' }
    // Away too long: gone for good (its holder's own expiry ends the live session).
    if (record.state === 'away' && expired(record, now)) {
      this.drop(record.id)
      return { ok: false, refusal: 'unknown' }
    }
    if (record.route !== request.route || record.url !== request.url || record.owner !== request.owner) return { ok: false, refusal: 'mismatch' }
    // The secret the client resumed with last stays good while that resume's welcome may have been lost: once its
    // connection is gone, or once the claim of another instance stopped waiting (that instance may have died before
    // its client heard it). A claim of the asking instance itself waits as long as its connection lives: it writes
    // `away` when that closes. Two resumes with one secret cannot both win.
    const held = record.heldSecret !== '' && sameSecret(record.heldSecret, request.secret)
    const waiting = record.state === 'claimed' && (record.claimedUntil > now || record.instance === request.instance)
    if (!sameSecret(record.secret, request.secret) && !(held && !waiting)) {
      return held && waiting ? { ok: false, refusal: 'busy', retryMs: Math.max(record.claimedUntil - now, 0) } : { ok: false, refusal: 'secret' }
    }
    // Held by an instance that has not written it for its time: it died, and the session with it, unless it kept a
    // copy for a durable claim. Never on an id alone (a thief could not end a live session so), nor for the holder
    // itself (alive, if late).
    const died = expired(record, now) && record.instance !== request.instance
    const kept = request.durable === true && record.instance !== '' ? this.kept.get(record.id) : undefined
    if (died && kept === undefined) {
      this.drop(record.id)
      return { ok: false, refusal: 'unknown' }
    }
    let handover = this.handovers.get(record.id)
    // Durable, claimed as held by an instance the record names no more (another took the session over since, taking
    // that one for dead): its count is of a copy gone stale, and it is judged as a claim from elsewhere.
    let sent = request.durable === true && record.instance !== request.instance ? null : request.sent
    if (sent === null) {
      // The session's messages are with the instance holding it, unless it handed them over, or died with a copy kept.
      if (handover === undefined && kept !== undefined && (died || request.dead === record.instance)) handover = kept
      if (handover === undefined) return this.held(record, request, now)
      // The messages handed over begin after those the client acknowledged: one that says it received fewer cannot
      // be given the rest.
      if (request.received < handover.acknowledged) return { ok: false, refusal: 'count' }
      sent = handover.acknowledged + handover.messages.length
    }
    // A count of messages received that the session never sent: the client speaks of another conversation.
    if (request.received > sent) return { ok: false, refusal: 'count' }
    const claimed: SessionRecord = {
      ...record,
      fence: record.fence + 1,
      instance: request.instance,
      state: 'claimed',
      claimedUntil: now + request.confirmMs,
      expiresAt: now + request.ttlMs,
      secret: request.newSecret,
      heldSecret: request.secret
    }
    this.records.set(claimed.id, claimed)
    // Taken out: the store keeps no reference to what it gives (its own copy, made on release). What was posted since
    // the handover comes after its messages: nobody had it yet. A durable claim keeps a copy of it all, as the
    // claimer's until it keeps its own: the claimer may die before that.
    this.handovers.delete(claimed.id)
    this.asked.delete(claimed.id)
    if (handover === undefined) return { ok: true, record: { ...claimed }, previous: record.instance, handover: null }
    handover = copyHandover(handover)
    handover.messages.push(...this.takePosts(claimed.id))
    if (request.durable === true) this.kept.set(claimed.id, copyHandover(handover))
    else this.kept.delete(claimed.id)
    return { ok: true, record: { ...claimed }, previous: record.instance, handover }
  }

  write (id: string, fence: number, changes: RecordChanges, ttlMs: number): WriteResult {
    const record = this.fenced(id, fence)
    if (typeof record === 'string') return record
    if (changes.heard === true) {
      record.state = 'connected'
      record.heldSecret = ''
    }
    if (changes.away === true) this.leave(record, ttlMs)
    // Its holder lives: held, it is kept ttlMs more. Away, it keeps the moment it left by.
    else if (record.state !== 'away') record.expiresAt = Date.now() + ttlMs
    return this.posts.has(id) ? 'posted' : 'ok'
  }

  release (id: string, fence: number, ttlMs: number, handover?: SessionHandover): WriteResult {
    const record = this.fenced(id, fence)
    if (typeof record === 'string') return record
    record.instance = ''
    this.kept.delete(id)
    if (handover === undefined) this.handovers.delete(id)
    else this.handovers.set(id, copyHandover(handover))
    this.leave(record, ttlMs)
    return 'ok'
  }

  keep (id: string, fence: number, ttlMs: number, kept: SessionHandover): WriteResult {
    const record = this.fenced(id, fence)
    if (typeof record === 'string') return record
    if (record.instance === '') return 'fenced'
    this.kept.set(id, copyHandover(kept))
    return this.write(id, fence, KEEP, ttlMs)
  }

  end (id: string, fence: number): WriteResult {
    const record = this.fenced(id, fence)
    if (typeof record === 'string') return record
    this.drop(id)
    return 'ok'
  }

  read (id: string): SessionRecord | null {
    const record = this.records.get(id)
    return record === undefined || expired(record, Date.now()) ? null : { ...record }
  }

  listen (instance: string, notices: StoreNotices): () => void {
    this.listeners.set(instance, notices)
    return () => {
      if (this.listeners.get(instance) === notices) this.listeners.delete(instance)
    }
  }

  ask (instance: string, id: string, fence: number): boolean {
    const notices = this.listeners.get(instance)
    if (notices === undefined) return false
    // Told later, as over a channel: never inside the claim of the instance asking.
    queueMicrotask(() => notices.asked(id, fence))
    return true
  }

  post (id: string, message: SessionMessage, maxMessages: number, maxBytes: number): PostResult {
    const record = this.records.get(id)
    if (record === undefined || expired(record, Date.now())) return 'unknown'
    const bytes = Buffer.byteLength(message.data)
    const posts = this.posts.get(id) ?? { messages: [], bytes: 0 }
    if (posts.messages.length >= maxMessages || posts.bytes + bytes > maxBytes) return 'full'
    posts.messages.push({ data: message.data, binary: message.binary })
    posts.bytes += bytes
    this.posts.set(id, posts)
    const notices = this.listeners.get(record.instance)
    if (notices !== undefined) queueMicrotask(() => notices.posted(id))
    return { holder: record.instance }
  }

  take (id: string, fence: number): SessionMessage[] | 'fenced' | 'lost' {
    const record = this.fenced(id, fence)
    if (typeof record === 'string') return record
    // Released, its claim holds it no more: what is posted waits for the claim that takes the handover.
    if (record.instance === '') return 'fenced'
    const taken = this.takePosts(id)
    // A durable holder's copy gets them as they leave: should it die before it keeps them itself, they are not lost.
    this.kept.get(id)?.messages.push(...taken.map(({ data, binary }) => ({ data, binary })))
    return taken
  }

  private takePosts (id: string): SessionMessage[] {
    const posts = this.posts.get(id)
    this.posts.delete(id)
    return posts === undefined ? [] : posts.messages
  }

  /**
   * A session another instance holds, asked for by one that does not: its holder is asked once, and has `askMs` to
   * hand it over; the claims in that time are to come back once it is over, those after it cannot move the session.
   */
  private held (record: SessionRecord, request: ClaimRequest, now: number): ClaimResult {
    const { instance: holder, fence } = record
    if (holder === '' || holder === request.instance) return { ok: false, refusal: 'held', holder, fence }
    const until = this.asked.get(record.id)
    if (until === undefined) {
      this.asked.set(record.id, now + request.askMs)
      return { ok: false, refusal: 'held', holder, fence, retryMs: request.askMs }
    }
    return until > now ? { ok: false, refusal: 'held', holder, fence, retryMs: until - now } : { ok: false, refusal: 'held', holder, fence }
  }

  /** The record, if the claim numbered `fence` still holds it: a write of an older claim is refused. */
  private fenced (id: string, fence: number): SessionRecord | 'lost' | 'fenced' {
    const record = this.records.get(id)
    if (record === undefined) return 'lost'
    return record.fence === fence ? record : 'fenced'
  }

  private drop (id: string): void {
    this.records.delete(id)
    this.handovers.delete(id)
    this.kept.delete(id)
    this.asked.delete(id)
    this.posts.delete(id)
  }

  private leave (record: SessionRecord, ttlMs: number): void {
    record.state = 'away'
    record.expiresAt = Date.now() + ttlMs
  }
}

function expired (record: SessionRecord, now: number): boolean {
  return record.expiresAt <= now
}

/**
 * The handover's numbers, its list and each message anew; a message's Buffer is shared, not copied: the plugin never
 * writes into the bytes of a message it sent. Its reserved count told, `received` if not.
 */
function copyHandover (handover: SessionHandover): SessionHandover {
  return {
    received: handover.received,
    acknowledged: handover.acknowledged,
    messages: handover.messages.map(({ data, binary }) => ({ data, binary })),
    topics: handover.topics.map(({ topic, epoch, offset }) => ({ topic, epoch, offset })),
    reserved: handover.reserved ?? handover.received
  }
}

function sameSecret (held: string, offered: string): boolean {
  return held.length === offered.length && timingSafeEqual(Buffer.from(held), Buffer.from(offered))
}
