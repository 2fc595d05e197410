// A session store that answers with promises: the memory store's answers, given when the store is called (its state
// changes then, as a remote store's would on arrival) and delivered later, or refused.
import type fastifyReliableWs = require('../../types/index')
import { MemorySessionStore } from '../../lib/sessions/session-store'
import { sleep } from './helpers'

type SessionStore = fastifyReliableWs.SessionStore
type Method = keyof SessionStore

export class AsyncStore implements SessionStore {
  readonly memory = new MemorySessionStore()
  /** Milliseconds before each method's answer arrives. */
  readonly delays: Partial<Record<Method, number>> = {}
  /** Methods that reject (after their delay), leaving the records as they were. */
  readonly failing = new Set<Method>()
  /** Every call, in order. */
  readonly calls: Method[] = []

  create (record: fastifyReliableWs.SessionRecord): Promise<void> {
    return this.answer('create', () => this.memory.create(record))
  }

  claim (request: fastifyReliableWs.ClaimRequest): Promise<fastifyReliableWs.ClaimResult> {
    return this.answer('claim', () => this.memory.claim(request))
  }

  write (id: string, fence: number, changes: fastifyReliableWs.RecordChanges, ttlMs: number): Promise<fastifyReliableWs.WriteResult> {
    return this.answer('write', () => this.memory.write(id, fence, changes, ttlMs))
  }

  release (id: string, fence: number, ttlMs: number, handover?: fastifyReliableWs.SessionHandover): Promise<fastifyReliableWs.WriteResult> {
    return this.answer('release', () => this.memory.release(id, fence, ttlMs, handover))
  }

  end (id: string, fence: number): Promise<fastifyReliableWs.WriteResult> {
    return this.answer('end', () => this.memory.end(id, fence))
  }

  read (id: string): Promise<fastifyReliableWs.SessionRecord | null> {
    return this.answer('read', () => this.memory.read(id))
  }

  listen (instance: string, notices: fastifyReliableWs.StoreNotices): Promise<() => void> {
    return this.answer('listen', () => this.memory.listen(instance, notices))
  }

  ask (instance: string, id: string, fence: number): Promise<boolean> {
    return this.answer('ask', () => this.memory.ask(instance, id, fence))
  }

  post (id: string, message: fastifyReliableWs.SessionMessage, maxMessages: number, maxBytes: number): Promise<fastifyReliableWs.PostResult> {
    return this.answer('post', () => this.memory.post(id, message, maxMessages, maxBytes))
  }

  take (id: string, fence: number): Promise<fastifyReliableWs.SessionMessage[] | 'fenced' | 'lost'> {
    return this.answer('take', () => this.memory.take(id, fence))
  }

  keep (id: string, fence: number, ttlMs: number, kept: fastifyReliableWs.SessionHandover): Promise<fastifyReliableWs.WriteResult> {
    return this.answer('keep', () => this.memory.keep(id, fence, ttlMs, kept))
  }

  private async answer<T> (method: Method, call: () => T): Promise<T> {
    this.calls.push(method)
    const failing = this.failing.has(method)
    const value = failing ? undefined : call()
    await sleep(this.delays[method] ?? 0)
    if (failing) throw new Error(`store down (${method})`)
    return value as T
  }
}
