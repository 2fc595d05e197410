// What carries published messages between the instances of an application: in this process alone (memory-broker.ts)
// or through Redis (redis-broker.ts). The topic hub (topic-hub.ts) is its one user.
import type { Delivery } from '../core/shapes'

export type { Delivery }

/** Where the broker stands: `up` takes publishes and delivers; `down` refuses publishes and delivers nothing. */
export type BrokerState = 'up' | 'connecting' | 'down'

/** What a topic's history holds after a place in it (Broker.history). */
export interface History {
  /** The topic's epoch now; `''` when it has no history. */
  readonly epoch: string
  /** Its last offset now. */
  readonly top: number
  readonly messages: Delivery[]
}

/** Why messages of a topic can no longer reach this instance in order. */
export type GapReason = 'trimmed' | 'epoch' | 'backlog'

/** What the broker tells the instance; set once by `start`. */
export interface BrokerEvents {
  /** A message of a topic this instance listens to: per topic in offset order, each once. */
  deliver (message: Delivery): void
  /**
   * Messages of `topic` were published that this instance will never get (its history was trimmed past them,
   * or its epoch changed): whatever promised them to a client must end explicitly.
   */
  gap (topic: string, reason: GapReason): void
  /** The broker's state changed. */
  state (state: BrokerState): void
}

export interface Broker {
  readonly state: BrokerState
  /** Connects; resolves once the broker can take publishes (or rejects with the cause). */
  start (events: BrokerEvents): Promise<void>
  /**
   * Resolves once the broker holds the message and it is on its way to every instance that listens to its topic;
   * rejects with FST_RELIABLE_WS_BROKER_UNAVAILABLE, within a bounded time, when it cannot take it.
   */
  publish (topic: string, data: Buffer | string, binary: boolean): Promise<{ offset: number, epoch: string }>
  /** This instance has its first local subscriber of `topic`: deliver its messages from now on. */
  listen (topic: string): void
  /** This instance's last local subscriber of `topic` has gone. */
  unlisten (topic: string): void
  /**
   * The last message of `topic`, a topic it listens to, handed to this instance (or passed over when listening
   * began); null while it cannot tell yet (its position in the topic is being read). Epoch `''`: no history.
   */
  position (topic: string): { epoch: string, offset: number } | null
  /**
   * Up to `count` messages of `topic`, a topic it listens to, after `offset`, oldest first, from its history, with the
   * topic's epoch and its last offset now; a broker without history (in memory) has none to give. Rejects when it
   * cannot be read.
   */
  history (topic: string, offset: number, count: number): Promise<History>
  /** How far behind the broker delivery runs, in ms (0 when it cannot tell). */
  readonly lagMs: number
  close (): Promise<void>
}
