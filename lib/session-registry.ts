import type { IncomingMessage } from 'node:http'
import type { Route } from './context'
import type { PendingConnection } from './handshake-guard'
import { createIdGenerator } from './ids'
import type { ResumeSettings } from './options'
import type { Scheduler } from './scheduler'
import type { StatsCollector } from './stats'
import { SESSION_OVERFLOW_CODE } from './protocol'
import type { ReliableSocket } from './reliable-socket'
import { Session } from './session'
import type { SessionStore } from './session-store'
import { kCause, kResume, kSession } from './symbols'

export type SessionRoute = Route & { readonly resume: ResumeSettings }
export interface ResumeRequest { session: string, received: number }

/**
 * The sessions of one Fastify instance: begun or resumed when a socket of a
 * route with sessions opens, kept `ttlMs` after its socket closes (on the
 * shared scheduler, so no timer per session), ended on expiry or overflow.
 */
export class SessionRegistry {
  private readonly nextId = createIdGenerator()

  constructor (
    private readonly stats: StatsCollector,
    private readonly scheduler: Scheduler<ReliableSocket | PendingConnection | Session>,
    private readonly store: SessionStore
  ) {}

  get (id: string): Session | undefined {
    return this.store.get(id)
  }

  /**
   * Runs before the application's handler, so the welcome and every message
   * replayed reach the client before anything the handler sends.
   */
  open (socket: ReliableSocket, route: SessionRoute, request: IncomingMessage): void {
    const resume = (request as { [kResume]?: ResumeRequest })[kResume]
    if (resume !== undefined) {
      const session = this.store.get(resume.session)
      // A session belongs to its route: another route's client cannot take it over.
      if (session !== undefined && session.route === route) {
        this.takeOver(session)
        session.resumed = true
        if (session.attach(socket, resume.received)) {
          this.stats.sessions.resumed++
          return
        }
        // The client says it has messages the session never sent: whatever it is resuming, it is not this.
        this.end(session)
      }
    }
    const session = new Session(this.nextId(), route, this)
    this.store.set(session.id, session)
    this.stats.sessions.active++
    session.attach(socket, 0)
  }

  /** The session's socket closed: it waits `ttlMs` for the client to come back. */
  detach (session: Session, now: number): void {
    session.socket = null
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
    const socket = session.socket
    this.end(session)
    if (socket !== null) {
      socket[kCause] = 'session'
      socket.close(SESSION_OVERFLOW_CODE, 'Session buffer full')
    }
  }

  replayed (count: number): void {
    this.stats.sessions.replayed += count
  }

  private end (session: Session): void {
    session.ended = true
    this.store.delete(session.id)
    this.stats.sessions.active--
    this.scheduler.remove(session)
    if (session.socket !== null) session.socket[kSession] = null
  }

  /**
   * A client resumes before the server noticed its old connection die (the
   * usual order: the client finds out first). The old socket is cut loose
   * and ended at once, so nothing more it delivers counts.
   */
  private takeOver (session: Session): void {
    const old = session.socket
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
