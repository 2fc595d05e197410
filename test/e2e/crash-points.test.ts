// Crash points of a durable session's resume, hold and release: an instance (test/fixtures/instance.mjs, a process of
// its own, on the build) resumes a session and is SIGKILLed at its k-th write to the session store, just before the
// write reaches Redis or just after its answer came back, for every k of its writes; its client then resumes on an
// instance that lives. The session came to it from a live holder (handed over) or from one that crashed (taken over
// from the copy in Redis); should it outlive its write, it lets the session go: asked for it by the instance its client
// moves back to, or closing. Messages flow all along, both ways, with a topic, and messages sent to the session from
// another instance.
// Replay a run's schedule with CRASH_SEED=<seed> npx tap test/e2e/crash-points.test.ts
import t from 'tap'
import type { Test } from 'tap'
import { Redis } from 'ioredis'
import { RedisSessionStore } from '../../index'
import { Conversation } from '../helpers/conversation'
import { generator, sleep, start, waitFor } from '../helpers/helpers'
import { Instance } from '../helpers/instance'
import { FaultProxy } from '../helpers/fault-proxy'
import { needs, REDIS } from '../helpers/programs'
import { freePort, RedisServer } from '../helpers/redis'

t.setTimeout(900_000)

const seed = process.env.CRASH_SEED === undefined ? Math.floor(Math.random() * 2 ** 32) : Number(process.env.CRASH_SEED)
const TICK_MS = 10
// Quick to come back: each run waits for its client twice.
const BACKOFF = { initialDelayMs: 20, maxDelayMs: 200 }
// A bound on the crash points of a path: a run without a crash making more writes fails the test, not just its time.
const MAX_WRITES = 80
// The route's resume.receiveWindow (the default): after a crash, at most this many messages of a session come again.
const RECEIVE_WINDOW = 64
// How the session reaches the instance that crashes, and how that instance lets it go should it outlive its write:
// handed over by a live holder, and asked for by the instance its client moves back to; taken over from a crashed
// holder, and handed over as it closes (SIGTERM).
const PATHS = ['handover', 'takeover'] as const
const MOMENTS = ['before', 'after'] as const

type Path = typeof PATHS[number]
type Moment = typeof MOMENTS[number]

t.test(`a durable session through a crash at every write of its resume (seed ${seed})`, needs(REDIS), async (t) => {
  t.comment(`seed ${seed} (replay the schedule with CRASH_SEED=${seed})`)
  // The ticks' jitter draws as often as the machine's pace allows; each run's schedule comes from a generator of its
  // own, so that a seed replays every run's.
  const jitter = generator(seed ^ 0x5eed)
  const between = (random: () => number, min: number, max: number): number => min + Math.floor(random() * (max - min + 1))
  const redis = await RedisServer.start(t)
  const env = { REDIS_URL: redis.url, HEARTBEAT_MS: '1000', RECONNECT_WINDOW_MS: '500', SHUTDOWN_TIMEOUT_MS: '1000' }
  // Lives through every run; holds the session first on the handover path, and last on both.
  const stable = await Instance.start(t, await freePort(), env)
  // Holds it first on the takeover path, and is SIGKILLed then.
  const doomed = await Instance.start(t, await freePort(), env)
  // Resumes it, and dies at its write.
  const crashing = await Instance.start(t, await freePort(), env)
  const proxy = await FaultProxy.start(stable.port)
  t.teardown(() => proxy.close())
  // A stalled Redis fails the run rather than hanging it.
  const client = new Redis(redis.url, { commandTimeout: 2000 })
  t.teardown(() => client.quit())
  // Publishes the session's topic, and sends to the session wherever it is: it holds no session itself.
  const publisher = await start({ redis: redis.url, sessionStore: new RedisSessionStore(client) }, () => {})
  t.teardown(() => publisher.app.close())
  const counter = async (name: string): Promise<number> => Number(await client.get(name))

  let published = 0
  let ticks = 0
  const crashedIn = new Map<string, number>()
  let runs = 0
  let redelivered = 0
  let reapplied = 0
  // The most writes the crashing instance made in a run of the path.
  let most = 0

  /**
   * One run; the method of the write the instance died at, or null when it made fewer writes than `at` (`<k>`, or a
   * method's first; `none`: no crash).
   */
  const run = async (t: Test, path: Path, at: string, when: Moment): Promise<string | null> => {
    const schedule = generator(seed + ++runs)
    const first = path === 'handover' ? stable : doomed
    if (path === 'takeover') await doomed.stop('SIGKILL').then(() => doomed.restart())
    await crashing.stop('SIGKILL')
    await crashing.restart({ CRASH_AT: at, CRASH_WHEN: when })
    proxy.target = first.port
    const [late, reappliedBefore] = [await counter('late'), await counter('reapplied')]
    const conversation = new Conversation(proxy.url('/session'), '127.0.0.1', BACKOFF)
    const from = published
    let posted = 0
    const refusedPosts: string[] = []
    let flowing = true
    let traffic: Promise<void> = Promise.resolve()
    try {
      await waitFor(() => conversation.greetings.length >= 1, 10_000, 'the session to begin')
      const id = conversation.greetings[0].session
      traffic = (async () => {
        while (flowing) {
          await publisher.app.wsPublish('updates', `u${++published}`)
          const result = await publisher.app.wsSessions.send(id, `p${++posted}`)
          if (result !== 'posted') refusedPosts.push(`p${posted}: ${result}`)
          conversation.next()
          ticks++
          await sleep(between(jitter, TICK_MS / 2, TICK_MS * 2))
        }
      })()
      const after = async (count: number): Promise<void> => {
        const until = ticks + count
        await waitFor(() => ticks >= until, 10_000, `${count} ticks of traffic`)
      }
      await after(between(schedule, 2, 5))

      const moved = conversation.greetings.length
      proxy.target = crashing.port
      // From a live holder: its connection breaks, and the holder, asked for the session, hands it over. From a dead one:
      // its process is gone, and the session is taken over from what it kept in Redis.
      if (path === 'handover') proxy.cut()
      else await doomed.stop('SIGKILL')
      const heldFor = between(schedule, 2, 6)
      let greetedAt = Infinity
      await waitFor(() => {
        if (greetedAt === Infinity && conversation.greetings.length > moved) greetedAt = ticks
        return !crashing.alive || ticks >= greetedAt + heldFor
      }, 20_000, 'the crashing instance to die, or to hold the session a while')
      // It lets the session go, if it still can: asked for it by the instance its client moves to, or closing.
      const left = conversation.greetings.length
      proxy.target = stable.port
      let stopping: Promise<void> = Promise.resolve()
      if (crashing.alive) {
        if (path === 'handover') proxy.cut()
        else stopping = crashing.stop('SIGTERM')
      }
      await waitFor(() => conversation.greetings.length > left && conversation.instance === stable.port, 20_000,
        'the session to resume on the instance that lives')
      // A close that outlasts its shutdown timeout by far is stuck: it is killed, and counted as a crash below.
      await Promise.race([stopping, sleep(10_000)])
      const drained = path === 'handover' || crashing.output.includes('closed ')
      await crashing.stop('SIGKILL')
      most = Math.max(most, Number([...crashing.output.matchAll(/^store (\d+) /gm)].at(-1)?.[1] ?? 0))
      const call = /^crash (\d+)$/m.exec(crashing.output)?.[1]
      const point = call === undefined ? null : new RegExp(`^store ${call} (\\w+)$`, 'm').exec(crashing.output)![1]
      if (point !== null) crashedIn.set(`${when} ${point}`, (crashedIn.get(`${when} ${point}`) ?? 0) + 1)
      await after(3)
      flowing = false
      await traffic
      const done = (): boolean => conversation.replies === conversation.sent && conversation.lastUpdate === published &&
        conversation.posts === posted
      await waitFor(done, 20_000, 'every message both ways').catch(() => {})

      t.same(conversation.wrong, [], 'nothing came twice, out of order, or unknown; the application saw nothing twice nor missed one')
      t.same(refusedPosts, [], 'every message sent to the session was taken')
      t.equal(conversation.lost, 0, 'the session was never lost')
      t.ok(conversation.greetings.every((g) => g.session === id), 'one session all along')
      t.equal(conversation.greetings.at(-1)!.resumed, true, 'resumed on the instance that lives')
      t.equal(conversation.refused, 0, 'the client queued every message')
      t.equal(conversation.replies, conversation.sent, `a reply to each of the ${conversation.sent} messages, once, in order`)
      t.equal(conversation.firstUpdate, from + 1, 'the topic from its first message after the session began')
      t.equal(conversation.lastUpdate, published, `the topic to its last message, ${published}, each once in order`)
      t.equal(conversation.posts, posted, `the ${posted} messages sent to the session, each once in order`)
      t.equal(await client.llen(`received:${id}`), conversation.sent, 'the application applied every message, once')
      t.equal(await counter('late') - late, 0, 'no message came unmarked after it was applied')
      // Marked: what came after the last count a dead holder kept, up to what it had reserved.
      const crashes = (path === 'takeover' ? 1 : 0) + (point === null ? 0 : 1) + (drained || point !== null ? 0 : 1)
      t.ok(conversation.redelivered <= RECEIVE_WINDOW * crashes, `at most ${RECEIVE_WINDOW} marked a crash: ${conversation.redelivered} in ${crashes}`)
      redelivered += conversation.redelivered
      reapplied += await counter('reapplied') - reappliedBefore
      return point
    } finally {
      flowing = false
      await traffic
      conversation.ws.close()
    }
  }

  for (const path of PATHS) {
    // A run of the path without a crash tells how many writes it takes: the crash points to try. A run's writes depend
    // on the machine's pace, so a later run may make fewer than its crash point (it then only moves the session on).
    most = 0
    await t.test(`${path}, no crash`, async (t) => { t.equal(await run(t, path, 'none', 'before'), null, 'it made every write') })
    const writes = Math.min(most, MAX_WRITES)
    t.ok(writes > 0 && writes === most, `${path}: ${most} writes without a crash`)
    for (const when of MOMENTS) {
      let reached = 0
      for (let at = 1; at <= writes; at++) {
        let point: string | null = null
        await t.test(`${path}, killed ${when} write ${at}`, async (t) => { point = await run(t, path, String(at), when) })
        if (point !== null) reached++
      }
      t.ok(reached > writes / 2, `${path}, ${when}: killed at ${reached} of writes 1 to ${writes}; the runs of the others made fewer`)
      // Its last write, which the count above reaches only in a run that made as many writes as the one without a crash.
      await t.test(`${path}, killed ${when} its release`, async (t) => {
        t.equal(await run(t, path, 'release', when), 'release', 'it died at its release')
      })
    }
  }
  const points = [...crashedIn].map(([point, count]) => `${point} ×${count}`).join(', ')
  t.comment(`${runs} runs; crash points: ${points}; redelivered marked ${redelivered}, of which applied before ${reapplied} (seed ${seed})`)
  t.ok(redelivered > 0, `messages came marked redelivered: ${redelivered}`)
  for (const method of ['claim', 'write', 'keep', 'take', 'release']) {
    for (const when of MOMENTS) t.ok(crashedIn.has(`${when} ${method}`), `crashed ${when} a ${method}`)
  }
})
