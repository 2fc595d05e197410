// Sessions: a client's conversation across its connections, numbered, acknowledged and replayed on resume.
import type { FastifyRequest } from 'fastify'
import { createIdGenerator } from '../core/ids'
import type { SessionLimitSettings } from '../core/options'
import type { Counters, PendingConnection, ReliableSocket, ResumeRequest, Schedule, SessionRoute, Sessions } from '../core/shapes'
import { SESSION_OVERFLOW_CODE, TOPIC_GAP_CODE } from '../protocol/protocol'
import { Session } from './session'
import type { SessionStore } from './session-store'
import { kCause, kIp, kResume, kSession } from '../core/symbols'

// What a kept message costs beyond its bytes (its record and its slot in the outbox), so that the instance's
// budget also bounds a flood of tiny messages.
const MESSAGE_OVERHEAD = 64

/**
 * The sessions of one Fastify instance: begun or resumed once a socket of a
 * route with sessions has been accepted, kept `ttlMs` after its socket closes
 * (on the shared scheduler, so no timer per session), ended on expiry,
 * overflow, or to make room under the instance's limits.
 */
export class SessionRegistry implements Sessions {
  private readonly nextId = createIdGenerator()
  private readonly nextSecret = createIdGenerator()
  // Sessions whose client is away, longest away first: the first to go when a limit needs room.
  private readonly away = new Set<Session>()
  // Every live session, by the address of its latest connection.
  private readonly perIp = new Map<string, Set<Session>>()

  constructor (
    private readonly stats: Counters,
    private readonly scheduler: Schedule<ReliableSocket | PendingConnection | Session>,
    private readonly store: SessionStore,
    private readonly limits: SessionLimitSettings,
    // Whatever else a session holds (its topics) ends with it.
    private readonly onEnd: (session: Session) => void
  ) {}

  get (id: string): Session | undefined {
    return this.store.get(id)
  }

  /**
   * Runs once everything that can refuse the connection has accepted it, and
   * before the application's handler, so the welcome and every message
   * replayed reach the client before anything the handler sends. A resume
   * request that does not fit its session in every respect begins a new
   * session and leaves that one as it was. False when there is no room for a
   * new session: the socket is then closed with 1013.
   */
  open (socket: ReliableSocket, route: SessionRoute, request: FastifyRequest, owner: string | null): boolean {
    // Read once at the upgrade, while the TCP socket surely still has a peer address.
    const ip = socket[kIp]
    const resume = (request.raw as { [kResume]?: ResumeRequest })[kResume]
    if (resume !== undefined) {
      const session = this.store.get(resume.session)
      if (session?.mayResume(route, request.url, owner, resume.secret, resume.received) === true) {
        this.takeOver(session)
        this.moveTo(session, ip)
        session.resumed = true
        session.attach(socket, resume.received, this.nextSecret(), resume.secret)
        this.stats.sessions.resumed++
        this.stats.sessions.replayed += session.unacknowledged
        return true
      }
      this.stats.sessions.resumeRefused++
    }
    if (!this.makeRoom(ip)) {
      this.stats.sessions.rejected++
      socket[kCause] = 'session'
      socket.close(1013, 'Too many sessions')
      return false
    }
    const session = new Session(this.nextId(), route, this, request.url, owner, ip)
    this.store.set(session.id, session)
    this.ipSessions(ip).add(session)
    this.stats.sessions.active++
    session.attach(socket, 0, this.nextSecret(), '')
    return true
  }

  /** The session's socket closed: it waits `ttlMs` for the client to come back. */
  detach (session: Session, now: number): void {
    session.socket = null
    this.away.add(session)
    this.scheduler.add(session, now + session.route.resume.ttlMs)
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
    this.store.delete(session.id)
    this.stats.sessions.active--
    this.scheduler.remove(session)
    this.away.delete(session)
    this.leaveIp(session)
    const { bytes, count } = session.clear()
    this.release(bytes, count)
    if (session.socket !== null) session.socket[kSession] = null
    this.onEnd(session)
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
