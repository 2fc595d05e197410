// The client's policies on their own: backoff, the close-code table, the send queue, option checks.
import t from 'tap'
import WebSocket from 'ws'
import { CLIENT_DEFAULTS, InvalidOptionError, ReliableWebSocket, isRetryable } from '../../lib/client'
import { Backoff } from '../../lib/client/backoff'
import type { BackoffSettings } from '../../lib/client/backoff'
import { resolveClientOptions } from '../../lib/client/options'
import { Outbox, byteLength } from '../../lib/client/outbox'

/** A seeded random source (mulberry32), so each run draws the same delays. */
function seeded (seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

function backoff (overrides: Partial<BackoffSettings> = {}): Backoff {
  return new Backoff({ ...CLIENT_DEFAULTS.backoff, random: seeded(42), ...overrides })
}

t.test('full jitter: each delay lies under a ceiling that doubles up to the cap', async (t) => {
  const b = backoff()
  for (let attempt = 0; attempt < 12; attempt++) {
    const ceiling = Math.min(30_000, 1000 * 2 ** attempt)
    const delay = b.next()
    t.ok(delay >= 0 && delay < ceiling, `attempt ${attempt + 1}: ${delay.toFixed(0)} ms in [0, ${ceiling})`)
  }
  t.equal(b.attempt, 12)
})

t.test('delays grow with the attempt: the mean over many clients doubles until the cap', async (t) => {
  const means: number[] = []
  for (let attempt = 0; attempt < 7; attempt++) {
    let sum = 0
    for (let client = 0; client < 2000; client++) {
      const b = backoff({ random: seeded(client * 7919 + 1) })
      b.attempt = attempt
      sum += b.next()
    }
    means.push(sum / 2000)
  }
  for (let attempt = 0; attempt < 5; attempt++) {
    const ratio = means[attempt + 1] / means[attempt]
    t.ok(ratio > 1.8 && ratio < 2.2, `mean ${means[attempt].toFixed(0)} → ${means[attempt + 1].toFixed(0)} ms (×${ratio.toFixed(2)})`)
  }
  t.ok(Math.abs(means[6] - 15_000) < 1000, `at the cap the mean is half of it (${means[6].toFixed(0)} ms)`)
})

t.test('at the cap clients spread evenly instead of piling up at it', async (t) => {
  const delays: number[] = []
  for (let client = 0; client < 5000; client++) {
    const b = backoff({ random: seeded(client + 1), initialDelayMs: 1000, maxDelayMs: 5000 })
    b.attempt = 20
    delays.push(b.next())
  }
  const buckets = new Array(10).fill(0)
  for (const delay of delays) buckets[Math.floor(delay / 500)]++
  for (const [i, count] of buckets.entries()) {
    t.ok(count > 400 && count < 600, `${i * 500}-${i * 500 + 500} ms: ${count} of 5000 (a tenth is 500)`)
  }
  t.equal(delays.filter((delay) => delay >= 4950).length < 100, true, 'the top 1 % of the range holds about 1 % of clients')
})

t.test('equal and no jitter, and factor^attempt past Infinity', async (t) => {
  const equal = backoff({ jitter: 'equal' })
  for (let attempt = 0; attempt < 6; attempt++) {
    const ceiling = Math.min(30_000, 1000 * 2 ** attempt)
    const delay = equal.next()
    t.ok(delay >= ceiling / 2 && delay < ceiling, `equal jitter: ${delay.toFixed(0)} in [${ceiling / 2}, ${ceiling})`)
  }
  const none = backoff({ jitter: 'none' })
  t.same([none.next(), none.next(), none.next()], [1000, 2000, 4000])
  none.attempt = 5000
  t.equal(none.next(), 30_000, 'an overflowing power still stops at the cap')
})

t.test('the count resets only after a connection stayed up minUptimeMs', async (t) => {
  const b = backoff({ minUptimeMs: 5000 })
  b.next(); b.next(); b.next()
  b.connectionEnded(4999)
  t.equal(b.attempt, 3, 'a short-lived connection keeps the count (a flapping server backs off)')
  b.connectionEnded(5000)
  t.equal(b.attempt, 0)
  const limited = backoff({ maxRetries: 2 })
  t.equal(limited.exhausted, false)
  limited.next(); limited.next()
  t.equal(limited.exhausted, true)
})

t.test('the close-code table', async (t) => {
  const retried = [1001, 1005, 1006, 1011, 1012, 1013, 1014, 3001, 3008, 3999, 4500, 4999]
  const final = [1000, 1002, 1003, 1007, 1008, 1009, 1010, 1015, 3000, 3003, 4000, 4321, 4499]
  for (const code of retried) t.equal(isRetryable({ code, reason: '', wasClean: true }), true, `${code} is retried`)
  for (const code of final) t.equal(isRetryable({ code, reason: '', wasClean: true }), false, `${code} is final`)
})

t.test('after slowAfter failed upgrades in a row, delays are drawn under slowDelayMs until one succeeds', async (t) => {
  const b = backoff({ jitter: 'none', initialDelayMs: 10, maxDelayMs: 40, slowAfter: 3, slowDelayMs: 5000 })
  const delays: number[] = []
  for (let i = 0; i < 5; i++) {
    b.attemptStarted()
    delays.push(b.next())
  }
  t.same(delays, [10, 20, 5000, 5000, 5000], 'the third failure in a row and every one after wait the slow ceiling')
  b.attemptStarted()
  b.upgraded()
  t.equal(b.next(), 40, 'an upgrade that succeeded, whatever became of it, ends the slow phase (the attempt count stays)')
  const full = backoff({ slowAfter: 1, slowDelayMs: 60_000 })
  full.attemptStarted()
  const delay = full.next()
  t.ok(delay >= 0 && delay < 60_000, `the slow delay is jittered as any other: ${delay.toFixed(0)} ms`)
  const defaults = resolveClientOptions({ WebSocket }).backoff
  t.same([defaults.slowAfter, defaults.slowDelayMs], [10, 300_000], 'by default: after 10, under 5 minutes')
  t.equal(resolveClientOptions({ WebSocket, backoff: { maxDelayMs: 600_000 } }).backoff.slowDelayMs, 600_000,
    'left unset, the slow ceiling is never below maxDelayMs')
})

t.test('the HTTP status table: a refused upgrade is final on 4xx but 408 and 429', async (t) => {
  const retried = [408, 429, 500, 502, 503, 504, 200, 302]
  const final = [400, 401, 403, 404, 405, 410, 426, 451, 499]
  // The status decides, whatever the code says (a refused upgrade always reads 1006).
  for (const status of retried) t.equal(isRetryable({ code: 1000, reason: '', wasClean: false, status }), true, `${status} is retried`)
  for (const status of final) t.equal(isRetryable({ code: 1006, reason: '', wasClean: false, status }), false, `${status} is final`)
})

t.test('the outbox is bounded, ordered and weighs its messages in bytes', async (t) => {
  const outbox = new Outbox(3)
  t.ok(outbox.push('a'))
  t.ok(outbox.push(new Uint8Array(10)))
  t.ok(outbox.push(new ArrayBuffer(5)))
  t.notOk(outbox.push('refused'), 'a fourth is refused, the first three kept')
  t.equal(outbox.bytesFrom(0), 16)
  t.equal(outbox.bytesFrom(1), 15)
  t.same(outbox.take(1), ['a'])
  t.equal(outbox.at(1).constructor, ArrayBuffer)
  t.equal(outbox.clear().length, 2)
  t.equal(outbox.length, 0)
  t.equal(byteLength('é€😀'), 2 + 3 + 4, 'text is counted in UTF-8')
  t.equal(byteLength('\ud800x'), 3 + 1, 'a lone surrogate is sent as U+FFFD')
  t.equal(byteLength(new Blob(['abc'])), 3)
})

t.test('bad options throw a coded error before any connection', async (t) => {
  const cases: Array<[object, RegExp]> = [
    [{ backoff: { factor: 0.5 } }, /backoff\.factor/],
    [{ backoff: { jitter: 'half' } }, /backoff\.jitter/],
    [{ backoff: { initialDelayMs: 5000, maxDelayMs: 1000 } }, /backoff\.maxDelayMs/],
    [{ backoff: { maxRetries: 1.5 } }, /backoff\.maxRetries/],
    [{ backoff: { slowAfter: 0 } }, /backoff\.slowAfter/],
    [{ backoff: { slowAfter: 2.5 } }, /backoff\.slowAfter: must be an integer/],
    [{ backoff: { maxDelayMs: 60_000, slowDelayMs: 30_000 } }, /backoff\.slowDelayMs: must not be below maxDelayMs/],
    [{ backoff: { random: 4 } }, /backoff\.random/],
    [{ backoff: 'fast' }, /backoff: must be an object/],
    [{ connectTimeoutMs: Infinity }, /connectTimeoutMs/],
    [{ heartbeat: { intervalMs: 0 } }, /heartbeat\.intervalMs/],
    [{ queue: { maxMessages: -1 } }, /queue\.maxMessages/],
    [{ protocols: [1] }, /protocols/],
    [{ subprotocol: 'yes' }, /subprotocol/],
    [{ shouldReconnect: true }, /shouldReconnect/]
  ]
  for (const [options, message] of cases) {
    t.throws(() => new ReliableWebSocket('ws://127.0.0.1:9/', { WebSocket, ...options }),
      { name: 'TypeError', code: 'FST_RELIABLE_WS_INVALID_OPTION', message }, JSON.stringify(options))
  }
  const global = globalThis as { WebSocket?: unknown }
  const own = global.WebSocket
  delete global.WebSocket // Node 22 has one; the check is for runtimes without
  try {
    t.throws(() => new ReliableWebSocket('ws://127.0.0.1:9/'), { message: /no global WebSocket/ }, 'no WebSocket class at all')
  } finally {
    if (own !== undefined) global.WebSocket = own
  }
  t.type(new InvalidOptionError('x', 'y'), TypeError)
})

t.test('the outbox counts UTF-8 at its boundaries: U+007F one byte, U+0080 two, U+07FF two, U+0800 three', async (t) => {
  t.equal(byteLength('\u007f'), 1)
  t.equal(byteLength('\u0080'), 2)
  t.equal(byteLength('\u07ff'), 2)
  t.equal(byteLength('\u0800'), 3)
  t.equal(byteLength('\uffff'), 3)
  for (const text of ['\u007f', '\u0080', '\u07ff', '\u0800', '\uffff']) t.equal(byteLength(text), Buffer.byteLength(text), `as Node counts ${JSON.stringify(text)}`)
})
