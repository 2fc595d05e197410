// How the tests find the programs from outside npm they run (Chromium, redis-server, nginx), and what they do without them.
import t from 'tap'
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { find, locate, needs, needsAll } from '../helpers/programs'
import type { Program } from '../helpers/programs'

const dir = mkdtempSync(join(tmpdir(), 'programs-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

function file (path: string, mode: number): string {
  mkdirSync(join(path, '..'), { recursive: true })
  writeFileSync(path, '#!/bin/sh\n')
  chmodSync(path, mode)
  return path
}

const installed = file(join(dir, 'usr', 'bin', 'browser'), 0o755)
const onPath = file(join(dir, 'path', 'browser-beta'), 0o755)
const notExecutable = file(join(dir, 'other', 'browser-beta'), 0o644)
mkdirSync(join(dir, 'folder', 'browser-beta'), { recursive: true })
const BROWSER: Program = { name: 'Browser', env: 'BROWSER_PATH', paths: [join(dir, 'missing'), installed], commands: ['browser-beta'], install: 'apt-get install browser' }
const ELSEWHERE: Program = { ...BROWSER, paths: [join(dir, 'missing')] }

t.test('the variable, when set, is the only place looked at', async (t) => {
  t.equal(locate(BROWSER, { BROWSER_PATH: onPath }), onPath)
  t.equal(locate(BROWSER, { BROWSER_PATH: join(dir, 'nowhere') }), null, 'set to nothing there: missing, though installed')
  t.equal(locate(BROWSER, { BROWSER_PATH: notExecutable }), null, 'a file that cannot run is not the program')
  t.equal(locate(BROWSER, { BROWSER_PATH: '' }), installed, 'set but empty: as if unset')
})

t.test('then the usual paths, then PATH, skipping what cannot run', async (t) => {
  t.equal(locate(BROWSER, {}), installed)
  const path = [join(dir, 'folder'), join(dir, 'other'), '', join(dir, 'path')].join(delimiter)
  t.equal(locate(ELSEWHERE, { PATH: path }), onPath, 'a directory or a file without the execute bit is passed over')
  t.equal(locate(ELSEWHERE, { PATH: join(dir, 'other') }), null)
  t.equal(locate(ELSEWHERE, {}), null, 'no PATH at all')
})

t.test('missing: a skip with one line saying what to install, but a failure under CI', async (t) => {
  const line = 'needs Browser — apt-get install browser, or set BROWSER_PATH'
  t.same(needs(ELSEWHERE, {}), { skip: line })
  t.same(needs(BROWSER, {}), {}, 'present: the test runs')
  for (const CI of ['', '0', 'false']) t.same(needs(ELSEWHERE, { CI }), { skip: line }, `CI=${CI} is not CI`)
  for (const CI of ['true', '1']) {
    t.same(needs(ELSEWHERE, { CI }), {}, `CI=${CI}: the test runs, to fail`)
    t.throws(() => find(ELSEWHERE, { CI }), { message: `${line} (CI is set: a missing program fails the run)` })
  }
  t.equal(find(BROWSER, {}), installed)
})

t.test('a test that runs several programs is skipped with one line naming every one missing', async (t) => {
  const OTHER: Program = { ...ELSEWHERE, name: 'Other', env: 'OTHER_PATH', install: 'apt-get install other' }
  t.same(needsAll([ELSEWHERE, BROWSER, OTHER], {}), {
    skip: 'needs Browser — apt-get install browser, or set BROWSER_PATH; needs Other — apt-get install other, or set OTHER_PATH'
  })
  t.same(needsAll([BROWSER], {}), {}, 'all present: the test runs')
  t.same(needsAll([ELSEWHERE, OTHER], { CI: 'true' }), {}, 'under CI it runs, to fail')
})
