// deploy/nginx.conf, run by Debian's nginx in front of three instances (processes of their own, on the build) that
// share topics and sessions over a real redis-server: upgrades through it, spreading, idle connections kept by the
// heartbeat, a rolling restart, a crash and an nginx reload, with a topic published all along; and durable sessions
// through the same: moving to another instance at each graceful restart, taken over from Redis after the crash, and
// after the reload following their client wherever nginx sends it, with messages both ways and a topic of their own.
import t from 'tap'
import net from 'node:net'
import WebSocket from 'ws'
import { ReliableWebSocket } from '../../lib/client'
import type fastifyReliableWs = require('../../types/index')
import { Conversation } from '../helpers/conversation'
import { busiest, closeEvent, sleep, start, waitFor } from '../helpers/helpers'
import { Instance } from '../helpers/instance'
import { Nginx } from '../helpers/nginx'
import { needsAll, NGINX, REDIS } from '../helpers/programs'
import { freePort, RedisServer } from '../helpers/redis'

t.setTimeout(600_000)

const CLIENTS = 60
// Also the heartbeat's deadline: a client whose process stalls longer is terminated by its instance.
const HEARTBEAT_MS = 1000
// Shortened from the deployed 75 s: an idle connection must outlive it on heartbeats alone (the first ping may come
// half an interval late).
// It bounds the wait for an instance's answer to an upgrade as well: a resume there waits for Redis, and on this
// loaded machine a survivor taking over a crashed instance's sessions answers some only after seconds.
const PROXY_READ_TIMEOUT_MS = 6000
const RECONNECT_WINDOW_MS = 2000
// A draining instance holds on this long to a client that never answers its close frame.
const SHUTDOWN_TIMEOUT_MS = 3000
// The plugin's default shutdown.closeCode.
const SHUTDOWN_CLOSE_CODE = 1001
const WORKER_SHUTDOWN_TIMEOUT_MS = 2000
// How long nginx leaves an instance alone after it failed a request (refused it, or answered 503 while draining).
const FAIL_TIMEOUT_MS = 1000
const SESSION_CLIENTS = 300
// Published to the sessions' topic, and sent by their clients in all (one client after the other), one of each a
// tick, over the rolling restart, the crash and the reload.
const MESSAGES = 10_000
const TICK_MS = 8
// The route's resume.receiveWindow (the default): after a crash, at most this many messages of a session come again.
const RECEIVE_WINDOW = 64

/** One client through nginx, and what it saw. */
class Watcher {
  readonly ws: ReliableWebSocket
  /** The instance of its current connection (0 until its first greeting). */
  instance = 0
  greetings = 0
  greetedAt = 0
  /** The last topic message's number, and how many came out of order or twice. */
  last = 0
  disorder = 0
  received = 0
  /** Topic messages since its latest greeting: its subscription on that connection is in place once one came. */
  sinceGreeting = 0
  closes: number[] = []
  /** Topic messages received by the time of each close. */
  receivedAtClose: number[] = []
  // The delay given to the latest reconnection after a connection that had opened, if that connection heard the
  // server's close frame (and so the moment sent before it), and the attempts that failed (a refused or broken
  // upgrade closes without having opened).
  hint = -1
  failedAttempts = 0
  private opened = false
  private closeCode = 0

  constructor (url: string) {
    this.ws = new ReliableWebSocket(url, { WebSocket, backoff: { initialDelayMs: 200, maxDelayMs: 1000 } })
    this.ws.addEventListener('message', (event) => {
      const message = JSON.parse((event as MessageEvent).data as string) as { instance?: number, n?: number }
      if (message.instance !== undefined) {
        this.instance = message.instance
        this.greetings++
        this.greetedAt = Date.now()
        this.sinceGreeting = 0
        return
      }
      this.received++
      this.sinceGreeting++
      if (message.n! <= this.last) this.disorder++
      this.last = message.n!
    })
    this.ws.addEventListener('open', () => { this.opened = true })
    this.ws.addEventListener('close', (event) => {
      this.closes.push(Date.now())
      this.receivedAtClose.push(this.received)
      this.closeCode = event.code
      if (!this.opened) this.failedAttempts++
    })
    this.ws.addEventListener('reconnecting', (event) => {
      if (this.opened && this.closeCode === SHUTDOWN_CLOSE_CODE) this.hint = event.delayMs
      this.opened = false
    })
  }
}

t.test('three instances behind deploy/nginx.conf', needsAll([REDIS, NGINX]), async (t) => {
  const redis = await RedisServer.start(t)
  const env = {
    REDIS_URL: redis.url,
    HEARTBEAT_MS: String(HEARTBEAT_MS),
    RECONNECT_WINDOW_MS: String(RECONNECT_WINDOW_MS),
    SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS)
  }
  const instances: Instance[] = []
  for (let i = 0; i < 3; i++) instances.push(await Instance.start(t, await freePort(), env))
  const nginx = await Nginx.start(t, instances.map(({ port }) => port), {
    proxy_read_timeout: `${PROXY_READ_TIMEOUT_MS}ms`,
    worker_shutdown_timeout: `${WORKER_SHUTDOWN_TIMEOUT_MS}ms`,
    // nginx takes whole seconds here.
    fail_timeout: `${FAIL_TIMEOUT_MS / 1000}s`
  })

  t.test('a connection the instance pings outlives proxy_read_timeout; a silent one does not', async (t) => {
    const pinged = new WebSocket(nginx.url('/feed'))
    const silent = new WebSocket(nginx.url('/quiet'))
    const openedAt = Date.now()
    let silentClose: { code: number, after: number } | null = null
    closeEvent(silent).then(({ code }) => { silentClose = { code, after: Date.now() - openedAt } }, () => {})
    let pingedClosed = false
    pinged.on('close', () => { pingedClosed = true })
    await waitFor(() => silentClose !== null, PROXY_READ_TIMEOUT_MS * 3, 'nginx to close the silent connection')
    const { code, after } = silentClose!
    t.ok(after >= PROXY_READ_TIMEOUT_MS * 0.9, `nginx closed the silent connection after ${after} ms`)
    t.equal(code, 1006, 'by dropping it: nginx, not the instance, closed it')
    await sleep(Math.max(0, PROXY_READ_TIMEOUT_MS * 2 - (Date.now() - openedAt)))
    t.equal(pingedClosed, false, `the pinged one is open after ${Date.now() - openedAt} ms`)
    pinged.close()
  })

  t.test(`${CLIENTS} clients through a rolling restart, a crash and a reload, with a topic published all along`, async (t) => {
    const publisher = await start({ redis: redis.url }, () => {})
    const watchers: Watcher[] = []
    t.teardown(() => { for (const { ws } of watchers) ws.close() })
    for (let i = 0; i < CLIENTS; i++) watchers.push(new Watcher(nginx.url('/feed')))
    await waitFor(() => watchers.every((w) => w.greetings === 1), 30_000, 'every client connected')

    const counts = (): number[] => instances.map(({ port }) => watchers.filter((w) => w.instance === port).length)
    t.ok(counts().every((n) => n >= CLIENTS / 3 * 0.6), `nginx spread them: ${counts().join(', ')}`)

    let published = 0
    let publishing = true
    const publishes = (async () => {
      while (publishing) {
        await publisher.app.wsPublishJSON('news', { n: ++published })
        await sleep(10)
      }
    })()
    t.teardown(async () => {
      publishing = false
      await publishes.catch(() => {})
      await publisher.app.close()
    })
    await waitFor(() => watchers.every((w) => w.received > 0), 10_000, 'the topic reaching every client')

    // Each instance in turn closes gracefully, as in a rolling deploy: its clients are told when to come back, and
    // while it drains (held by a client that never answers its close frame) nginx gets 503 from it and tries the next.
    for (const instance of instances) {
      const holder = await holdOpen(instance.port)
      const moving = watchers.filter((w) => w.instance === instance.port)
      const greeted = moving.map((w) => w.greetings)
      for (const w of moving) w.hint = -1
      await instance.stop('SIGTERM')
      await waitFor(() => moving.every((w, i) => w.greetings > greeted[i]), 20_000, 'the clients of the restarted instance back')
      holder.destroy()
      // A client whose process is too busy to read its socket before shutdown.timeoutMs is cut off (a reset, with the
      // moment unread) and comes back on its own backoff: counted, not judged. The spread is judged on the others.
      const hints = moving.map((w) => w.hint).filter((hint) => hint >= 0).sort((a, b) => a - b)
      const most = busiest(hints, 100)
      t.ok(hints.length >= moving.length / 2 && most <= Math.max(1, Math.ceil(moving.length / 10)),
        `instance ${instance.port}: ${moving.length} clients given moments over ${RECONNECT_WINDOW_MS} ms, at most ${most} in any 100 ms` +
        ` (${moving.length - hints.length} cut off before they read theirs)`, { hints })
      // When they arrived is the machine's business as much as the plugin's (a stalled event loop bunches them): shown.
      t.comment(`their arrivals: at most ${busiest(moving.map((w) => w.greetedAt).sort((a, b) => a - b), 100)} in any 100 ms`)
      const others = counts().filter((_, i) => instances[i] !== instance)
      t.ok(Math.abs(others[0] - others[1]) <= 4, `least_conn evened out the other two: ${others.join(', ')}`)
      await instance.restart()
      await backInRotation(nginx, instance.port)
    }

    // A crash: nginx finds the instance gone, its clients come back on the others.
    const crashed = instances[0]
    const orphans = watchers.filter((w) => w.instance === crashed.port)
    const orphanGreetings = orphans.map((w) => w.greetings)
    await crashed.stop('SIGKILL')
    await waitFor(() => orphans.every((w, i) => w.greetings > orphanGreetings[i]), 20_000, 'the clients of the crashed instance back')
    await crashed.restart()
    await backInRotation(nginx, crashed.port)

    // A reload: the old workers keep their websockets, and the topic flowing, until worker_shutdown_timeout.
    const before = watchers.map((w) => ({ closes: w.closes.length, greetings: w.greetings }))
    const reloadedAt = Date.now()
    nginx.reload()
    await sleep(WORKER_SHUTDOWN_TIMEOUT_MS / 2)
    const atHalf = watchers.map((w) => w.received)
    await waitFor(() => watchers.every((w, i) => w.greetings > before[i].greetings), 20_000, 'every client cut by the old workers and back')
    const firstCut = Math.min(...watchers.map((w, i) => w.closes[before[i].closes]))
    t.ok(firstCut - reloadedAt >= WORKER_SHUTDOWN_TIMEOUT_MS / 2, `the old workers kept every websocket for ${firstCut - reloadedAt} ms`)
    t.ok(watchers.every((w, i) => w.receivedAtClose[before[i].closes] > atHalf[i]), 'the topic went on reaching them until the cut')

    // A subscription takes effect once the instance has read the topic's position from Redis: a message published
    // before that does not reach it. The last one must reach every client.
    await waitFor(() => watchers.every((w) => w.sinceGreeting > 0), 10_000, 'every subscription in place')
    publishing = false
    await publishes
    await waitFor(() => watchers.every((w) => w.last === published), 10_000, 'the last message reaching every client')
    const disorder = watchers.reduce((sum, w) => sum + w.disorder, 0)
    const failedAttempts = watchers.reduce((sum, w) => sum + w.failedAttempts, 0)
    const reconnections = watchers.reduce((sum, w) => sum + w.greetings - 1, 0)
    const delivered = watchers.reduce((sum, w) => sum + w.received, 0)
    t.equal(disorder, 0, 'no topic message came twice or out of order')
    t.equal(failedAttempts, 0, 'every reconnection succeeded at its first attempt: nginx never handed a client a failed upgrade')
    t.comment(`published ${published}, delivered ${delivered} (${(delivered / published / CLIENTS * 100).toFixed(1)} % of ${published} × ${CLIENTS}: ` +
      `without sessions a client misses what is published while it reconnects), ${reconnections} reconnections`)
  })

  t.test(`durable sessions through a rolling restart, a crash and a reload: ${SESSION_CLIENTS} clients, ${MESSAGES} topic messages and ${MESSAGES} messages each way`, async (t) => {
    const clients: Conversation[] = []
    t.teardown(() => { for (const { ws } of clients) ws.close() })
    for (let i = 0; i < SESSION_CLIENTS; i++) clients.push(new Conversation(nginx.url('/session'), `127.1.${1 + Math.floor(i / 200)}.${1 + i % 200}`))
    await waitFor(() => clients.every((c) => c.greetings.length === 1), 30_000, 'every session begun')

    // The traffic: each tick the topic `updates` is published from a fourth instance and the next client sends. Each
    // of the five events below is let through a seventh of it and then holds it at the next seventh until the event
    // is over, so that each happens with traffic flowing, however slow the machine. The publisher, which trims the
    // topic's stream, keeps all of it: a session away while the machine is loaded finds its messages there however
    // long it took to come back, as a deployment sizes historySize for the longest it expects.
    const publisher = await start({ redis: redis.url, topics: { historySize: MESSAGES } }, () => {})
    let published = 0
    let allowed = MESSAGES / 7
    let stopped = false
    const traffic = (async () => {
      while (published < MESSAGES && !stopped) {
        if (published >= allowed) {
          await sleep(10)
          continue
        }
        await publisher.app.wsPublish('updates', `u${++published}`)
        clients[published % SESSION_CLIENTS].next()
        await sleep(TICK_MS)
      }
    })()
    t.teardown(async () => {
      stopped = true
      await traffic.catch(() => {})
      await publisher.app.close()
    })
    const event = async (run: () => Promise<void>): Promise<void> => {
      await waitFor(() => published >= allowed, 120_000, 'the traffic before the next event')
      allowed += MESSAGES / 7
      await run()
    }
    /** The event's action, then the wait for its clients to be back: traffic must have flowed between the two. */
    const meanwhile = async (action: () => unknown, back: () => boolean, what: string): Promise<void> => {
      const from = published
      await action()
      await waitFor(back, 30_000, what)
      t.ok(published > from, `traffic flowed until ${what}: messages ${from + 1} to ${published}`)
    }
    const sum = (of: (c: Conversation) => number): number => clients.reduce((total, c) => total + of(c), 0)
    // An instance's sessions' stats, from its health route.
    const stats = async (port: number): Promise<fastifyReliableWs.SessionStats> => {
      const response = await fetch(`http://127.0.0.1:${port}/health/ws`)
      if (!response.ok) throw new Error(`instance ${port}: health ${response.status}`)
      return ((await response.json()) as { sessions: fastifyReliableWs.SessionStats }).sessions
    }

    // Each instance in turn closes gracefully: the sessions it holds go to Redis, and their clients resume them on
    // the other two (least_conn picks), the messages of the moment included.
    const handedOver: number[] = []
    // Sessions fenced on every instance over the test: those a live instance, taken for dead, let go.
    let fenced = 0
    for (const instance of instances) {
      await event(async () => {
        const moving = clients.filter((c) => c.instance === instance.port)
        const greeted = moving.map((c) => c.greetings.length)
        await meanwhile(async () => { await instance.stop('SIGTERM') },
          () => moving.every((c, i) => c.greetings.length > greeted[i]), 'the sessions of the restarted instance resumed')
        const closed = JSON.parse(/^closed (.*)$/m.exec(instance.output)?.[1] ?? 'null') as fastifyReliableWs.SessionStats | null
        t.match(closed, { handedOver: moving.length, handoverFailed: 0 }, `instance ${instance.port} handed its ${moving.length} sessions over`)
        handedOver.push(closed?.handedOver ?? 0)
        fenced += closed?.fenced ?? 0
        const back = moving.map((c, i) => c.greetings[greeted[i]])
        t.ok(back.every((g) => g.resumed && g.instance !== instance.port), `each resumed on another instance: ${moving.length} sessions`)
        t.comment(`their resumes: at most ${busiest(back.map((g) => g.at).sort((a, b) => a - b), 100)} in any 100 ms`)
        await instance.restart()
        await backInRotation(nginx, instance.port)
      })
    }

    // A crash: the sessions of the killed instance are taken over from the copies it kept in Redis.
    const crashed = instances[1]
    let orphans: Conversation[] = []
    let takenOverAfterCrash = 0
    await event(async () => {
      const survivors = instances.filter((i) => i !== crashed)
      const counts = async (): Promise<{ takenOver: number, claimedRemote: number }> => {
        const [one, other] = await Promise.all(survivors.map(async ({ port }) => await stats(port)))
        return { takenOver: one.takenOver + other.takenOver, claimedRemote: one.claimedRemote + other.claimedRemote }
      }
      const before = await counts()
      fenced += (await stats(crashed.port)).fenced
      orphans = clients.filter((c) => c.instance === crashed.port)
      const greeted = orphans.map((c) => c.greetings.length)
      await meanwhile(async () => { await crashed.stop('SIGKILL') },
        () => orphans.every((c, i) => c.greetings.length > greeted[i]), 'the sessions of the crashed instance resumed')
      const back = orphans.map((c, i) => c.greetings[greeted[i]])
      t.ok(back.every((g) => g.resumed && g.instance !== crashed.port), `each resumed on another instance: ${orphans.length} sessions`)
      const after = await counts()
      // Counted where the session opens: one taken over by an instance whose connection then closed before it opened
      // goes back to the store, and the next instance resumes it as a handover.
      takenOverAfterCrash = after.takenOver - before.takenOver
      t.ok(after.claimedRemote - before.claimedRemote >= orphans.length && takenOverAfterCrash > 0 && takenOverAfterCrash <= orphans.length,
        `each resumed from the store, ${takenOverAfterCrash} counted in sessions.takenOver`)
      await crashed.restart()
      await backInRotation(nginx, crashed.port)
    })

    // A reload: the old workers cut every websocket at worker_shutdown_timeout, and least_conn, its counts begun anew,
    // sends many clients to another instance than the live one holding their session, which is asked to hand it over.
    let taken = 0
    await event(async () => {
      const beforeReload = clients.map((c) => c.greetings.length)
      await meanwhile(() => nginx.reload(),
        () => clients.every((c, i) => c.greetings.length > beforeReload[i]), 'every client cut by the old workers and back')
      const reloaded = clients.map((c, i) => ({ was: c.greetings[beforeReload[i] - 1], now: c.greetings[beforeReload[i]] }))
      taken = reloaded.filter(({ was, now }) => now.instance !== was.instance).length
      t.ok(reloaded.every(({ now }) => now.resumed), 'every session resumed after the reload')
      t.ok(taken > 0, `${taken} of ${SESSION_CLIENTS} sessions taken from the live instance holding them`)
    })

    allowed = MESSAGES
    await traffic
    await waitFor(() => clients.every((c) => c.replies + c.wrong.length >= c.sent && c.lastUpdate === published), 60_000, 'a reply to every message, and the last update')

    const wrong = clients.flatMap((c) => c.wrong)
    t.same(wrong.slice(0, 10), [], `no reply or topic message twice or out of order, no client message counted twice or missed by the instances (${wrong.length} wrong)`)
    t.ok(clients.every((c) => c.updates === published && c.firstUpdate === 1 && c.lastUpdate === published),
      `every topic message reached every session once, in order, across every move and the crash (${published} published, ${sum((c) => c.updates)} delivered)`)
    t.ok(clients.every((c) => c.replies === c.sent), 'every client received the reply to each of its messages')
    const sent = sum((c) => c.sent)
    // The messages the crashed instance had reserved come marked to the next holder, only in its sessions. (A client
    // here sends about 33 in all: the bound of receiveWindow a session is checked by test/sessions/durable.test.ts.)
    const redelivered = sum((c) => c.redelivered)
    const log = redis.client()
    const [reapplied, late] = (await log.mget('reapplied', 'late')).map(Number)
    for (const { port } of instances) fenced += (await stats(port)).fenced
    t.ok(redelivered > 0 && clients.every((c) => c.redelivered <= (orphans.includes(c) ? RECEIVE_WINDOW : 0)),
      `messages marked redelivered only in the crashed instance's ${orphans.length} sessions: ${redelivered} ` +
      `(${reapplied} of them the dead instance had delivered, dropped by the application)`)
    // What the application received on all instances together: a message that reached an instance after it handed
    // its session over would be received again by the next, each instance's count in the session none the wiser.
    const appReceived = await Promise.all(clients.map(async (c) => await log.lrange(`received:${c.greetings[0].session}`, 0, -1)))
    t.ok(clients.every((c, i) => appReceived[i].length === c.sent),
      `the application, over every instance, applied every message (${sent} sent, ${appReceived.reduce((total, list) => total + list.length, 0)} applied)`)
    // Only a holder taken for dead that lived on (its answer to the ask too late on a loaded machine) may apply, after
    // the next one did, a message it had reserved: at most its reservation of each session fenced.
    t.ok(late <= fenced * RECEIVE_WINDOW, `no message came unmarked to an application that had applied it (${late}), ` +
      `but from a holder taken for dead that lived on (${fenced} sessions fenced)`)
    t.ok(clients.every((c) => c.greetings.every((g) => g.session === c.greetings[0].session)), 'each client kept its one session')
    t.equal(sum((c) => c.lost), 0, 'no session lost')
    t.same({ sent, refused: sum((c) => c.refused) }, { sent: MESSAGES, refused: 0 }, `the clients sent ${MESSAGES} messages, none refused`)
    const handed = handedOver.reduce((total, n) => total + n, 0)
    const reconnections = sum((c) => c.greetings.length - 1)
    const resumes = sum((c) => c.greetings.filter((g) => g.resumed).length)
    const moves = sum((c) => c.greetings.filter((g, i) => i > 0 && g.instance !== c.greetings[i - 1].instance).length)
    // A restart's clients, the crash's and every client at the reload came back; a client the heartbeat found too slow
    // under this load comes back too, and resumes as well.
    t.ok(resumes === reconnections && reconnections >= handed + orphans.length + SESSION_CLIENTS && moves >= handed + orphans.length + taken,
      `every connection after the first resumed its session: ${reconnections} reconnections, ${moves} to another instance`)
    t.comment(`${published} topic messages, ${sum((c) => c.updates)} delivered; ${sent} messages each way; ${reconnections} reconnections ` +
      `(${handedOver.join(' + ')} handed over, ${orphans.length} after the crash, ${takenOverAfterCrash} of them counted as taken over, ${taken} taken after the reload); ` +
      `${redelivered} marked redelivered (${reapplied} had been delivered); ${fenced} fenced; close codes seen: ${[...new Set(clients.flatMap((c) => c.closeCodes))].join(', ')}`)
  })
})

/**
 * What a rolling deploy must wait for before it stops the next instance: a plain request through nginx answered by
 * the one that came back. nginx counts a failure against an instance (refused, or 503 while it drained) until a
 * request to it completes, and a websocket completes only when it closes: until then the instance gets one new
 * connection per fail_timeout, and were the next instance stopped meanwhile, a third would be all nginx had left.
 */
async function backInRotation (nginx: Nginx, port: number): Promise<void> {
  const deadline = Date.now() + 20_000
  for (;;) {
    const response = await fetch(nginx.http('/instance'))
    if (response.ok && ((await response.json()) as { instance: number }).instance === port) return
    if (Date.now() > deadline) throw new Error(`instance ${port} never answered through nginx`)
    await sleep(50)
  }
}

/** A websocket straight to an instance that never answers anything: the instance drains until shutdown.timeoutMs. */
async function holdOpen (port: number): Promise<net.Socket> {
  const socket = net.connect(port, '127.0.0.1')
  socket.write(`GET /quiet HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
  await new Promise<void>((resolve) => socket.once('data', () => resolve()))
  socket.pause()
  return socket
}
