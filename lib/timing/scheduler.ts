// Timing: the one timing wheel of an instance, and what sockets wait for on it (heartbeat, idle and fragment timeouts).
import { performance } from 'node:perf_hooks'
import type { Schedule } from '../core/shapes'
import { kWheelPos, kWheelTick } from '../core/symbols'

interface Entry {
  [kWheelTick]: number
  [kWheelPos]: number
}

// Ticks per shortest period: fine enough that each tick handles a small slice
// of the connections (10,000 sockets on a 1 s interval → ~50 per 5 ms tick),
// coarse enough that an idle server wakes rarely.
const TICKS_PER_PERIOD = 200
// Batch size of first pings. Their pongs come back together and are read in one turn of the event loop: at 128
// that turn set the loop's p99 delay, above a timer per connection's; at 32 it is below it, for the same CPU
// (bench/notes.md, "Figures behind lib/'s constants").
const PACED_BATCH = 32
const MAX_TICK_MS = 1000
// A power of two, so a tick maps to its slot with a mask.
const SLOTS = 512
const MASK = SLOTS - 1
// The longest delay setTimeout honours.
const MAX_TIMER_MS = 2 ** 31 - 1

/**
 * One timer for every connection of a Fastify instance: a hashed timing wheel.
 * Each entry due within one revolution sits in the slot of its tick; the single
 * timer is armed only for the next non-empty slot, so the cost is proportional
 * to the work due, never to the number of idle connections, and a sweep never
 * has to walk all sockets at once.
 *
 * Entries due further ahead (a 30 s route beside a 1 s one) wait in an
 * overflow list that is looked at about once per revolution and moved into
 * the wheel when they come within reach: in the wheel they would wake the
 * timer every revolution for nothing.
 */
export class Scheduler<T extends Entry> implements Schedule<T> {
  private readonly slots: T[][] = Array.from({ length: SLOTS }, () => [])
  private readonly overflow: T[] = []
  private readonly origin = performance.now()
  private tickMs = MAX_TICK_MS
  private cursor = 0
  private size = 0
  private overflowCheck = Infinity
  private timer: NodeJS.Timeout | null = null
  private armedTick = Infinity
  private sweeping = false
  private pacedTick = -1
  private pacedCount = 0
  private readonly run = (): void => this.advance()

  constructor (private readonly onDue: (entry: T, now: number) => void) {}

  /** Lets the shortest period in use set the tick; routes are all declared before the first socket is scheduled. */
  usePeriod (ms: number): void {
    const tickMs = Math.min(MAX_TICK_MS, Math.max(1, Math.floor(ms / TICKS_PER_PERIOD)))
    if (tickMs < this.tickMs) this.tickMs = tickMs
  }

  /** Schedules `entry` (not currently scheduled) to run at `dueAt` (a performance.now() time). */
  add (entry: T, dueAt: number): void {
    // An empty wheel has nothing to catch up on.
    if (this.size === 0) this.cursor = Math.floor((performance.now() - this.origin) / this.tickMs)
    const tick = Math.max(Math.ceil((dueAt - this.origin) / this.tickMs), this.cursor + 1)
    entry[kWheelTick] = tick
    this.size++
    let wake = tick
    if (tick - this.cursor > SLOTS) {
      // Negative positions mark the overflow list.
      entry[kWheelPos] = ~this.overflow.length
      this.overflow.push(entry)
      if (tick - SLOTS < this.overflowCheck) this.overflowCheck = tick - SLOTS
      wake = this.overflowCheck
    } else {
      const slot = this.slots[tick & MASK]
      entry[kWheelPos] = slot.length
      slot.push(entry)
    }
    // A sweep arms the timer once, when it is done.
    if (wake < this.armedTick && !this.sweeping) this.arm(wake)
  }

  /**
   * When a new periodic entry (a socket's first ping), due at `dueAt`, should
   * be scheduled instead. New entries are gathered into batches of up to
   * PACED_BATCH per tick: one joins the batch being filled unless that batch
   * is due more than half-way from `now` to `dueAt` before it (or after it). Waking once
   * per batch, and reading the replies of a batch together, costs far less
   * than waking for each entry; a batch is small enough not to hold up the
   * event loop; a burst of connections ends up spread over consecutive ticks
   * in arrival order. Periodic entries keep their phase, so a batch stays
   * together.
   */
  pace (now: number, dueAt: number): number {
    const due = Math.ceil((dueAt - this.origin) / this.tickMs)
    const halfway = (dueAt - now) / 2
    // A batch due that long after this entry was opened by a route with a longer period: joining it would make
    // this entry late by up to the other period (a burst spilling into later ticks is only a few ticks late).
    if ((this.pacedTick - due) * this.tickMs > halfway) {
      this.pacedTick = due
      this.pacedCount = 0
    } else if (this.pacedCount === PACED_BATCH || (due - this.pacedTick) * this.tickMs > halfway) {
      this.pacedTick = Math.max(due, this.pacedTick + 1)
      this.pacedCount = 0
    }
    this.pacedCount++
    return this.origin + this.pacedTick * this.tickMs
  }

  remove (entry: T): void {
    const tick = entry[kWheelTick]
    if (tick === -1) return
    const pos = entry[kWheelPos]
    if (pos < 0) {
      takeOut(this.overflow, entry, ~pos, pos)
      if (this.overflow.length === 0) this.overflowCheck = Infinity
    } else {
      takeOut(this.slots[tick & MASK], entry, pos, pos)
    }
    entry[kWheelTick] = -1
    if (--this.size === 0) this.disarm()
  }

  /** Closed sockets have removed themselves by now; this only drops the timer. */
  stop (): void {
    this.disarm()
  }

  private advance (): void {
    this.timer = null
    this.armedTick = Infinity
    const now = performance.now()
    const target = Math.floor((now - this.origin) / this.tickMs)
    if (target >= this.overflowCheck) this.bringIntoReach(target)
    // After a long stall every slot is visited once; each entry's own tick decides if it is due.
    const first = this.cursor + 1
    const last = Math.min(target, this.cursor + SLOTS)
    // Moved first, so what onDue schedules lands after this tick.
    this.cursor = target
    this.sweeping = true
    for (let tick = first; tick <= last; tick++) {
      const slot = this.slots[tick & MASK]
      // Backwards, so the swap-removal below only moves entries already visited
      // or appended by onDue (which are due in a later tick).
      for (let i = slot.length - 1; i >= 0; i--) {
        const entry = slot[i]
        if (entry[kWheelTick] > target) continue
        this.remove(entry)
        this.onDue(entry, now)
      }
    }
    this.sweeping = false
    if (this.size === 0) return
    let next = target + 1
    const end = Math.min(target + SLOTS, this.overflowCheck)
    while (next < end && this.slots[next & MASK].length === 0) next++
    // Every slot empty (this last one is the slot just swept): only far entries remain, and nothing is due before
    // they come within reach. Arming a revolution on would wake once per revolution for nothing.
    if (next === target + SLOTS && this.slots[next & MASK].length === 0) next = this.overflowCheck
    this.arm(next)
  }

  /** Moves the overflow entries due within one revolution of `target` into the wheel. */
  private bringIntoReach (target: number): void {
    const overflow = this.overflow
    let earliest = Infinity
    for (let i = overflow.length - 1; i >= 0; i--) {
      const entry = overflow[i]
      const tick = entry[kWheelTick]
      if (tick - target > SLOTS) {
        if (tick < earliest) earliest = tick
        continue
      }
      takeOut(overflow, entry, i, ~i)
      const slot = this.slots[tick & MASK]
      entry[kWheelPos] = slot.length
      slot.push(entry)
    }
    // Never sooner than half a revolution on, so the list is walked about twice per revolution at most.
    this.overflowCheck = overflow.length === 0 ? Infinity : Math.max(earliest - SLOTS, target + SLOTS / 2)
  }

  private arm (tick: number): void {
    // Timers count whole milliseconds from the event loop's cached clock: rounding
    // up keeps a wake-up from landing just before its tick, finding nothing due.
    // Past 2³¹−1 ms Node fires a timer after 1 ms instead (a far deadline alone would then wake every millisecond):
    // waking once in that long, finding nothing due and sleeping again is harmless.
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, Math.ceil(this.origin + tick * this.tickMs - performance.now()) + 1))
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = setTimeout(this.run, delay)
    this.timer.unref()
    this.armedTick = tick
  }

  private disarm (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    this.armedTick = Infinity
  }
}

/** Swap-removes `entry` from index `index` of `list`; the entry moved into its place takes `pos` as its position. */
function takeOut<T extends Entry> (list: T[], entry: T, index: number, pos: number): void {
  const last = list.pop() as T
  if (last !== entry) {
    list[index] = last
    last[kWheelPos] = pos
  }
}
