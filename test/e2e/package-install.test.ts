// Needs the build (`npm test` runs it first) and the npm registry (or npm's cache): packs the package as npm would
// publish it, checks the tarball with arethetypeswrong, and installs it into fresh applications, each with its own
// fastify, prom-client and ws: TypeScript compiled as an ES module and as CommonJS (type-checked by this project's
// TypeScript and by TypeScript 7), and plain JavaScript. Each starts a server, talks to it with the client and reads
// the plugin's metrics from its own prom-client registry. Takes a minute or so.
import { execFile } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'

const root = join(__dirname, '..', '..')
const fixtures = join(__dirname, '..', 'fixtures', 'consumers')
const exec = promisify(execFile)
const npm = 'npm'
const install = ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error']
// The same for both: NodeNext compiles app.ts as the nearest package.json's "type" says.
const tsconfig = {
  compilerOptions: {
    module: 'NodeNext',
    moduleResolution: 'NodeNext',
    target: 'ES2022',
    strict: true,
    outDir: 'out',
    rootDir: '.',
    types: ['node'],
    // Checks the package's own declarations too, as a strict application may.
    skipLibCheck: false
  },
  include: ['app.ts']
}
const expected = { reply: { echo: { hi: 1 }, named: true }, sameExport: true, opened: true }

t.setTimeout(600_000)

const work = mkdtempSync(join(tmpdir(), 'fastify-reliable-ws-install-'))
t.teardown(() => rmSync(work, { recursive: true, force: true }))

// Through env(1), which drops the test runner's loaders that it puts in NODE_OPTIONS for every Node child process:
// the applications (and TypeScript 7's ES module launcher, which they break) run as they would on their own.
// Lets a promise be started now and awaited later without an unhandled rejection in between.
const settle = (promise: Promise<string>): Promise<() => string> =>
  promise.then((value) => () => value, (err: Error) => () => { throw err })

async function run (cwd: string, file: string, args: string[]): Promise<string> {
  const { stdout } = await exec('env', ['-u', 'NODE_OPTIONS', file, ...args], { cwd, maxBuffer: 16 * 1024 * 1024 })
  return stdout
}

function project (name: string, type: 'module' | 'commonjs', files: Record<string, string | object>): string {
  const dir = join(work, name)
  mkdirSync(dir)
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name, private: true, type }))
  for (const [file, content] of Object.entries(files)) {
    if (typeof content === 'string') cpSync(content, join(dir, file))
    else writeFileSync(join(dir, file), JSON.stringify(content))
  }
  return dir
}

t.test('the package as installed from its tarball', async (t) => {
  t.ok(existsSync(join(root, 'dist/index.js')), 'run `npm run build` first (npm test does)')
  const started = Date.now()
  // Scripts off: dist/ is the build `npm test` made (`prepare` would rebuild it while other tests read it).
  const [packed] = JSON.parse(await run(root, npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', work]))
  const tarball = join(work, packed.filename)
  const files: string[] = packed.files.map((file: { path: string }) => file.path)

  t.test('ships the public files only', async (t) => {
    t.same(files.filter((file) => file.endsWith('.d.ts') || file.endsWith('.d.mts')).sort(), [
      'dist/lib/client/backoff.d.ts', 'dist/lib/client/close-codes.d.ts', 'dist/lib/client/events.d.ts', 'dist/lib/client/index.d.ts',
      'dist/lib/client/options.d.ts', 'dist/lib/client/outbox.d.ts', 'dist/lib/client/reliable-websocket.d.ts', 'dist/lib/protocol/protocol.d.ts',
      'types/index.d.ts', 'types/ws-esm.d.mts'
    ], 'the public types and what they import')
    t.ok(files.includes('dist/index.js') && files.includes('dist/browser/client.mjs'), 'the entry points')
    t.notOk(files.some((file) => file.startsWith('test/') || file.startsWith('lib/') || file.endsWith('.ts.map')), 'no sources or tests')
  })

  // attw exits non-zero on any problem.
  const attw = settle(run(root, join(root, 'node_modules/.bin/attw'), [tarball, '--format', 'ascii']))
  t.test('arethetypeswrong finds no problem in . and ./client', async (t) => {
    t.match((await attw)(), /No problems found/)
  })

  const deps = [tarball, 'fastify@5', 'prom-client@15', 'ws@8']
  const esm = project('esm-ts', 'module', { 'app.ts': join(fixtures, 'app.ts'), 'tsconfig.json': tsconfig })
  const cjs = project('cjs-ts', 'commonjs', { 'app.ts': join(fixtures, 'app.ts'), 'tsconfig.json': tsconfig })
  const js = project('esm-js', 'module', { 'app.mjs': join(fixtures, 'app.mjs') })
  const ts7 = project('typescript-7', 'commonjs', {})
  // The same TypeScript as this project's, and its @types/node: the package itself brings @types/ws.
  const tsVersion = require('typescript/package.json').version
  await Promise.all([
    run(esm, npm, [...install, ...deps, `typescript@${tsVersion}`, '@types/node@20']),
    run(cjs, npm, [...install, ...deps, `typescript@${tsVersion}`, '@types/node@20']),
    run(js, npm, [...install, ...deps]),
    run(ts7, npm, [...install, 'typescript@7'])
  ])
  t.comment(`packed and installed in ${Date.now() - started} ms`)

  // Started together (each compiler runs alone for a while), awaited one by one below.
  const ts7tsc = join(ts7, 'node_modules/.bin/tsc')
  const checks = [['ES module', esm], ['CommonJS', cjs]].map(([name, dir]) => ({
    name,
    dir,
    compiled: settle(run(dir, join(dir, 'node_modules/.bin/tsc'), ['-p', '.'])),
    checkedBy7: settle(run(dir, ts7tsc, ['-p', '.', '--noEmit']))
  }))
  for (const { name, dir, compiled, checkedBy7 } of checks) {
    t.test(`TypeScript compiled as ${name}: type-checks, runs, and its metrics are the application's`, async (t) => {
      ;(await compiled)()
      t.same(JSON.parse(await run(dir, process.execPath, ['out/app.js'])), expected)
    })
    t.test(`TypeScript 7 type-checks the ${name} application`, async (t) => {
      t.match(await run(ts7, ts7tsc, ['--version']), /^Version 7\./)
      ;(await checkedBy7)()
      t.pass('no error')
    })
  }

  t.test('plain JavaScript as an ES module: runs, and its metrics are the application\'s', async (t) => {
    t.same(JSON.parse(await run(js, process.execPath, ['app.mjs'])), expected)
  })
})
