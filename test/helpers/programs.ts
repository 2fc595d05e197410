import { statSync } from 'node:fs'
import { delimiter, join } from 'node:path'

/** A program from outside npm that some tests run, and how a machine without it gets it. */
export interface Program {
  name: string
  /** A variable naming its path: when set, the only place looked at. */
  env: string
  /** Paths tried first, then `commands` on PATH. */
  paths: string[]
  commands: string[]
  install: string
}

// Debian's package; playwright-core never downloads a browser of its own.
export const CHROMIUM: Program = {
  name: 'Chromium',
  env: 'CHROMIUM_PATH',
  paths: ['/usr/bin/chromium'],
  commands: ['chromium', 'chromium-browser'],
  install: 'apt-get install chromium'
}

// Debian's package; the topic broker's tests start their own servers on loopback ports.
export const REDIS: Program = {
  name: 'redis-server',
  env: 'REDIS_SERVER_PATH',
  paths: ['/usr/bin/redis-server'],
  commands: ['redis-server'],
  install: 'apt-get install redis-server'
}

// Debian's package; the load-balancer test runs deploy/nginx.conf with it, as an unprivileged foreground process.
export const NGINX: Program = {
  name: 'nginx',
  env: 'NGINX_PATH',
  paths: ['/usr/sbin/nginx'],
  commands: ['nginx'],
  install: 'apt-get install nginx'
}

function executable (path: string): boolean {
  try {
    const stat = statSync(path)
    // Any execute bit: the tests run as whoever owns the checkout, and these programs are installed for everyone.
    return stat.isFile() && (stat.mode & 0o111) !== 0
  } catch {
    return false
  }
}

/** Where the program is, or null. */
export function locate (program: Program, env: NodeJS.ProcessEnv = process.env): string | null {
  const named = env[program.env]
  if (named !== undefined && named !== '') return executable(named) ? named : null
  const onPath = (env.PATH ?? '').split(delimiter).filter(Boolean).flatMap((dir) => program.commands.map((command) => join(dir, command)))
  return [...program.paths, ...onPath].find(executable) ?? null
}

/** CI must not go green without a program its suite needs: there a missing one fails the test instead of skipping it. */
function onCI (env: NodeJS.ProcessEnv): boolean {
  const ci = env.CI
  return ci !== undefined && ci !== '' && ci !== '0' && ci !== 'false'
}

/** The one line that says why a test cannot run here, and what to do about it. */
function missing (program: Program): string {
  return `needs ${program.name} — ${program.install}, or set ${program.env}`
}

/**
 * Options for a subtest that runs `program`: `t.test(name, needs(CHROMIUM), fn)`. Without the program the subtest
 * is skipped with one line saying what to install; under CI it runs, and `find()` fails it with that line.
 */
export function needs (program: Program, env: NodeJS.ProcessEnv = process.env): { skip?: string } {
  return locate(program, env) === null && !onCI(env) ? { skip: missing(program) } : {}
}

/** `needs` for a test that runs several programs: one line naming every one that is missing. */
export function needsAll (programs: Program[], env: NodeJS.ProcessEnv = process.env): { skip?: string } {
  const lines = programs.map((program) => needs(program, env).skip).filter((line) => line !== undefined)
  return lines.length === 0 ? {} : { skip: lines.join('; ') }
}

/** The program's path, for the test that runs it; throws the line `needs()` would have skipped with. */
export function find (program: Program, env: NodeJS.ProcessEnv = process.env): string {
  const path = locate(program, env)
  if (path === null) throw new Error(`${missing(program)} (CI is set: a missing program fails the run)`)
  return path
}
