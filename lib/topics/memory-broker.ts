import { randomUUID } from 'node:crypto'
import type { Broker, BrokerEvents, BrokerState } from './broker'

interface History { offset: number, readonly epoch: string }

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
  private readonly topics = new Map<string, History>()

  async start (events: BrokerEvents): Promise<void> {
    this.events = events
  }

  async publish (topic: string, data: Buffer | string, binary: boolean): Promise<{ offset: number, epoch: string }> {
    const history = this.topics.get(topic)
    if (history === undefined) return UNHEARD
    const offset = ++history.offset
    this.events!.deliver({ topic, offset, epoch: history.epoch, data, binary })
    return { offset, epoch: history.epoch }
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
