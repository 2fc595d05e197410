// What carries published messages between the instances of an application: in this process alone (memory-broker.ts)
// or through Redis (redis-broker.ts). The topic hub (topic-hub.ts) is its one user.

/** Where the broker stands: `up` takes publishes and delivers; `down` refuses publishes and delivers nothing. */
export type BrokerState = 'up' | 'connecting' | 'down'

/** A published message as the broker hands it to an instance. */
export interface Delivery {
  readonly topic: string
  /** The message's place in its topic: 1, 2, 3… with no gaps within one epoch. */
  readonly offset: number
  /** Changes when the topic's history was lost (a broker restarted or flushed): offsets then start again. */
  readonly epoch: string
  readonly data: Buffer | string
  readonly binary: boolean
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
  /** How far behind the broker delivery runs, in ms (0 when it cannot tell). */
  readonly lagMs: number
  close (): Promise<void>
}
