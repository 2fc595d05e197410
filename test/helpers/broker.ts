// What the Redis broker tests share: a broker on a real redis-server, what it told its instance, and waiting for it.
import type { FastifyBaseLogger } from 'fastify'
import type { BrokerEvents, BrokerState, Delivery, GapReason } from '../../lib/topics/broker'
import { createRedisBroker } from '../../lib/topics/redis-broker'
import type { RedisBroker } from '../../lib/topics/redis-broker'
import { DEFAULTS } from '../../lib/core/options'
import type { TopicSettings } from '../../lib/core/options'
import type { RedisOption } from '../../lib/redis/redis-connection'
import { waitFor } from './helpers'

export type Test = { teardown: (fn: () => unknown) => void }

/** What one broker told its instance. */
export class Recorder implements BrokerEvents {
  readonly deliveries: Delivery[] = []
  readonly gaps: Array<[string, GapReason]> = []
  readonly states: BrokerState[] = []
  readonly warnings: string[] = []
  readonly log = {
    warn: (_: unknown, line: string) => { this.warnings.push(line) },
    info: () => {}
  } as unknown as FastifyBaseLogger

  deliver (message: Delivery): void { this.deliveries.push(message) }
  gap (topic: string, reason: GapReason): void { this.gaps.push([topic, reason]) }
  state (state: BrokerState): void { this.states.push(state) }

  of (topic: string): Delivery[] {
    return this.deliveries.filter((delivery) => delivery.topic === topic)
  }

  /**
   * How many times the broker went down, when its states read up, down, up, … and end up. The probe may miss its
   * 250 ms on a loaded machine just after Redis comes back, and rightly reports that as one more down and up: a test
   * of an outage asks for at least the downs it caused, not for a machine quiet enough to cause no other.
   */
  downsWhenUp (): number {
    const alternate = this.states.every((state, i) => state === (i % 2 === 0 ? 'up' : 'down'))
    return alternate && this.states.length % 2 === 1 ? (this.states.length - 1) / 2 : -1
  }
}

export async function until (what: string, condition: () => boolean, ms = 10_000): Promise<void> {
  await waitFor(condition, ms, what)
}

/** A broker on `option` with a 250 ms probe, closed at the end of the test. `raw` reaches its private fields. */
export async function broker (t: Test, option: RedisOption, settings: Partial<TopicSettings> = {}): Promise<{ broker: RedisBroker, seen: Recorder, raw: any }> {
  const seen = new Recorder()
  const broker = createRedisBroker(option, { ...DEFAULTS.topics, probeIntervalMs: 250, ...settings }, seen.log)
  t.teardown(() => broker.close())
  await broker.start(seen)
  return { broker, seen, raw: broker as any }
}
