// Instances of an application with sessions on one shared session store (one store object shared by instances in one
// process, or Redis), for the tests of what moves between them.
import type WebSocket from 'ws'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import type fastifyReliableWs = require('../../types/index')
import { RedisSessionStore } from '../../lib/sessions/redis-session-store'
import { MemorySessionStore } from '../../lib/sessions/session-store'
import { sleep, start } from './helpers'
import type { Options } from './helpers'
import { needs, REDIS } from './programs'
import { RedisServer } from './redis'

export type Teardown = { teardown: (fn: () => unknown) => void }
type Session = fastifyReliableWs.Session
type SessionStore = fastifyReliableWs.SessionStore

export interface Instance {
  app: FastifyInstance
  port: number
  url: (path: string) => string
  /** What the application received, in order. */
  received: string[]
  /** The session of the latest connection its route handled, and that connection. */
  latest: Session | null
  socket: (WebSocket & fastifyReliableWs.SocketExtensions) | null
  /** Whether the handler saw the latest one resumed. */
  resumed: boolean[]
}

export const QUICK_CLOSE = { reconnectWindowMs: 20, timeoutMs: 2000 }

/** An instance of the application on the store: a route with sessions that records what it receives. */
export async function instance (t: Teardown, store: fastifyReliableWs.SessionStore, options: Options = {}, resume: object = {},
  onSocket: (socket: WebSocket & fastifyReliableWs.SocketExtensions) => void = () => {}, serverOptions: FastifyServerOptions = {}): Promise<Instance> {
  const self: Partial<Instance> = { received: [], latest: null, socket: null, resumed: [] }
  const server = await start({ heartbeat: false, logging: { connections: false }, sessionStore: store, shutdown: QUICK_CLOSE, ...options }, (app) => {
    app.get('/s', { websocket: true, config: { reliable: { resume: { ttlMs: 60_000, ...resume } } } }, (socket) => {
      self.latest = socket.session
      self.socket = socket
      self.resumed!.push(socket.session!.resumed)
      socket.on('message', (data: Buffer) => self.received!.push(data.toString()))
      onSocket(socket)
    })
  }, serverOptions)
  t.teardown(() => server.app.close())
  return Object.assign(self, server) as Instance
}

/** Every call passed on to the store underneath; the stores of the tests below change one method each. */
export class Through implements SessionStore {
  constructor (private readonly base: SessionStore) {}
  create (...args: Parameters<SessionStore['create']>): ReturnType<SessionStore['create']> { return this.base.create(...args) }
  claim (...args: Parameters<SessionStore['claim']>): ReturnType<SessionStore['claim']> { return this.base.claim(...args) }
  write (...args: Parameters<SessionStore['write']>): ReturnType<SessionStore['write']> { return this.base.write(...args) }
  release (...args: Parameters<SessionStore['release']>): ReturnType<SessionStore['release']> { return this.base.release(...args) }
  end (...args: Parameters<SessionStore['end']>): ReturnType<SessionStore['end']> { return this.base.end(...args) }
  read (...args: Parameters<SessionStore['read']>): ReturnType<SessionStore['read']> { return this.base.read(...args) }
  listen (...args: Parameters<NonNullable<SessionStore['listen']>>): ReturnType<NonNullable<SessionStore['listen']>> { return this.base.listen!(...args) }
  ask (...args: Parameters<NonNullable<SessionStore['ask']>>): ReturnType<NonNullable<SessionStore['ask']>> { return this.base.ask!(...args) }
  post (...args: Parameters<NonNullable<SessionStore['post']>>): ReturnType<NonNullable<SessionStore['post']>> { return this.base.post!(...args) }
  take (...args: Parameters<NonNullable<SessionStore['take']>>): ReturnType<NonNullable<SessionStore['take']>> { return this.base.take!(...args) }
  keep (...args: Parameters<NonNullable<SessionStore['keep']>>): ReturnType<NonNullable<SessionStore['keep']>> { return this.base.keep!(...args) }
}

/** Where the instances of a test keep their sessions: `store()` for each instance, all on the same records. */
export interface Shared {
  store: () => SessionStore
  /** Until the session's record is gone. */
  untilEnded: (session: string) => Promise<void>
  /** Deletes the session's record behind its holder's back, as a flush or an eviction would. */
  forget: (session: string) => Promise<void>
}

export async function until (what: string, condition: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 3000
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

export const KINDS: Array<{ name: string, needs: { skip?: string }, shared: (t: Teardown) => Promise<Shared> }> = [
  {
    name: 'one store object shared by the instances',
    needs: {},
    async shared () {
      const memory = new MemorySessionStore()
      return {
        store: () => memory,
        untilEnded: async (session) => await until('the record ended', async () => memory.read(session) === null),
        forget: async (session) => { memory.end(session, memory.read(session)!.fence) }
      }
    }
  },
  {
    name: 'Redis',
    needs: needs(REDIS),
    async shared (t) {
      const redis = await RedisServer.start(t)
      return {
        store: () => new RedisSessionStore(redis.client()),
        untilEnded: async (session) => await until('the record ended', async () => (await redis.client().exists(`reliable-ws:{s:${session}}`)) === 0),
        forget: async (session) => { await redis.client().del(`reliable-ws:{s:${session}}`) }
      }
    }
  }
]
