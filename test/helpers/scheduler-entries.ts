import { Scheduler } from '../../lib/timing/scheduler'
import { kWheelPos, kWheelTick } from '../../lib/core/symbols'

/** A scheduler entry that notes when it ran. */
export interface Item { [kWheelTick]: number, [kWheelPos]: number, name: string, dueAt: number, firedAt: number }

export function item (name: string, dueAt: number): Item {
  return { [kWheelTick]: -1, [kWheelPos]: -1, name, dueAt, firedAt: -1 }
}

/** A scheduler for the given periods whose entries, as they run, are collected in `fired`. */
export function newScheduler (...periodsMs: number[]): { scheduler: Scheduler<Item>, fired: Item[] } {
  const fired: Item[] = []
  const scheduler = new Scheduler<Item>((entry, now) => {
    entry.firedAt = now
    fired.push(entry)
  })
  for (const ms of periodsMs) scheduler.usePeriod(ms)
  return { scheduler, fired }
}
