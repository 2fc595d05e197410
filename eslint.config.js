'use strict'

const neostandard = require('neostandard')

module.exports = [
  ...neostandard({
    ts: true,
    ignores: ['dist/**', 'coverage/**', '.tap/**', '.stryker-tmp/**', 'reports/**']
  }),
  {
    // The dashboard's page script runs in the browser.
    files: ['examples/dashboard/**'],
    languageOptions: { globals: { document: 'readonly', location: 'readonly' } }
  },
  {
    // A loop waiting on a flag that a promise callback flips: the rule cannot see the asynchronous write.
    files: ['test/**', 'bench/**'],
    rules: { 'no-unmodified-loop-condition': 'off' }
  },
  {
    // prom-client's metric constructors register the metric in the registry they are given: that is their use.
    files: ['lib/observability/metrics.ts'],
    rules: { 'no-new': 'off' }
  }
]
