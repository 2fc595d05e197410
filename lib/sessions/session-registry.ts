// Sessions: a client's conversation across its connections, numbered, acknowledged and replayed on resume.
import { performance } from 'node:perf_hooks'
import type { FastifyBaseLogger, FastifyRequest } from 'fastify'
import type fastifyReliableWs = require('../../types/index')
import { createIdGenerator } from '../core/ids'
import type { SessionLimitSettings } from '../core/options'
import type { BusySession, Counters, PendingConnection, PreparedSession, ReliableSocket, ResumeRequest, Schedule, SessionRoute, Sessions } from '../core/shapes'
import { isThenable } from '../core/thenable'
import { SESSION_OVERFLOW_CODE, STATE_LOST_CODE, TOPIC_GAP_CODE } from '../protocol/protocol'
import { toJSONText } from '../messages/json-messages'
import { bytesOf, Session } from './session'
import type { SessionStore } from './session-store'
import { kCause, kIp, kResume, kSession } from '../core/symbols'

type Awaitable<T> = fastifyReliableWs.Awaitable<T>
type SessionRecord = fastifyReliableWs.SessionRecord
type ClaimResult = fastifyReliableWs.ClaimResult
type SessionHandover = fastifyReliableWs.SessionHandover
type SessionInfo = fastifyReliableWs.SessionInfo
type RecordChanges = fastifyReliableWs.RecordChanges
type TopicPosition = fastifyReliableWs.TopicPosition
type SessionMessage = fastifyReliableWs.SessionMessage
type SessionSendResult = fastifyReliableWs.SessionSendResult
type WriteResult = fastifyReliableWs.WriteResult
type ClaimRequest = fastifyReliableWs.ClaimRequest

/** What the instance's topics (topics/topic-hub.ts) do for its sessions. */
export interface SessionTopics {
  /** Whatever ends a session, or hands it over, ends its subscriptions here. */
  sessionEnded (session: Session): void
  /** Where the session stands in each topic it subscribes to; null when that cannot be told yet. */
  positions (session: Session): TopicPosition[] | null
  /** Subscribes a session handed over to its topics again, from where it stood; false when there is no room for them. */
  rejoin (session: Session, positions: TopicPosition[]): boolean
}

/**
 * A connection's session as the store settled it: claimed (`session` is the live one held here, or `handover` what
 * another instance handed over) or created.
 */
interface Prepared extends PreparedSession {
  readonly session: Session | null
  readonly handover: SessionHandover | null
  /** The client's count of messages received, from its resume request. */
  readonly received: number
  /** Who held it before the claim: `''` when nobody did (handed over, or new). */
  readonly previous: string
}

// What a kept message costs beyond its bytes (its record and its slot in the outbox), so that the instance's
// budget also bounds a flood of tiny messages.
const MESSAGE_OVERHEAD = 64
// How long another instance's claim awaits its client before the secret the client resumed with may take the session
// over again (the claimer may have died before its welcome went out); a live client acknowledges its welcome at once.
const CONFIRM_MS = 5000
// How long the instance holding a session has to hand it over once another instance, where its client resumed, asks
// for it: a live one takes a few ms; one that has not by then is taken for dead, and the client begins anew. Its
// client comes back after ASK_RETRY_MS (and the spread of every retry), and again while that time lasts.
const ASK_MS = 3000
const ASK_RETRY_MS = 250
// resume.durable: how soon a session whose keep failed, or whose place in a topic is not known yet, is kept again.
const STALL_RETRY_MS = 50
// Past maxPendingSessions, a client comes back after this (and the spread of every retry).
const THROTTLED: BusySession = Object.freeze({ retryMs: 250, throttled: true })
// The holder's writes of a record: nothing changed (it lives), its client gone, its client heard.
const KEEP: RecordChanges = Object.freeze({})
const AWAY: RecordChanges = Object.freeze({ away: true })
const HEARD: RecordChanges = Object.freeze({ heard: true })
// A held record lives at least this long after its holder last wrote it (the route's ttlMs if longer), and is written
// again every half of that: with a ttlMs of a few ms, every connected session would be written many times a second,
// and a stall of the event loop longer than half of it would lose the records of sessions still connected.
const MIN_HOLD_MS = 2000

/**
 * The sessions of one Fastify instance: begun or resumed once a socket of a
 * route with sessions has been accepted, kept `ttlMs` after its socket closes
 * (on the shared scheduler, so no timer per session), ended on expiry,
 * overflow, or to make room under the instance's limits. The live sessions
 * are held here; the store keeps their records and judges every resume.
 */
export class SessionRegistry implements Sessions {
  private readonly nextId = createIdGenerator()
  private readonly nextSecret = createIdGenerator()
  // Sessions whose client is away, longest away first: the first to go when a limit needs room.
  private readonly away = new Set<Session>()
  // Every live session, by the address of its latest connection.
  private readonly perIp = new Map<string, Set<Session>>()
  // Every live session this instance holds, by id.
  private readonly held = new Map<string, Session>()
  // Whoever holds a record: this instance, while it lives.
  readonly instance = createIdGenerator()()
  // Sessions on their way through the store (resumed or begun), each until it is opened or given up: a drain waits
  // for them, so that none is left out of the handover.
  private readonly pending = new Set<Promise<void>>()
  // Set by drain: settles once the handover is written (or given up on).
  private drained: Promise<void> | null = null
  // Sessions held here whose client resumes here, the store's answer still on its way: the store has raised the fence,
  // the session not yet, so an ask of another instance made before that claim must not take it.
  private readonly claiming = new Set<Session>()
  // Stops the store telling this instance of sessions asked for elsewhere; set once start has listened, when the store can.
  private stopListening: (() => Awaitable<void>) | null = null
  // Sessions whose posted messages are being taken from the store, each until they are sent: a handover waits for
  // them, so that none is taken out of the store and then left behind. In `retake`, those posted to again meanwhile.
  private readonly taking = new Map<Session, Promise<void>>()
  private readonly retake = new Set<Session>()
  // Sessions being handed over: no take begins for them, so that what is posted meanwhile stays in the store for the
  // claim that takes the handover.
  private readonly handing = new Set<Session>()
  // Posts of this instance, numbered as they are made; by session id, the number of the latest one addressed to this
  // instance (or on its way) and not yet taken back by it: till then a message for that session goes through the store
  // too, even held here, so that it arrives after them.
  private posts = 0
  private readonly addressed = new Map<string, number>()
  // Ids of sessions held elsewhere whose client's resume is being claimed here.
  private readonly arriving = new Set<string>()
  // resume.durable: sessions to keep in the store at the next turn (one keep for what a turn changed), each session's
  // keep on its way (and in `rekeep`, those changed again meanwhile, or while a take was on its way: one of the two at
  // a time), and those whose keep failed (kept again on a timer of the instance's).
  private readonly dirtied = new Set<Session>()
  private readonly keeping = new Set<Session>()
  private readonly rekeep = new Set<Session>()
  private readonly stalled = new Set<Session>()
  private stallTimer: NodeJS.Timeout | null = null

  constructor (
    private readonly stats: Counters,
    private readonly scheduler: Schedule<ReliableSocket | PendingConnection | Session>,
    private readonly store: SessionStore,
    private readonly limits: SessionLimitSettings,
    private readonly log: FastifyBaseLogger,
    // Whether the store outlives this instance, and so takes its sessions as it closes.
    private readonly sharedStore: boolean,
    // Its subscriptions end with it, and move with it.
    private readonly topics: SessionTopics,
    // How many messages, and bytes, the store keeps posted to a session until its holder takes them.
    private readonly postLimits: { readonly maxBufferedMessages: number, readonly maxBufferedBytes: number }
  ) {}

  get (id: string): Session | undefined {
    return this.held.get(id)
  }

  async lookup (id: string): Promise<SessionInfo | null> {
    const record = await this.store.read(id)
    if (record === null) return null
    const { instance, state, route, url, owner, expiresAt } = record
    // Not the record's word: handed over a moment ago, its release on its way, it still names this instance.
    return { id, instance, here: this.held.has(id), state, route, url, owner, expiresAt }
  }

  async send (id: string, data: string | Buffer | ArrayBuffer | ArrayBufferView, options?: { binary?: boolean }): Promise<SessionSendResult> {
    const session = this.held.get(id)
    if (session !== undefined && !this.addressed.has(id)) return session.send(data, options) ? 'sent' : 'overflowed'
    if (typeof this.store.post !== 'function') return 'unknown'
    const binary = options?.binary ?? typeof data !== 'string'
    const message: SessionMessage = { data: typeof data === 'string' ? data : bytesOf(data), binary }
    const number = ++this.posts
    this.addressed.set(id, number)
    let posted: fastifyReliableWs.PostResult | null = null
    try {
      posted = await this.store.post(id, message, this.postLimits.maxBufferedMessages, this.postLimits.maxBufferedBytes)
    } finally {
      // Unless this instance is to take it (the store named it, and it holds the session or is claiming it), nothing
      // here waits for this post: another holder hands it over with the session, a claim of its handover takes it.
      const mine = posted !== null && typeof posted !== 'string' && posted.holder === this.instance && (this.held.has(id) || this.arriving.has(id))
      if (!mine && this.addressed.get(id) === number) this.addressed.delete(id)
    }
    if (typeof posted === 'string') return posted
    this.stats.sessions.posted++
    return 'posted'
  }

  async sendJSON (id: string, value: unknown): Promise<SessionSendResult> {
    return await this.send(id, toJSONText(value))
  }

  /**
   * Asks the holder of a session for it: false only when the store knows that nobody listens under that name. A failed
   * ask is logged, and taken as heard (the client comes back, and asks again).
   */
  private ask (holder: string, id: string, fence: number): Awaitable<boolean> {
    const failed = (err: unknown): boolean => {
      this.log.warn({ err }, 'session store: ask failed')
      return true
    }
    try {
      const asked = this.store.ask!(holder, id, fence)
      return isThenable(asked) ? Promise.resolve(asked).then((heard) => heard !== false, failed) : asked !== false
    } catch (err) {
      return failed(err)
    }
  }

  /**
   * Once the plugin is ready: another instance where the client of a session held here resumes may ask for it, and
   * any instance may post to one.
   */
  start (): Awaitable<void> {
    if (typeof this.store.listen !== 'function') return
    const listening = this.store.listen(this.instance, {
      asked: (id, fence) => this.surrender(id, fence),
      posted: (id) => {
        const session = this.held.get(id)
        if (session !== undefined) this.takePosts(session)
      }
    })
    if (!isThenable(listening)) {
      this.stopListening = listening
      return
    }
    return Promise.resolve(listening).then((stop) => { this.stopListening = stop })
  }

  /** As the plugin closes, after the drain. */
  async stop (): Promise<void> {
    if (this.stallTimer !== null) clearTimeout(this.stallTimer)
    this.stallTimer = null
    const stop = this.stopListening
    this.stopListening = null
    if (stop !== null) await stop()
  }

  /**
   * Runs once everything that can refuse the connection has accepted it: a
   * resume request is judged by the store's claim, and one that does not fit
   * its session in every respect begins a new session and leaves that one as
   * it was; one the store finds busy is to come back later. Synchronous when
   * the store is; throws or rejects when it fails.
   */
  prepare (route: SessionRoute, request: FastifyRequest, owner: string | null): Awaitable<Prepared | BusySession> {
    // Closing: the client is to begin or resume where it reconnects, once the handover is in the store (sooner, it
    // could find its session still held here).
    if (this.drained !== null) return this.drained.then(() => ({ retryMs: 0 }))
    // A store slow to answer, or a crowd of clients at once (a peer instance died): the ones past the cap come back
    // later, spread, rather than pile up paused sockets here and calls on the store.
    if (this.pending.size >= this.limits.maxPendingSessions) return THROTTLED
    const resume = (request.raw as { [kResume]?: ResumeRequest })[kResume]
    if (resume === undefined) return this.create(route, request.url, owner)
    // A session this instance holds is claimed with its count of messages sent; any other only if another instance
    // handed it over (the store then checks the count against the handover). A live session's route is told apart
    // here from another that shares its pattern (host constraints): the record names the pattern.
    const held = this.held.get(resume.session)
    let session = held?.route === route ? held : undefined
    const { durable } = route.resume
    const claimRequest: ClaimRequest = {
      id: resume.session,
      instance: this.instance,
      route: route.url,
      url: request.url,
      owner,
      secret: resume.secret,
      received: resume.received,
      sent: session === undefined ? null : session.sentKept,
      newSecret: this.nextSecret(),
      confirmMs: CONFIRM_MS,
      askMs: ASK_MS,
      ttlMs: holdMs(route),
      durable
    }
    const claim = this.store.claim(claimRequest)
    // `dead`: the claim after an ask nobody heard.
    const afterClaim = (result: ClaimResult, dead = false): Awaitable<Prepared | BusySession> => {
      // Held here by the look of it, but the store names another instance: that one took it over since, taking this
      // one for dead. What is left here is stale, and goes; the claim was judged as one from elsewhere.
      if (session !== undefined && !session.ended && (result.ok ? result.previous !== this.instance : result.refusal === 'held' && result.holder !== this.instance)) {
        this.fenced(session, session.fence)
        session = undefined
      }
      const ended = session?.ended === true
      if (result.ok && !ended) {
        return { record: result.record, session: session ?? null, handover: session === undefined ? result.handover : null, received: resume.received, previous: result.previous }
      }
      this.arriving.delete(resume.session)
      // The client's last welcome may have been lost with a connection not yet seen to close: a new session would
      // lose this one, so it comes back once the claim's window is over. Past it the claim waits only for a
      // connection whose client may never speak (a thief's, or a half-open one): no longer, or it could wait forever.
      if (!result.ok && result.refusal === 'busy' && Number(result.retryMs) > 0 && !ended) return { retryMs: Number(result.retryMs) }
      // Held by another live instance, where the client was last: that instance is asked to hand it over, and the
      // client to come back once it will have; at once anew when the store knows nobody hears under the holder's name
      // (it died): it cannot hand anything over, and the client would only come back until the holder's time is up.
      // Durable, it is taken over from the copy the dead holder kept, if it kept one: at once when nobody hears, or once
      // the holder's time to answer is over (on a Redis Cluster no ask can tell). A holder alive after all is fenced.
      const takeOver = (holder: string): Awaitable<Prepared | BusySession> => {
        const again = this.store.claim({ ...claimRequest, dead: holder })
        return isThenable(again) ? Promise.resolve(again).then((settled) => afterClaim(settled, true)) : afterClaim(again, true)
      }
      if (!result.ok && result.refusal === 'held' && Number(result.retryMs) > 0 && typeof this.store.ask === 'function' && !dead) {
        const retry = { retryMs: Math.min(Number(result.retryMs), ASK_RETRY_MS) }
        const { holder } = result
        const asked = this.ask(holder, resume.session, Number(result.fence))
        const heard = (reached: boolean): Awaitable<Prepared | BusySession> => reached ? retry : durable ? takeOver(holder) : refused()
        return isThenable(asked) ? Promise.resolve(asked).then(heard) : heard(asked)
      }
      if (!result.ok && result.refusal === 'held' && durable && !dead && result.holder !== '' && result.holder !== this.instance) return takeOver(result.holder)
      // Ended while the claim was on its way: the record it took has no session left to resume.
      if (result.ok) this.endRecord(result.record.id, result.record.fence)
      return refused()
    }
    const refused = (): Awaitable<Prepared> => {
      this.stats.sessions.resumeRefused++
      return this.create(route, request.url, owner)
    }
    if (!isThenable(claim)) return afterClaim(claim)
    if (session === undefined) {
      // Until it is opened here or given up: what is posted to it meanwhile is for this instance to take.
      this.arriving.add(resume.session)
      return this.track(Promise.resolve(claim).then(afterClaim, (err: unknown) => {
        this.arriving.delete(resume.session)
        throw err
      }))
    }
    const local = session
    this.claiming.add(local)
    const answered = (): boolean => this.claiming.delete(local)
    return this.track(Promise.resolve(claim).then((result) => {
      answered()
      // Its writes from now on name the claim's fence: one refused for naming the one before is no news.
      if (result.ok && !local.ended && result.previous === this.instance) local.fence = result.record.fence
      return afterClaim(result)
    }, (err: unknown) => {
      answered()
      throw err
    }))
  }

  /**
   * Makes the prepared session the socket's, before the application's
   * handler, so the welcome and every message replayed reach the client
   * before anything the handler sends. When there is no room for a new
   * session the socket is closed with 1013 instead (and the handler, seeing
   * it closing, is not called).
   */
  open (socket: ReliableSocket, route: SessionRoute, prepared: Prepared): void {
    // Read once at the upgrade, while the TCP socket surely still has a peer address.
    const ip = socket[kIp]
    const { record, session: claimed } = prepared
    this.arriving.delete(record.id)
    // Ended after the store's answer, before this turn (made room for another, overflowed): nothing is left to
    // resume, and a new session cannot begin without the store. The client comes back and begins one.
    if (claimed?.ended === true) {
      this.endRecord(record.id, record.fence)
      this.stats.sessions.resumeRefused++
      socket[kCause] = 'session'
      socket.close(1013, 'Session ended')
      return
    }
    if (prepared.handover !== null) {
      this.rebuild(socket, route, prepared, ip)
      return
    }
    if (claimed !== null) {
      this.takeOver(claimed)
      this.moveTo(claimed, ip)
      claimed.fence = record.fence
      claimed.resumed = true
      this.attach(claimed, socket, prepared.received, record.secret)
      this.stats.sessions.resumed++
      this.stats.sessions.replayed += claimed.unacknowledged
      return
    }
    const session = this.begin(socket, route, record, ip)
    if (session === null) return
    this.attach(session, socket, 0, record.secret)
    // Kept from the start: a claim after a crash finds it, however little happened in it.
    if (route.resume.durable) this.dirty(session)
  }

  /** A session another instance handed over: held here from now on, with its messages, as if it had never left. */
  private rebuild (socket: ReliableSocket, route: SessionRoute, prepared: Prepared, ip: string): void {
    const { record, handover } = prepared
    const session = this.begin(socket, route, record, ip)
    if (session === null) return
    if (!session.restore(handover!)) {
      this.overflow(session)
      socket[kCause] = 'session'
      socket.close(SESSION_OVERFLOW_CODE, 'Session buffer full')
      return
    }
    // Each topic's messages after where it stood are read from the topic's history, after the welcome.
    if (!this.topics.rejoin(session, handover!.topics)) {
      this.stats.sessions.rejected++
      socket[kCause] = 'session'
      this.end(session)
      socket.close(1013, 'Too many topics')
      return
    }
    session.resumed = true
    this.attach(session, socket, prepared.received, record.secret)
    this.stats.sessions.resumed++
    this.stats.sessions.claimedRemote++
    // Its instance died with it: what it kept goes on here.
    if (prepared.previous !== '') this.stats.sessions.takenOver++
    this.stats.sessions.replayed += session.unacknowledged
  }

  /**
   * The socket's from now on; its record is written again every half of `holdMs` while the socket lasts, on the
   * shared scheduler: the store lets a record go once its holder has not written it for that long (it died).
   */
  private attach (session: Session, socket: ReliableSocket, received: number, secret: string): void {
    session.attach(socket, received, secret)
    this.scheduler.remove(session)
    this.scheduler.add(session, performance.now() + holdMs(session.route) / 2)
  }

  /** A session held here from now on, within the caps; null, the record ended and the socket closed, when there is no room. */
  private begin (socket: ReliableSocket, route: SessionRoute, record: SessionRecord, ip: string): Session | null {
    if (!this.makeRoom(ip)) {
      this.endRecord(record.id, record.fence)
      this.stats.sessions.rejected++
      socket[kCause] = 'session'
      socket.close(1013, 'Too many sessions')
      return null
    }
    const session = new Session(record.id, route, this, record.url, record.owner, ip)
    session.fence = record.fence
    this.held.set(session.id, session)
    this.ipSessions(ip).add(session)
    this.stats.sessions.active++
    return session
  }

  /**
   * The socket closed while its session was prepared: a claimed session
   * stays as it was, away (its client still holds the secret it resumed
   * with) and expiring as it would have; one handed over goes back to the
   * store; a new one, whose secret nobody saw, ends.
   */
  abandon (route: SessionRoute, prepared: Prepared): void {
    const { record, session, handover } = prepared
    const ttlMs = route.resume.ttlMs
    this.arriving.delete(record.id)
    this.addressed.delete(record.id)
    // What another instance handed over was taken out of the store by the claim: back it goes, for wherever the
    // client resumes next.
    if (handover !== null) {
      this.settle('release', () => this.store.release(record.id, record.fence, ttlMs, handover))
      return
    }
    if (session === null) {
      this.endRecord(record.id, record.fence)
      return
    }
    // Still held here, away: another instance where the client resumes next asks for it.
    session.fence = record.fence
    this.write(session, AWAY)
  }

  /** The client was heard on its connection: the secret it resumed with is no good any more. */
  heard (session: Session): void {
    this.write(session, HEARD)
  }

  /** The session's socket closed: it waits `ttlMs` for the client to come back. */
  detach (session: Session, now: number): void {
    // Handed over to another instance as this one closes: nothing of it is left here.
    if (session.ended) return
    const ttlMs = session.route.resume.ttlMs
    session.detach()
    this.away.add(session)
    // Its address's sessions too are kept longest away first, for the per-address cap.
    const mine = this.perIp.get(session.ip)!
    mine.delete(session)
    mine.add(session)
    this.scheduler.remove(session)
    this.scheduler.add(session, now + ttlMs)
    this.write(session, AWAY)
    // Kept with its exact count: should this instance die while the client is away, nothing is marked redelivered.
    if (session.route.resume.durable) this.dirty(session)
  }

  /** The scheduler's callback for a session: connected, its record is kept; away, nobody came back in time. */
  due (session: Session, now: number): void {
    if (session.socket === null) {
      this.stats.sessions.expired++
      this.end(session)
      return
    }
    this.scheduler.add(session, now + holdMs(session.route) / 2)
    this.write(session, KEEP)
  }

  /**
   * A write of the session's holder. One that finds no record (the store was flushed, or evicted it) ends the session
   * at once, its client told with 4802: it could not be resumed, and its client should know now, not at its next
   * resume. A write refused because another claim took the session since is right to be.
   */
  private write (session: Session, changes: RecordChanges): void {
    const { id, fence } = session
    this.settle('write', () => {
      const { route } = session
      const result = this.store.write(id, fence, changes, changes === AWAY ? route.resume.ttlMs : holdMs(route))
      if (!isThenable(result)) return this.written(session, result, fence)
      return Promise.resolve(result).then((settled) => this.written(session, settled, fence))
    })
  }

  /** What a write found: messages posted to the session (their notice may have been lost), or no record. */
  private written (session: Session, result: WriteResult, fence: number): void {
    if (result === 'posted') this.takePosts(session)
    else if (result === 'fenced') this.fenced(session, fence)
    else this.lost(session, result)
  }

  /**
   * A write of claim `fence` was refused: another instance took the session since, taking this one for dead (its
   * listening connection was down, or it stalled past its time). It goes on there; nothing of it here may go on.
   */
  private fenced (session: Session, fence: number): void {
    if (session.ended || session.fence !== fence || this.claiming.has(session)) return
    this.stats.sessions.fenced++
    this.log.warn({ session: session.id }, 'session taken over by another instance')
    this.takeOver(session)
    this.letGo(session)
    this.topics.sessionEnded(session)
  }

  /**
   * Takes the messages posted to a session held here and sends them, in order: one take at a time per session, and
   * another once it is over if more were posted meanwhile. A take refused because another claim took the session
   * leaves them for that claim.
   */
  private takePosts (session: Session): void {
    if (session.ended || this.handing.has(session)) return
    // One take at a time; durable, not while a keep is on its way either (the store joins what it takes to the copy kept,
    // which a keep replaces).
    if (this.taking.has(session) || this.keeping.has(session)) {
      this.retake.add(session)
      return
    }
    // The store takes in the order it is called: this take has every post this instance made so far.
    const upTo = this.posts
    const { fence } = session
    this.settle('take', () => {
      const taken = this.store.take!(session.id, fence)
      if (!isThenable(taken)) return this.deliver(session, taken, upTo, fence)
      const delivered = Promise.resolve(taken).then((messages) => this.deliver(session, messages, upTo, fence)).finally(() => {
        this.taking.delete(session)
        if (this.retake.delete(session)) this.takePosts(session)
        else if (this.rekeep.delete(session)) this.keep(session)
      })
      this.taking.set(session, delivered.then(undefined, noop))
      return delivered
    })
  }

  private deliver (session: Session, taken: SessionMessage[] | 'fenced' | 'lost', upTo: number, fence: number): void {
    if (typeof taken === 'string') return this.written(session, taken, fence)
    if (session.ended) return
    if ((this.addressed.get(session.id) ?? Infinity) <= upTo) this.addressed.delete(session.id)
    for (const { data, binary } of taken) {
      if (!session.send(data, { binary })) return
      this.stats.sessions.postsTaken++
    }
  }

  private lost (session: Session, result: WriteResult): void {
    if (result !== 'lost' || session.ended) return
    this.stats.sessions.storeLost++
    this.log.warn({ session: session.id }, 'session store: record lost')
    this.endAndClose(session, STATE_LOST_CODE, 'Session state lost')
  }

  /** The client fell too far behind: the session ends, and its connection with a code that says so. */
  overflow (session: Session): void {
    this.stats.sessions.overflowed++
    this.endAndClose(session, SESSION_OVERFLOW_CODE, 'Session buffer full')
  }

  /** A topic the session subscribes to lost messages it promised: the session ends, its connection with 4801. */
  topicLost (session: Session): void {
    this.stats.sessions.topicGaps++
    this.endAndClose(session, TOPIC_GAP_CODE, 'Topic history lost')
  }

  private endAndClose (session: Session, code: number, reason: string): void {
    const socket = session.socket
    this.end(session)
    if (socket !== null) {
      socket[kCause] = 'session'
      socket.close(code, reason)
    }
  }

  /**
   * resume.durable: the session changed (a message to send, the client's count near its reservation); it is kept in
   * the store at the end of this turn, with whatever else the turn changed.
   */
  dirty (session: Session): void {
    if (session.ended || this.dirtied.has(session)) return
    if (this.dirtied.size === 0) queueMicrotask(() => this.keepDirtied())
    this.dirtied.add(session)
  }

  redelivered (): void {
    this.stats.sessions.redelivered++
  }

  private keepDirtied (): void {
    // Out of the set before its keep: one that lands at once may dirty the session again.
    for (const session of this.dirtied) {
      this.dirtied.delete(session)
      this.keep(session)
    }
  }

  /**
   * Writes the session's copy for its next holder (`SessionStore.keep`), one write at a time per session; what it
   * covers then goes on. One that fails is tried again shortly; until it lands, messages wait (within the session's
   * limits) and so does reading the client's. A session whose place in a topic is not known yet waits likewise.
   */
  private keep (session: Session): void {
    if (session.ended) return
    if (this.keeping.has(session) || this.taking.has(session)) {
      this.rekeep.add(session)
      return
    }
    const topics = this.topics.positions(session)
    if (topics === null) return this.stall(session)
    const kept = session.handOver(topics)
    // Away, nothing of the client's can arrive: the count is exact, and nothing is marked should this instance die.
    kept.reserved = session.received + (session.connected ? session.route.resume.receiveWindow : 0)
    const counts = { sent: session.sent, received: session.received, reserved: kept.reserved }
    const { fence } = session
    this.keeping.add(session)
    const landed = (result: WriteResult): void => {
      this.keeping.delete(session)
      if (result === 'ok' || result === 'posted') {
        session.landed(counts)
        if (this.retake.delete(session) || result === 'posted') this.takePosts(session)
      } else if (result === 'fenced' && !session.ended && (session.fence !== fence || this.claiming.has(session))) {
        // Refused for the fence of this instance's own claim of it, on its way or just won: kept again under that one.
        this.rekeep.delete(session)
        return this.stall(session)
      } else {
        this.written(session, result, fence)
      }
      if (this.rekeep.delete(session)) this.keep(session)
    }
    const failed = (err: unknown): void => {
      this.keeping.delete(session)
      this.rekeep.delete(session)
      this.log.warn({ err, session: session.id }, 'session store: keep failed')
      this.stall(session)
    }
    try {
      const result = this.store.keep!(session.id, fence, holdMs(session.route), kept, session.sentKept)
      if (isThenable(result)) Promise.resolve(result).then(landed, failed)
      else landed(result)
    } catch (err) {
      failed(err)
    }
  }

  /** Kept again in a while: one timer for the instance, as long as some session waits so. */
  private stall (session: Session): void {
    this.stalled.add(session)
    if (this.stallTimer !== null) return
    this.stallTimer = setTimeout(() => {
      this.stallTimer = null
      const stalled = [...this.stalled]
      this.stalled.clear()
      for (const waiting of stalled) this.dirty(waiting)
    }, STALL_RETRY_MS).unref()
  }

  /**
   * A session is about to keep a message of `bytes`: within the instance's
   * budget, after ending the sessions longest away if need be. False when
   * even that leaves no room.
   */
  reserve (session: Session, bytes: number): boolean {
    const cost = bytes + MESSAGE_OVERHEAD
    const budget = this.limits.sessionBufferBytes
    const sessions = this.stats.sessions
    while (sessions.bufferedBytes + cost > budget) {
      if (!this.evictOldest(this.away, session)) return false
    }
    sessions.bufferedBytes += cost
    return true
  }

  /** Acknowledged messages leave the budget. */
  release (bytes: number, count: number): void {
    this.stats.sessions.bufferedBytes -= bytes + count * MESSAGE_OVERHEAD
  }

  /**
   * The instance is closing, its sockets not told yet: with a store that outlives it, every session is released
   * with what its next holder needs, wherever its client resumes. What the client sends from here on is dropped
   * unacknowledged, so it sends that again there.
   */
  drain (timeoutMs: number): Awaitable<void> {
    if (!this.sharedStore) return
    const timers: NodeJS.Timeout[] = []
    const after = (ms: number): Promise<void> => new Promise((resolve) => { timers.push(setTimeout(resolve, ms).unref()) })
    // A session the store is settling now is opened first (its socket's turn comes before the drain's), then handed
    // over with the rest; a store call slower than half the time allowed holds back no other session's handover.
    const opened = this.pending.size === 0 ? null : Promise.race([Promise.all(this.pending), after(timeoutMs / 2)])
    const work = opened === null ? this.handOverAll() : opened.then(() => this.handOverAll())
    const drained = Promise.race([work, after(timeoutMs)]).then(() => { for (const timer of timers) clearTimeout(timer) })
    this.drained = drained
    return drained
  }

  private handOverAll (): Promise<unknown> {
    const releases: Array<Promise<void>> = []
    for (const session of this.held.values()) releases.push(this.handOver(session))
    return Promise.all(releases)
  }

  /**
   * Another instance asks for a session held here, as claim `fence`: its client resumed there. Its socket here, if
   * still open (the client found out first), is ended `replaced`, and the session handed over like at a drain. An ask
   * of an older claim (the client came back here since, or is coming back: its claim on its way) changes nothing.
   */
  private surrender (id: string, fence: number): void {
    const session = this.held.get(id)
    if (session === undefined || session.fence !== fence || this.claiming.has(session)) return
    this.stats.sessions.replacedRemote++
    this.takeOver(session)
    // A drain beginning meanwhile waits for it, as for a claim on its way.
    this.track(this.handOver(session))
  }

  /** `work`, noted as pending until it settles, whichever way. */
  private track<T> (work: Promise<T>): Promise<T> {
    const settled: Promise<void> = work.then(() => { this.pending.delete(settled) }, () => { this.pending.delete(settled) })
    this.pending.add(settled)
    return work
  }

  /**
   * Let go of here and released with what its next holder needs, taken before the session clears its messages (at
   * once, before the first await). One that fails leaves the store as it stands (the client's next resume begins
   * anew). Never rejects.
   */
  private async handOver (session: Session): Promise<void> {
    this.handing.add(session)
    // A take on its way has taken its messages out of the store already: they go with the handover once they are the
    // session's. Its client may come back here meanwhile (a claim on its way, or won): then the session stays.
    const taking = this.taking.get(session)
    if (taking !== undefined) {
      const { fence } = session
      await taking
      if (session.ended || session.fence !== fence || this.claiming.has(session)) {
        this.handing.delete(session)
        return
      }
    }
    const topics = this.topics.positions(session)
    if (topics === null) {
      this.log.warn({ session: session.id }, 'session not handed over: where it stands in a topic is not known yet (the topic broker has not read where the topic stood when it subscribed)')
      this.stats.sessions.handoverFailed++
      this.end(session)
      return
    }
    const handover = session.handOver(topics)
    // What waited to be kept goes with the handover: its next holder sends it.
    session.settleCallbacks(false)
    this.letGo(session)
    this.topics.sessionEnded(session)
    try {
      const result = await this.store.release(session.id, session.fence, session.route.resume.ttlMs, handover)
      if (result === 'ok') {
        this.stats.sessions.handedOver++
        return
      }
      this.log.warn({ session: session.id, result }, 'session store: handover refused')
    } catch (err) {
      this.log.warn({ err, session: session.id }, 'session store: handover failed')
    }
    this.stats.sessions.handoverFailed++
  }

  /** The instance is closing: its sessions, kept in its memory, end with it. */
  endAll (): void {
    for (const sessions of this.perIp.values()) {
      for (const session of sessions) this.end(session)
    }
  }

  private end (session: Session): void {
    this.endRecord(session.id, session.fence)
    this.letGo(session)
    if (session.socket !== null) session.socket[kSession] = null
    this.topics.sessionEnded(session)
  }

  /** Nothing of the session is held here any more, its record aside: it sends nothing more, and its messages leave the budget. */
  private letGo (session: Session): void {
    session.ended = true
    this.held.delete(session.id)
    this.handing.delete(session)
    this.addressed.delete(session.id)
    this.dirtied.delete(session)
    this.stalled.delete(session)
    this.stats.sessions.active--
    this.scheduler.remove(session)
    this.away.delete(session)
    this.leaveIp(session)
    const { bytes, count } = session.clear()
    this.release(bytes, count)
  }

  private create (route: SessionRoute, url: string, owner: string | null): Awaitable<Prepared> {
    const now = Date.now()
    const record: SessionRecord = {
      id: this.nextId(),
      route: route.url,
      url,
      owner,
      secret: this.nextSecret(),
      heldSecret: '',
      fence: 1,
      instance: this.instance,
      state: 'claimed',
      claimedUntil: now + CONFIRM_MS,
      expiresAt: now + holdMs(route),
      createdAt: now
    }
    const created = this.store.create(record)
    const prepared: Prepared = { record, session: null, handover: null, received: 0, previous: '' }
    return isThenable(created) ? this.track(Promise.resolve(created).then(() => prepared)) : prepared
  }

  private endRecord (id: string, fence: number): void {
    this.settle('end', () => this.store.end(id, fence))
  }

  /**
   * What became of a write is the record's business: with a store in memory
   * it cannot fail, and a write refused because another claim took the
   * session is right to be. One that failed leaves the record behind the
   * live session (a resume it should allow may be refused), so it is logged.
   */
  private settle (what: string, write: () => Awaitable<unknown>): void {
    const failed = (err: unknown): void => { this.log.warn({ err }, `session store: ${what} failed`) }
    try {
      const result = write()
      if (isThenable(result)) result.then(undefined, failed)
    } catch (err) {
      failed(err)
    }
  }

  /** Room for one more session from `ip`: the caps are met by ending sessions whose client is away, longest away first. */
  private makeRoom (ip: string): boolean {
    const { maxSessions, maxSessionsPerIp } = this.limits
    const mine = this.perIp.get(ip)
    if (mine !== undefined && mine.size >= maxSessionsPerIp && !this.evictOldest(mine, null)) return false
    return this.stats.sessions.active < maxSessions || this.evictOldest(this.away, null)
  }

  private evictOldest (sessions: Set<Session>, spare: Session | null): boolean {
    for (const session of sessions) {
      if (session.socket === null && session !== spare) {
        this.stats.sessions.evicted++
        this.end(session)
        return true
      }
    }
    return false
  }

  private ipSessions (ip: string): Set<Session> {
    let sessions = this.perIp.get(ip)
    if (sessions === undefined) {
      sessions = new Set()
      this.perIp.set(ip, sessions)
    }
    return sessions
  }

  /** A client may come back from another address (a phone changing networks): its session counts there from now on. */
  private moveTo (session: Session, ip: string): void {
    if (session.ip === ip) return
    this.leaveIp(session)
    session.ip = ip
    this.ipSessions(ip).add(session)
  }

  private leaveIp (session: Session): void {
    const sessions = this.perIp.get(session.ip)!
    sessions.delete(session)
    if (sessions.size === 0) this.perIp.delete(session.ip)
  }

  /**
   * A client resumes before the server noticed its old connection die (the
   * usual order: the client finds out first). The old socket is cut loose
   * and ended at once, so nothing more it delivers counts.
   */
  private takeOver (session: Session): void {
    const old = session.socket
    this.away.delete(session)
    if (old === null) {
      this.scheduler.remove(session)
      return
    }
    old[kSession] = null
    session.detach()
    old[kCause] = 'replaced'
    old.terminate()
  }
}

/** How long a record held by this instance lives after its last write of it. */
function holdMs (route: SessionRoute): number {
  return Math.max(route.resume.ttlMs, MIN_HOLD_MS)
}

function noop (): void {}
