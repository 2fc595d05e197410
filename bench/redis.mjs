// A redis-server of the benchmark's own, on a free loopback port, nothing saved to disk. The tests' starter
// (test/helpers/redis.ts) is TypeScript and bound to tap's teardown, and the benchmark runs plain .mjs on dist/: this
// is the small part of it the benchmark needs, plus the server's CPU read from /proc.
import { execFileSync, spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

// The variable the tests' program lookup honours too (test/helpers/programs.ts); otherwise PATH.
const COMMAND = process.env.REDIS_SERVER_PATH || 'redis-server'

/** Why the scenarios that need Redis cannot run here, or null when they can. */
export function redisSkipReason () {
  const probe = spawnSync(COMMAND, ['--version'], { stdio: 'ignore' })
  return probe.error === undefined && probe.status === 0 ? null : 'needs redis-server — apt-get install redis-server, or set REDIS_SERVER_PATH'
}

// Below the system's ephemeral range, so no outgoing connection of the run (thousands of them) is ever given it.
async function freePort () {
  const below = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').split(/\s+/)[0])
  for (;;) {
    const port = 10_000 + Math.floor(Math.random() * (below - 10_000))
    const server = net.createServer()
    const bound = await new Promise((resolve) => {
      server.once('error', () => resolve(false))
      server.listen(port, '127.0.0.1', () => resolve(true))
    })
    if (!bound) continue
    await new Promise((resolve) => server.close(resolve))
    return port
  }
}

function spawnReady (port, dir) {
  const child = spawn(COMMAND, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
    { stdio: ['ignore', 'pipe', 'inherit'] })
  let output = ''
  return new Promise((resolve, reject) => {
    const onData = (chunk) => {
      output += chunk.toString()
      if (!output.includes('Ready to accept connections')) return
      child.stdout.off('data', onData)
      child.off('exit', onExit)
      child.stdout.resume()
      resolve(child)
    }
    const onExit = (code) => reject(new Error(`redis-server exited (${code}) before it was ready:\n${output}`))
    child.stdout.on('data', onData)
    child.once('exit', onExit)
  })
}

const TICKS_PER_SECOND = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())

/** Starts one; `stop()` kills it and removes its directory. */
export async function startRedis () {
  const dir = mkdtempSync(join(tmpdir(), 'bench-redis-'))
  // A port found free can be taken before redis-server binds it: then another.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort()
    try {
      const child = await spawnReady(port, dir)
      return {
        url: `redis://127.0.0.1:${port}`,
        /** The server's user and system CPU so far, in ms (/proc/<pid>/stat: utime and stime, in clock ticks). */
        cpuMs () {
          const fields = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1].split(' ')
          return (Number(fields[11]) + Number(fields[12])) * 1000 / TICKS_PER_SECOND
        },
        async stop () {
          if (child.exitCode === null && child.signalCode === null) {
            const exited = new Promise((resolve) => child.once('exit', resolve))
            child.kill('SIGKILL')
            await exited
          }
          rmSync(dir, { recursive: true, force: true })
        }
      }
    } catch (err) {
      if (attempt === 3 || !err.message.includes('Address already in use')) {
        rmSync(dir, { recursive: true, force: true })
        throw err
      }
    }
  }
}
