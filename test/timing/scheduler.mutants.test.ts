import { performance } from 'node:perf_hooks'
import t from 'tap'
import { kWheelTick } from '../../lib/core/symbols'
import { item, newScheduler } from '../helpers/scheduler-entries'
import { sleep, waitFor } from '../helpers/helpers'

// Behaviours that mutation testing found unchecked (docs/testing.md).

t.test('a longer period declared later keeps the finer tick of the shorter one', async (t) => {
  // 100 ms → a 1 ms tick; 200 s on its own would mean the coarsest, 1 s.
  const { scheduler, fired } = newScheduler(100, 200_000)
  t.teardown(() => scheduler.stop())
  const entry = item('soon', performance.now() + 20)
  scheduler.add(entry, entry.dueAt)
  await waitFor(() => fired.length === 1, 3000, 'the entry')
  const late = entry.firedAt - entry.dueAt
  t.ok(late < 300, `ran ${late.toFixed(1)} ms after it was due`)
})

t.test('an entry whose tick went by while the event loop was blocked still runs first when another is added meanwhile', async (t) => {
  const { scheduler, fired } = newScheduler(100)
  t.teardown(() => scheduler.stop())
  const early = item('early', performance.now() + 10)
  scheduler.add(early, early.dueAt)
  const until = performance.now() + 40
  while (performance.now() < until) { /* the event loop held up past the early entry's tick */ }
  const later = item('later', performance.now() + 300)
  scheduler.add(later, later.dueAt)
  await waitFor(() => fired.length === 2, 3000, 'both entries')
  t.same(fired.map((entry) => entry.name), ['early', 'later'])
})

t.test('of several entries beyond one revolution, each is brought into the wheel in time to run on time', async (t) => {
  // 400 ms → a 2 ms tick, 1,024 ms per revolution: all three start in the overflow list.
  const { scheduler, fired } = newScheduler(400)
  t.teardown(() => scheduler.stop())
  const now = performance.now()
  const farthest = item('farthest', now + 20_000)
  const second = item('second', now + 1400)
  const first = item('first', now + 1200)
  for (const entry of [farthest, second, first]) scheduler.add(entry, entry.dueAt)
  await waitFor(() => fired.length === 2, 5000, 'the two nearer entries')
  t.same(fired.map((entry) => entry.name), ['first', 'second'])
  for (const entry of fired) {
    const late = entry.firedAt - entry.dueAt
    t.ok(late >= 0 && late < 400, `${entry.name}: ran ${late.toFixed(1)} ms after it was due`)
  }
  scheduler.remove(farthest)
})

t.test('an entry moved within the overflow list can still be removed', async (t) => {
  const { scheduler, fired } = newScheduler(400)
  t.teardown(() => scheduler.stop())
  const now = performance.now()
  const near = item('near', now + 1400)
  const far = item('far', now + 20_000)
  // When `near` comes within reach, `far` takes its place in the list.
  scheduler.add(near, near.dueAt)
  scheduler.add(far, far.dueAt)
  await waitFor(() => fired.length === 1, 5000, 'the near entry')
  t.doesNotThrow(() => scheduler.remove(far))
  t.equal(far[kWheelTick], -1, 'no longer scheduled')
  scheduler.add(far, performance.now() + 30)
  await waitFor(() => fired.length === 2, 3000, 'the far entry, scheduled again')
  await sleep(50)
  t.same(fired.map((entry) => entry.name), ['near', 'far'], 'each ran once')
})
