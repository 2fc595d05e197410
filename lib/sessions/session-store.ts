import type fastifyReliableWs = require('../../types/index')
import type { Session } from './session'

/**
 * Where sessions are kept between a client's connections (the public
 * `SessionStore`, holding the plugin's own sessions). The plugin asks for a
 * session only when a client resumes, and tells the store when one begins and
 * ends; expiry is the plugin's. The default keeps them in this process.
 */
export type SessionStore = fastifyReliableWs.SessionStore<Session>

export class MemorySessionStore implements SessionStore {
  private readonly sessions = new Map<string, Session>()

  get (id: string): Session | undefined {
    return this.sessions.get(id)
  }

  set (id: string, session: Session): void {
    this.sessions.set(id, session)
  }

  delete (id: string): void {
    this.sessions.delete(id)
  }
}
