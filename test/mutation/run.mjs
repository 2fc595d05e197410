#!/usr/bin/env node
// Runs Stryker once per group of test/mutation/groups.mjs (all of them, or those named as arguments),
// incrementally, and prints each group's score and time. Exit code 1 if any group fails or scores below
// the threshold of test/mutation/stryker.config.mjs.
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { groups } from './groups.mjs'

// Arguments naming a group choose the groups; the others go to Stryker (`--concurrency 2`).
const args = process.argv.slice(2)
const names = args.filter((a) => Object.hasOwn(groups, a))
const extra = args.filter((a) => !Object.hasOwn(groups, a))
const env = {
  ...process.env,
  // What tap's TypeScript plugin sets before it runs a test file; Stryker runs them with plain node.
  TS_NODE_TRANSPILE_ONLY: '1',
  TS_NODE_PROJECT: 'tsconfig.json',
  // tap's 30 s per file is too short for the heaviest files on a loaded machine with instrumented code;
  // Stryker sets its own, tighter timeout for each mutant from the initial run.
  TAP_TIMEOUT: process.env.TAP_TIMEOUT ?? '120'
}

function score (name) {
  const report = JSON.parse(readFileSync(`reports/mutation/${name}.json`, 'utf8'))
  const count = {}
  for (const file of Object.values(report.files)) {
    for (const m of file.mutants) count[m.status] = (count[m.status] ?? 0) + 1
  }
  const detected = (count.Killed ?? 0) + (count.Timeout ?? 0)
  const undetected = (count.Survived ?? 0) + (count.NoCoverage ?? 0)
  return { pct: detected + undetected === 0 ? 100 : 100 * detected / (detected + undetected), count }
}

const rows = []
let failed = false
for (const name of names.length > 0 ? names : Object.keys(groups)) {
  const started = Date.now()
  const run = spawnSync('npx', ['stryker', 'run', 'test/mutation/stryker.config.mjs', '--incremental', ...extra], {
    stdio: 'inherit', env: { ...env, MUTATION_GROUP: name }
  })
  const seconds = Math.round((Date.now() - started) / 1000)
  if (run.status !== 0) failed = true
  let result = '(no report)'
  try {
    const { pct, count } = score(name)
    result = `${pct.toFixed(1)} %  ${JSON.stringify(count)}`
  } catch {}
  rows.push(`${name.padEnd(20)} ${String(seconds).padStart(5)} s  ${result}${run.status === 0 ? '' : '  FAILED'}`)
}
console.log('\nmutation score per group (killed + timeout) / (killed + timeout + survived + no coverage):')
for (const row of rows) console.log(row)
process.exit(failed ? 1 : 0)
