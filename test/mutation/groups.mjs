// Mutation testing runs one group at a time: each core module with the test files that exercise it
// directly. Running every test file against every mutant would take the whole suite (~4 min) per mutant;
// within a group Stryker still runs only the files that reach the mutated line (perTest coverage).
export const groups = {
  scheduler: {
    mutate: ['lib/scheduler.ts'],
    tests: ['test/scheduler.test.ts', 'test/scheduler.mutants.test.ts', 'test/heartbeat.test.ts', 'test/timeouts.test.ts', 'test/fragment-timeout.test.ts']
  },
  heartbeat: {
    mutate: ['lib/heartbeat.ts', 'lib/deadlines.ts'],
    tests: ['test/heartbeat.test.ts', 'test/heartbeat.mutants.test.ts', 'test/timeouts.test.ts', 'test/fragment-timeout.test.ts', 'test/logging.test.ts']
  },
  backpressure: {
    mutate: ['lib/backpressure.ts'],
    tests: ['test/backpressure.test.ts', 'test/backpressure.mutants.test.ts', 'test/logging.test.ts']
  },
  'rate-limiter': {
    mutate: ['lib/rate-limiter.ts'],
    tests: ['test/rate-limit.test.ts', 'test/rate-limit.mutants.test.ts', 'test/control-flood.test.ts']
  },
  sessions: {
    mutate: ['lib/session.ts', 'lib/session-registry.ts'],
    tests: ['test/sessions.test.ts', 'test/sessions.mutants.test.ts', 'test/hostile-sessions.test.ts']
  },
  subprotocol: {
    mutate: ['lib/subprotocol.ts'],
    tests: ['test/subprotocol.test.ts', 'test/subprotocol.mutants.test.ts', 'test/control-flood.test.ts', 'test/sessions.test.ts', 'test/heartbeat.test.ts']
  },
  'connection-limiter': {
    mutate: ['lib/connection-limiter.ts'],
    tests: ['test/connection-limits.test.ts', 'test/connection-limits.mutants.test.ts']
  },
  'client-queues': {
    mutate: ['lib/client/backoff.ts', 'lib/client/outbox.ts'],
    tests: ['test/client-policy.test.ts', 'test/client-queues.mutants.test.ts', 'test/client.test.ts']
  },
  client: {
    mutate: ['lib/client/reliable-websocket.ts'],
    tests: ['test/client.test.ts', 'test/client.mutants.test.ts', 'test/client-policy.test.ts', 'test/client-refused.test.ts', 'test/sessions.test.ts', 'test/hostile-sessions.test.ts']
  }
}
