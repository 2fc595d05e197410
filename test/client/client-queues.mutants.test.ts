import t from 'tap'
import { Backoff } from '../../lib/client/backoff'
import { byteLength } from '../../lib/client/outbox'

// Behaviours that mutation testing found unchecked (docs/testing.md).

t.test("'equal' jitter spans half the ceiling to the ceiling, in proportion to the random draw", async (t) => {
  const delays = [0, 0.5, 0.999].map((draw) => new Backoff({
    initialDelayMs: 1000, maxDelayMs: 30_000, factor: 2, jitter: 'equal', maxRetries: 10, minUptimeMs: 5000, slowAfter: Infinity, slowDelayMs: 30_000, random: () => draw
  }).next())
  t.same(delays, [500, 750, 999.5])
})

t.test('text is counted in UTF-8 bytes, as the wire carries it, at every boundary of the encoding', async (t) => {
  const samples = [
    '\u07ff', // last two-byte character
    '\u0800', // first three-byte character
    '\ud7ff', // just below the surrogates
    '\ud800\udc00', // first surrogate pair: four bytes
    '\udbff\udfff', // last surrogate pair
    '\ud83d\ude00', // an emoji
    '\ud800', // a lone high surrogate becomes U+FFFD: three bytes
    '\udc00', // so does a lone low one
    '\ud800x', // a high surrogate followed by something else
    '\udbffa\udc00', // and a low one out of place
    '\ue000', // just above the surrogates
    // Runs of characters above U+07FF: a pair is recognised only from its high half, and skipping the low half
    // must not skip anything else.
    '\u0800\u0800',
    '\ud800\u0800',
    '\ue000\ue000',
    '\udc00\udc00',
    '\ue000\udc00',
    '\udbff\udc00\u0800',
    '\u0800\udc00'
  ]
  for (const text of samples) {
    const code = [...text].map((c) => c.codePointAt(0)!.toString(16)).join(' ')
    t.equal(byteLength(text), Buffer.byteLength(text, 'utf8'), `U+${code}`)
  }
})
