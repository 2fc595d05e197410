import { randomUUID } from 'node:crypto'
import type { Broker, BrokerEvents, BrokerState, History } from './broker'

interface Numbering { offset: number, readonly epoch: string }

// What a publish to a topic nobody in this process listens to gets: nothing holds it.
const UNHEARD = Object.freeze({ offset: 0, epoch: '' })

/**
 * The broker of a single process: a publish is delivered at once, in the caller's turn, to the topic hub of the
 * same instance. A topic is numbered only while it is listened to; it starts again, under a new epoch, if it is
 * listened to again. Always up: nothing can be lost between publish and delivery.
 */
export class MemoryBroker implements Broker {
  readonly state: BrokerState = 'up'
  readonly lagMs = 0
  private events: BrokerEvents | null = null
  private readonly topics = new Map<string, Numbering>()

  async start (events: BrokerEvents): Promise<void> {
    this.events = events
  }

  async publish (topic: string, data: Buffer | string, binary: boolean): Promise<{ offset: number, epoch: string }> {
    const numbering = this.topics.get(topic)
    if (numbering === undefined) return UNHEARD
    const offset = ++numbering.offset
    this.events!.deliver({ topic, offset, epoch: numbering.epoch, data, binary })
    return { offset, epoch: numbering.epoch }
  }

  // Known from the moment it listens (the hub asks only of a topic it listens to).
  position (topic: string): { epoch: string, offset: number } {
    const { epoch, offset } = this.topics.get(topic)!
    return { epoch, offset }
  }

  // Nothing is kept: only a place at the topic's last offset, in its epoch, is missing nothing.
  async history (topic: string): Promise<History> {
    const { epoch, offset } = this.topics.get(topic)!
    return { epoch, top: offset, messages: [] }
  }

  listen (topic: string): void {
    this.topics.set(topic, { offset: 0, epoch: randomUUID() })
  }

  unlisten (topic: string): void {
    this.topics.delete(topic)
  }

  async close (): Promise<void> {
    this.topics.clear()
  }
}
