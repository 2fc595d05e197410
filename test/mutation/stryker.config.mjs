// StrykerJS for the core modules. `npm run test:mutation` (test/mutation/run.mjs) runs it once per group of
// test/mutation/groups.mjs, setting MUTATION_GROUP; see docs/testing.md.
import { groups } from './groups.mjs'

const name = process.env.MUTATION_GROUP
const group = groups[name]
if (group === undefined) throw new Error(`MUTATION_GROUP must be one of ${Object.keys(groups).join(', ')}`)

export default {
  testRunner: 'tap',
  tap: {
    testFiles: group.tests,
    // tap's own TypeScript loader (ts-node, transpile only: see test/mutation/run.mjs for its environment).
    nodeArgs: ['--import', '@tapjs/typescript/import'],
    forceBail: true
  },
  checkers: ['typescript'],
  tsconfigFile: 'tsconfig.json',
  coverageAnalysis: 'perTest',
  mutate: group.mutate,
  incremental: true,
  incrementalFile: `test/mutation/${name}.incremental.json`,
  ignorePatterns: ['dist', 'coverage', '.tap', 'bench', 'test/mutation/*.json', 'reports'],
  reporters: ['clear-text', 'progress', 'json', 'html'],
  jsonReporter: { fileName: `reports/mutation/${name}.json` },
  htmlReporter: { fileName: `reports/mutation/${name}.html` },
  clearTextReporter: { allowColor: false, logTests: false },
  // Every test is timing-based on a shared machine: give a slow run room before calling it a timeout.
  timeoutMS: 10000,
  thresholds: { high: 95, low: 90, break: 90 },
  tempDirName: '.stryker-tmp'
}
