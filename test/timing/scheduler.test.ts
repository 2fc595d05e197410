import { createHook } from 'node:async_hooks'
import { performance } from 'node:perf_hooks'
import t from 'tap'
import { Scheduler } from '../../lib/timing/scheduler'
import { item, newScheduler } from '../helpers/scheduler-entries'
import type { Item } from '../helpers/scheduler-entries'
import { loopDelay, sleep, waitFor } from '../helpers/helpers'

// The scheduler on its own: the heartbeat tests cover it with real sockets,
// these pin down its timer use, which sockets cannot show.

/** Counts the timers created while `fn` runs and for `ms` after. */
async function timersCreatedDuring (ms: number, fn: () => void): Promise<number> {
  let created = 0
  const hook = createHook({ init (_id, type) { if (type === 'Timeout') created++ } })
  hook.enable()
  try {
    fn()
    await sleep(ms)
  } finally {
    hook.disable()
  }
  // sleep() itself creates one.
  return created - 1
}

t.test('entries run once each, never before they are due, in the order they are due', async (t) => {
  // 100 ms → a 1 ms tick (the finest there is), 512 ms per revolution.
  const { scheduler, fired } = newScheduler(100)
  t.teardown(() => scheduler.stop())
  const lag = loopDelay()
  const now = performance.now()
  const items = [300, 20, 150, 60, 900, 40].map((ms) => item(`${ms}`, now + ms))
  for (const entry of items) scheduler.add(entry, entry.dueAt)
  await waitFor(() => fired.length === items.length, 3000, 'every entry')
  t.same(fired.map((entry) => entry.name), ['20', '40', '60', '150', '300', '900'])
  const held = lag()
  for (const entry of fired) {
    const late = entry.firedAt - entry.dueAt
    t.ok(late >= 0 && late < 200 + held, `${entry.name} ms: ran ${late.toFixed(1)} ms after it was due`)
  }
  await sleep(50)
  t.equal(fired.length, items.length, 'nothing runs twice')
})

t.test('a removed entry never runs, wherever it waited', async (t) => {
  const { scheduler, fired } = newScheduler(100)
  t.teardown(() => scheduler.stop())
  const now = performance.now()
  const near = [item('near-kept', now + 30), item('near-removed', now + 30), item('near-removed-2', now + 30)]
  const far = [item('far-removed', now + 700), item('far-kept', now + 700), item('far-removed-2', now + 700)]
  for (const entry of [...near, ...far]) scheduler.add(entry, entry.dueAt)
  scheduler.remove(near[1])
  scheduler.remove(far[0])
  scheduler.remove(far[2])
  scheduler.remove(near[2])
  scheduler.remove(near[2])
  await waitFor(() => fired.length === 2, 3000, 'the kept entries')
  await sleep(50)
  t.same(fired.map((entry) => entry.name), ['near-kept', 'far-kept'])
})

t.test('entries due beyond one revolution cost no wake-ups until they come within reach', async (t) => {
  // A 20 ms heartbeat keeps the wheel turning, as a fast route does beside a slow one.
  const PERIOD = 20
  let fastRuns = 0
  const fired: Item[] = []
  const scheduler: Scheduler<Item> = new Scheduler<Item>((entry, now) => {
    if (entry.name !== 'fast') return fired.push(entry)
    fastRuns++
    scheduler.add(entry, now + PERIOD)
  })
  scheduler.usePeriod(PERIOD)
  t.teardown(() => scheduler.stop())
  let items: Item[] = []
  const fast = item('fast', 0)
  // 1,000 entries spread over 60–90 s: in the wheel they would fill all 512 slots and wake the timer every tick.
  const timers = await timersCreatedDuring(1200, () => {
    const now = performance.now()
    scheduler.add(fast, now + PERIOD)
    items = Array.from({ length: 1000 }, (_, i) => item(`${i}`, now + 60_000 + i * 30))
    for (const entry of items) scheduler.add(entry, entry.dueAt)
  })
  t.equal(fired.length, 0)
  // 60 runs on an idle machine; a loaded one runs it late, and less often. Time, not runs, makes the revolutions.
  t.ok(fastRuns >= 10, `the fast entry ran ${fastRuns} times`)
  t.ok(timers <= fastRuns + 6, `${timers} timers armed for ${fastRuns} runs, over more than two revolutions`)
  for (const entry of items) scheduler.remove(entry)
  scheduler.remove(fast)
})

t.test('an entry brought in from overflow runs on time, and the wheel empties its timer', async (t) => {
  const { scheduler, fired } = newScheduler(100)
  const lag = loopDelay()
  const now = performance.now()
  const entries = [item('soon', now + 100), item('later', now + 1300), item('latest', now + 2100)]
  for (const entry of entries) scheduler.add(entry, entry.dueAt)
  await waitFor(() => fired.length === 3, 4000, 'every entry')
  t.same(fired.map((entry) => entry.name), ['soon', 'later', 'latest'])
  const held = lag()
  for (const entry of fired) {
    const late = entry.firedAt - entry.dueAt
    t.ok(late >= 0 && late < 200 + held, `${entry.name}: ran ${late.toFixed(1)} ms after it was due`)
  }
  const timers = await timersCreatedDuring(100, () => {})
  t.equal(timers, 0, 'an empty wheel arms nothing')
})

t.test('pace: a burst is cut into batches of 32 on consecutive ticks, in arrival order; a later arrival keeps its own phase', async (t) => {
  const { scheduler } = newScheduler(1000) // 5 ms ticks
  const now = performance.now()
  const times = Array.from({ length: 76 }, () => scheduler.pace(now, now + 1000))
  const batches = [...new Set(times)]
  t.same(batches.map((at) => times.filter((time) => time === at).length), [32, 32, 12], 'three batches')
  t.ok(batches[0] >= now + 1000 && batches[0] < now + 1005, 'the first one interval on')
  // A batch's time is the scheduler's origin plus its tick × 5 ms, in floating point: two consecutive ticks can
  // differ by 5 ms and the last bit, so they are compared in whole ticks.
  t.same(batches.map((at) => Math.round((at - batches[0]) / 5)), [0, 1, 2], 'on consecutive ticks')
  t.ok(times.every((time, i) => i === 0 || time >= times[i - 1]), 'in arrival order')
  // Due 0.4 s after the open batch: joins it (its first ping comes early, not late).
  t.equal(scheduler.pace(now + 400, now + 1400), batches[2])
  // Due 0.6 s after it, more than half an interval: a batch of its own, at its own time.
  const own = scheduler.pace(now + 600, now + 1600)
  t.ok(own >= now + 1600 && own < now + 1605, 'its own phase')
})

t.test('pace: a batch due after an entry (filled by a route with a longer interval) is never joined', async (t) => {
  const { scheduler } = newScheduler(1000) // 5 ms ticks
  const now = performance.now()
  const slow = scheduler.pace(now, now + 25_000)
  t.ok(slow >= now + 25_000, 'a 25 s route opens a batch 25 s on')
  const fast = scheduler.pace(now + 10, now + 1010)
  t.ok(fast >= now + 1010 && fast < now + 1015, `a 1 s route's first ping is one interval on, not with the later batch (${Math.round(fast - now)} ms)`)
  t.equal(scheduler.pace(now + 20, now + 1020), fast, 'the next one joins the earlier batch')
})

/** Watches the Timeout objects alive (created and neither fired nor cleared): unref'd timers included. */
function liveTimers (): { count: () => Promise<number>, stop: () => void } {
  const live = new Set<number>()
  const hook = createHook({
    init (id, type) { if (type === 'Timeout') live.add(id) },
    destroy (id) { live.delete(id) }
  })
  hook.enable()
  return {
    // Destroy hooks run a turn later.
    count: async () => {
      await new Promise(setImmediate)
      await new Promise(setImmediate)
      return live.size
    },
    stop: () => { hook.disable() }
  }
}

t.test('re-arming for an earlier entry clears the timer armed before: entries added latest first leave one timer', async (t) => {
  const { scheduler, fired } = newScheduler(100)
  t.teardown(() => scheduler.stop())
  const timers = liveTimers()
  t.teardown(() => timers.stop())
  const now = performance.now()
  const items = Array.from({ length: 10 }, (_, i) => item(`${10 - i}`, now + (10 - i) * 40))
  for (const entry of items) scheduler.add(entry, entry.dueAt)
  t.equal(await timers.count(), 1, 'one timer for ten entries, each earlier than the last')
  await waitFor(() => fired.length === 10, 3000, 'every entry')
  t.same(fired.map((entry) => entry.name), ['1', '2', '3', '4', '5', '6', '7', '8', '9', '10'])
  t.equal(await timers.count(), 0, 'none left once the wheel is empty')
})

t.test('removing the last entry drops the timer', async (t) => {
  const { scheduler, fired } = newScheduler(100)
  t.teardown(() => scheduler.stop())
  const timers = liveTimers()
  t.teardown(() => timers.stop())
  const now = performance.now()
  const near = item('near', now + 200)
  const far = item('far', now + 60_000)
  scheduler.add(near, near.dueAt)
  scheduler.add(far, far.dueAt)
  scheduler.remove(near)
  t.equal(await timers.count(), 1, 'still armed for the far entry')
  scheduler.remove(far)
  t.equal(await timers.count(), 0, 'nothing scheduled, no timer')
  t.same(fired, [])
})

t.test('a deadline further away than setTimeout can wait (over 24.8 days) does not make the scheduler wake every millisecond', async (t) => {
  const { scheduler, fired } = newScheduler(200_000)
  t.teardown(() => scheduler.stop())
  const warnings: string[] = []
  const onWarning = (warning: Error): void => { warnings.push(warning.name) }
  process.on('warning', onWarning)
  t.teardown(() => { process.off('warning', onWarning) })
  const far = item('far', performance.now() + 30 * 24 * 3600 * 1000)
  const timers = await timersCreatedDuring(300, () => { scheduler.add(far, far.dueAt) })
  t.same(fired, [])
  t.ok(timers <= 1, `${timers} timers in 300 ms`)
  t.same(warnings, [], 'no TimeoutOverflowWarning')
  scheduler.remove(far)
})

t.test('once only far deadlines remain, the scheduler sleeps until they come within reach: no wake per revolution', async (t) => {
  // 20 ms → a 1 ms tick: a revolution of 512 ms.
  const { scheduler, fired } = newScheduler(20)
  t.teardown(() => scheduler.stop())
  const now = performance.now()
  const near = item('near', now + 20)
  const far = Array.from({ length: 3 }, (_, i) => item(`far ${i}`, now + 60_000 + i))
  const timers = await timersCreatedDuring(1700, () => {
    scheduler.add(near, near.dueAt)
    for (const entry of far) scheduler.add(entry, entry.dueAt)
  })
  t.same(fired.map((entry) => entry.name), ['near'])
  t.ok(timers <= 2, `${timers} timers over three revolutions: one for the near entry, one for the far ones`)
  for (const entry of far) scheduler.remove(entry)
})
