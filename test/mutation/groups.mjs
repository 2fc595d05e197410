// Mutation testing runs one group at a time: each core module with the test files that exercise it
// directly. Running every test file against every mutant would take the whole suite (~4 min) per mutant;
// within a group Stryker still runs only the files that reach the mutated line (perTest coverage).
export const groups = {
  scheduler: {
    mutate: ['lib/timing/scheduler.ts'],
    tests: ['test/timing/scheduler.test.ts', 'test/timing/scheduler.mutants.test.ts', 'test/timing/heartbeat.test.ts', 'test/timing/timeouts.test.ts', 'test/timing/fragment-timeout.test.ts']
  },
  heartbeat: {
    mutate: ['lib/timing/heartbeat.ts', 'lib/timing/deadlines.ts'],
    tests: ['test/timing/heartbeat.test.ts', 'test/timing/heartbeat.mutants.test.ts', 'test/timing/timeouts.test.ts', 'test/timing/fragment-timeout.test.ts', 'test/observability/logging.test.ts']
  },
  backpressure: {
    mutate: ['lib/limits/backpressure.ts'],
    tests: ['test/limits/backpressure.test.ts', 'test/limits/backpressure.mutants.test.ts', 'test/observability/logging.test.ts']
  },
  'rate-limiter': {
    mutate: ['lib/limits/rate-limiter.ts'],
    tests: ['test/limits/rate-limit.test.ts', 'test/limits/rate-limit.mutants.test.ts', 'test/limits/control-flood.test.ts']
  },
  sessions: {
    mutate: ['lib/sessions/session.ts', 'lib/sessions/session-registry.ts', 'lib/sessions/session-store.ts'],
    tests: ['test/sessions/sessions.test.ts', 'test/sessions/sessions.mutants.test.ts', 'test/sessions/hostile-sessions.test.ts', 'test/sessions/memory-store.test.ts', 'test/sessions/async-store.test.ts', 'test/sessions/handover.test.ts', 'test/topics/topics.test.ts']
  },
  subprotocol: {
    mutate: ['lib/messages/subprotocol.ts'],
    tests: ['test/messages/subprotocol.test.ts', 'test/messages/subprotocol.mutants.test.ts', 'test/limits/control-flood.test.ts', 'test/sessions/sessions.test.ts', 'test/timing/heartbeat.test.ts']
  },
  'connection-limiter': {
    mutate: ['lib/limits/connection-limiter.ts'],
    tests: ['test/limits/connection-limits.test.ts', 'test/limits/connection-limits.mutants.test.ts']
  },
  'client-queues': {
    mutate: ['lib/client/backoff.ts', 'lib/client/outbox.ts'],
    tests: ['test/client/client-policy.test.ts', 'test/client/client-queues.mutants.test.ts', 'test/client/client.test.ts']
  },
  client: {
    mutate: ['lib/client/reliable-websocket.ts'],
    tests: ['test/client/client.test.ts', 'test/client/client.mutants.test.ts', 'test/client/client-policy.test.ts', 'test/client/client-refused.test.ts', 'test/sessions/sessions.test.ts', 'test/sessions/hostile-sessions.test.ts']
  }
}
