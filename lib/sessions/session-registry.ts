// Sessions: a client's conversation across its connections, numbered, acknowledged and replayed on resume.
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type fastifyReliableWs = require('../../types/index')
import { createIdGenerator } from '../core/ids'
import type { SessionLimitSettings } from '../core/options'
import type { BusySession, Counters, PendingConnection, PreparedSession, ReliableSocket, ResumeRequest, Schedule, SessionRoute, Sessions } from '../core/shapes'
import { isThenable } from '../core/thenable'
import { SESSION_OVERFLOW_CODE, TOPIC_GAP_CODE } from '../protocol/protocol'
import { Session } from './session'
import type { SessionStore } from './session-store'
import { kCause, kIp, kResume, kSession } from '../core/symbols'

type Awaitable<T> = fastifyReliableWs.Awaitable<T>
type SessionRecord = fastifyReliableWs.SessionRecord
type ClaimResult = fastifyReliableWs.ClaimResult

/** A connection's session as the store settled it: claimed (`session` is the live one held here) or created. */
interface Prepared extends PreparedSession {
  readonly session: Session | null
  /** The client's count of messages received, from its resume request. */
  readonly received: number
}

// What a kept message costs beyond its bytes (its record and its slot in the outbox), so that the instance's
// budget also bounds a flood of tiny messages.
const MESSAGE_OVERHEAD = 64
// How long another instance's claim awaits its client before the secret the client resumed with may take the session
// over again (the claimer may have died before its welcome went out); a live client acknowledges its welcome at once.
const CONFIRM_MS = 5000

/**
 * The sessions of one Fastify instance: begun or resumed once a socket of a
 * route with sessions has been accepted, kept `ttlMs` after its socket closes
 * (on the shared scheduler, so no timer per session), ended on expiry,
 * overflow, or to make room under the instance's limits. The live sessions
 * are held here; the store keeps their records and judges every resume.
 */
export class SessionRegistry implements Sessions {
  private readonly nextId = createIdGenerator()
  private readonly nextSecret = createIdGenerator()
  // Sessions whose client is away, longest away first: the first to go when a limit needs room.
  private readonly away = new Set<Session>()
  // Every live session, by the address of its latest connection.
  private readonly perIp = new Map<string, Set<Session>>()
  // Every live session this instance holds, by id.
  private readonly held = new Map<string, Session>()
  // Whoever holds a record: this instance, while it lives.
  private readonly instance = createIdGenerator()()

  constructor (
    private readonly stats: Counters,
    private readonly scheduler: Schedule<ReliableSocket | PendingConnection | Session>,
    private readonly store: SessionStore,
    private readonly limits: SessionLimitSettings,
    private readonly log: FastifyBaseLogger,
    // Whatever else a session holds (its topics) ends with it.
    private readonly onEnd: (session: Session) => void
  ) {}

  get (id: string): Session | undefined {
    return this.held.get(id)
  }

  /**
   * Runs once everything that can refuse the connection has accepted it: a
   * resume request is judged by the store's claim, and one that does not fit
   * its session in every respect begins a new session and leaves that one as
   * it was; one the store finds busy is to come back later. Synchronous when
   * the store is; throws or rejects when it fails.
   */
  prepare (route: SessionRoute, request: FastifyRequest, owner: string | null): Awaitable<Prepared | BusySession> {
    const resume = (request.raw as { [kResume]?: ResumeRequest })[kResume]
    if (resume === undefined) return this.create(route, request.url, owner)
    // A record held by another instance cannot be resumed here yet: only a live session of this one is claimed. Its
    // route is told apart here from another that shares its pattern (host constraints): the record names the pattern.
    const session = this.held.get(resume.session)
    if (session === undefined || session.route !== route) {
      this.stats.sessions.resumeRefused++
      return this.create(route, request.url, owner)
    }
    const claim = this.store.claim({
      id: session.id,
      instance: this.instance,
      route: route.url,
      url: request.url,
      owner,
      secret: resume.secret,
      received: resume.received,
      sent: session.sent,
      newSecret: this.nextSecret(),
      confirmMs: CONFIRM_MS
    })
    const afterClaim = (result: ClaimResult): Awaitable<Prepared | BusySession> => {
      if (result.ok && !session.ended) return { record: result.record, session, received: resume.received }
      // The client's last welcome may have been lost with a connection not yet seen to close: a new session would
      // lose this one, so it comes back once the claim's window is over. Past it the claim waits only for a
      // connection whose client may never speak (a thief's, or a half-open one): no longer, or it could wait forever.
      if (!result.ok && result.refusal === 'busy' && Number(result.retryMs) > 0 && !session.ended) return { retryMs: Number(result.retryMs) }
      // Ended while the claim was on its way: the record it took has no session left to resume.
      if (result.ok) this.endRecord(session.id, result.record.fence)
      this.stats.sessions.resumeRefused++
      return this.create(route, request.url, owner)
    }
    return isThenable(claim) ? Promise.resolve(claim).then(afterClaim) : afterClaim(claim)
  }

  /**
   * Makes the prepared session the socket's, before the application's
   * handler, so the welcome and every message replayed reach the client
   * before anything the handler sends. When there is no room for a new
   * session the socket is closed with 1013 instead (and the handler, seeing
   * it closing, is not called).
   */
  open (socket: ReliableSocket, route: SessionRoute, prepared: Prepared): void {
    // Read once at the upgrade, while the TCP socket surely still has a peer address.
    const ip = socket[kIp]
    const { record, session: claimed } = prepared
    // Ended after the store's answer, before this turn (made room for another, overflowed): nothing is left to
    // resume, and a new session cannot begin without the store. The client comes back and begins one.
    if (claimed?.ended === true) {
      this.endRecord(record.id, record.fence)
      this.stats.sessions.resumeRefused++
      socket[kCause] = 'session'
      socket.close(1013, 'Session ended')
      return
    }
    if (claimed !== null) {
      this.takeOver(claimed)
      this.moveTo(claimed, ip)
      claimed.fence = record.fence
      claimed.resumed = true
      claimed.attach(socket, prepared.received, record.secret)
      this.stats.sessions.resumed++
      this.stats.sessions.replayed += claimed.unacknowledged
      return
    }
    if (!this.makeRoom(ip)) {
      this.endRecord(record.id, record.fence)
      this.stats.sessions.rejected++
      socket[kCause] = 'session'
      socket.close(1013, 'Too many sessions')
      return
    }
    const session = new Session(record.id, route, this, record.url, record.owner, ip)
    session.fence = record.fence
    this.held.set(session.id, session)
    this.ipSessions(ip).add(session)
    this.stats.sessions.active++
    session.attach(socket, 0, record.secret)
  }

  /**
   * The socket closed while its session was prepared: a claimed session is
   * let go, away as it was (its client still holds the secret it resumed
   * with) and expiring as it would have; a new one, whose secret nobody saw,
   * ends.
   */
  abandon (prepared: Prepared): void {
    const { record, session } = prepared
    if (session === null) {
      this.endRecord(record.id, record.fence)
      return
    }
    session.fence = record.fence
    this.settle('release', () => this.store.release(record.id, record.fence, session.route.resume.ttlMs))
  }

  /** The client was heard on its connection: the secret it resumed with is no good any more. */
  heard (session: Session): void {
    this.settle('write', () => this.store.write(session.id, session.fence, { heard: true }, session.route.resume.ttlMs))
  }

  /** The session's socket closed: it waits `ttlMs` for the client to come back. */
  detach (session: Session, now: number): void {
    const ttlMs = session.route.resume.ttlMs
    session.socket = null
    this.away.add(session)
    // Its address's sessions too are kept longest away first, for the per-address cap.
    const mine = this.perIp.get(session.ip)!
    mine.delete(session)
    mine.add(session)
    this.scheduler.add(session, now + ttlMs)
    this.settle('write', () => this.store.write(session.id, session.fence, { away: true }, ttlMs))
  }

  /** The scheduler's callback for a session: nobody came back in time. */
  expire (session: Session): void {
    this.stats.sessions.expired++
    this.end(session)
  }

  /** The client fell too far behind: the session ends, and its connection with a code that says so. */
  overflow (session: Session): void {
    this.stats.sessions.overflowed++
    this.endAndClose(session, SESSION_OVERFLOW_CODE, 'Session buffer full')
  }

  /** A topic the session subscribes to lost messages it promised: the session ends, its connection with 4801. */
  topicLost (session: Session): void {
    this.stats.sessions.topicGaps++
    this.endAndClose(session, TOPIC_GAP_CODE, 'Topic history lost')
  }

  private endAndClose (session: Session, code: number, reason: string): void {
    const socket = session.socket
    this.end(session)
    if (socket !== null) {
      socket[kCause] = 'session'
      socket.close(code, reason)
    }
  }

  /**
   * A session is about to keep a message of `bytes`: within the instance's
   * budget, after ending the sessions longest away if need be. False when
   * even that leaves no room.
   */
  reserve (session: Session, bytes: number): boolean {
    const cost = bytes + MESSAGE_OVERHEAD
    const budget = this.limits.sessionBufferBytes
    const sessions = this.stats.sessions
    while (sessions.bufferedBytes + cost > budget) {
      if (!this.evictOldest(this.away, session)) return false
    }
    sessions.bufferedBytes += cost
    return true
  }

  /** Acknowledged messages leave the budget. */
  release (bytes: number, count: number): void {
    this.stats.sessions.bufferedBytes -= bytes + count * MESSAGE_OVERHEAD
  }

  /** The instance is closing: its sessions, kept in its memory, end with it. */
  endAll (): void {
    for (const sessions of this.perIp.values()) {
      for (const session of sessions) this.end(session)
    }
  }

  private end (session: Session): void {
    session.ended = true
    this.endRecord(session.id, session.fence)
    this.held.delete(session.id)
    this.stats.sessions.active--
    this.scheduler.remove(session)
    this.away.delete(session)
    this.leaveIp(session)
    const { bytes, count } = session.clear()
    this.release(bytes, count)
    if (session.socket !== null) session.socket[kSession] = null
    this.onEnd(session)
  }

  private create (route: SessionRoute, url: string, owner: string | null): Awaitable<Prepared> {
    const now = Date.now()
    const record: SessionRecord = {
      id: this.nextId(),
      route: route.url,
      url,
      owner,
      secret: this.nextSecret(),
      heldSecret: '',
      fence: 1,
      instance: this.instance,
      state: 'claimed',
      claimedUntil: now + CONFIRM_MS,
      expiresAt: now + route.resume.ttlMs,
      createdAt: now
    }
    const created = this.store.create(record)
    const prepared: Prepared = { record, session: null, received: 0 }
    return isThenable(created) ? Promise.resolve(created).then(() => prepared) : prepared
  }

  private endRecord (id: string, fence: number): void {
    this.settle('end', () => this.store.end(id, fence))
  }

  /**
   * What became of a write is the record's business: with a store in memory
   * it cannot fail, and a write refused because another claim took the
   * session is right to be. One that failed leaves the record behind the
   * live session (a resume it should allow may be refused), so it is logged.
   */
  private settle (what: string, write: () => Awaitable<unknown>): void {
    const failed = (err: unknown): void => { this.log.warn({ err }, `session store: ${what} failed`) }
    try {
      const result = write()
      if (isThenable(result)) result.then(undefined, failed)
    } catch (err) {
      failed(err)
    }
  }

  /** Room for one more session from `ip`: the caps are met by ending sessions whose client is away, longest away first. */
  private makeRoom (ip: string): boolean {
    const { maxSessions, maxSessionsPerIp } = this.limits
    const mine = this.perIp.get(ip)
    if (mine !== undefined && mine.size >= maxSessionsPerIp && !this.evictOldest(mine, null)) return false
    return this.stats.sessions.active < maxSessions || this.evictOldest(this.away, null)
  }

  private evictOldest (sessions: Set<Session>, spare: Session | null): boolean {
    for (const session of sessions) {
      if (session.socket === null && session !== spare) {
        this.stats.sessions.evicted++
        this.end(session)
        return true
      }
    }
    return false
  }

  private ipSessions (ip: string): Set<Session> {
    let sessions = this.perIp.get(ip)
    if (sessions === undefined) {
      sessions = new Set()
      this.perIp.set(ip, sessions)
    }
    return sessions
  }

  /** A client may come back from another address (a phone changing networks): its session counts there from now on. */
  private moveTo (session: Session, ip: string): void {
    if (session.ip === ip) return
    this.leaveIp(session)
    session.ip = ip
    this.ipSessions(ip).add(session)
  }

  private leaveIp (session: Session): void {
    const sessions = this.perIp.get(session.ip)!
    sessions.delete(session)
    if (sessions.size === 0) this.perIp.delete(session.ip)
  }

  /**
   * A client resumes before the server noticed its old connection die (the
   * usual order: the client finds out first). The old socket is cut loose
   * and ended at once, so nothing more it delivers counts.
   */
  private takeOver (session: Session): void {
    const old = session.socket
    this.away.delete(session)
    if (old === null) {
      this.scheduler.remove(session)
      return
    }
    old[kSession] = null
    session.socket = null
    old[kCause] = 'replaced'
    old.terminate()
  }
}
