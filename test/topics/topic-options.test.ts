// The topics' options, checked at registration, and the health route's view of the broker.
import t from 'tap'
import { healthResponse } from '../../lib/observability/health'
import { StatsCollector } from '../../lib/observability/stats'
import { bootWith, start } from '../helpers/helpers'

const CODE = 'FST_RELIABLE_WS_INVALID_OPTION'

const bad: Array<[string, unknown, RegExp]> = [
  ['no subscriptions at all', { limits: { maxSubscriptions: 0 } }, /"limits\.maxSubscriptions": must be an integer from 1 to 100000/],
  ['unbounded subscriptions', { limits: { maxSubscriptions: Infinity } }, /"limits\.maxSubscriptions"/],
  ['a fractional subscription cap', { limits: { maxSubscriptions: 2.5 } }, /"limits\.maxSubscriptions"/],
  ['topics not an object', { topics: true }, /"topics": must be an object/],
  ['a misspelt topics field', { topics: { maxTopicLen: 10 } }, /"topics\.maxTopicLen": unknown option/],
  ['an empty topic length', { topics: { maxTopicLength: 0 } }, /"topics\.maxTopicLength": must be an integer from 1 to 4096 bytes/],
  ['no topics at all', { topics: { maxTopics: 0 } }, /"topics\.maxTopics": must be an integer from 1 to 10000000 topics/],
  ['an unbounded fan-out queue', { topics: { maxQueuedMessages: Infinity } }, /"topics\.maxQueuedMessages": must be an integer from 1 to 10000000 messages/],
  ['a fractional history', { topics: { historySize: 1.5 } }, /"topics\.historySize": must be an integer from 1 to 10000000 messages/],
  ['a history kept for 10 ms', { topics: { historyTtlMs: 10 } }, /"topics\.historyTtlMs": must be an integer from 1000/],
  ['a health flag that is not a boolean', { topics: { healthChecksBroker: 'yes' } }, /"topics\.healthChecksBroker": must be a boolean/]
]

for (const [name, options, message] of bad) {
  t.test(`registration fails: ${name}`, async (t) => {
    await t.rejects(bootWith(options as any), { code: CODE, message })
  })
}

t.test('maxSubscriptions is the instance\'s: a route cannot set it', async (t) => {
  await t.rejects(bootWith({}, (app) => {
    app.get('/ws', { websocket: true, config: { reliable: { limits: { maxSubscriptions: 5 } as any } } }, () => {})
  }), { code: CODE, message: /"config\.reliable of \/ws\.limits\.maxSubscriptions": unknown option/ })
})

t.test('good topic options register', async (t) => {
  await t.resolves(bootWith({ limits: { maxSubscriptions: 1 }, topics: { maxTopicLength: 4096, maxTopics: 10_000_000, maxQueuedMessages: 1, historySize: 1, historyTtlMs: 1000, healthChecksBroker: false } }))
})

t.test('the health route reports the broker, and answers 503 while it is not up unless told not to', async (t) => {
  const { app } = await start({ health: true }, () => {})
  t.teardown(() => app.close())
  const response = await app.inject('/health/ws')
  t.equal(response.statusCode, 200)
  t.match(response.json(), { status: 'ok', broker: { state: 'up', lagMs: 0 } })

  const stats = new StatsCollector()
  stats.broker = { state: 'connecting', lagMs: 0 }
  t.match(healthResponse(stats, undefined, true), { statusCode: 503, body: { status: 'broker-connecting', broker: { state: 'connecting' } } })
  t.match(healthResponse(stats, undefined, false), { statusCode: 200, body: { status: 'ok' } })
  stats.draining = true
  t.match(healthResponse(stats, undefined, true), { statusCode: 503, body: { status: 'draining' } })
})
