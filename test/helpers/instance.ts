import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { join } from 'node:path'

const FIXTURE = join(__dirname, '..', 'fixtures', 'instance.mjs')

// A test process that killed many of these sometimes never ends once its tests are done: Node 20 spins at a full core
// in its cleanup at exit (Environment::CleanupHandles, every libuv handle and request already gone: seen under gdb),
// until tap's timeout fails the file. Added at the first start, once tap has added its own (it does at its first
// output), this 'exit' listener runs last and ends the process there, as process.exit() in an 'exit' listener does,
// without that cleanup; the exit code is kept.
let exitHooked = false
function endAtExit (): void {
  if (exitHooked) return
  exitHooked = true
  process.once('exit', (code) => process.exit(code))
}

/**
 * test/fixtures/instance.mjs in a process of its own (on the build: `npm test` makes it), on a fixed loopback port so
 * that a load balancer finds it again after a restart; killed in teardown.
 */
export class Instance {
  private child: ChildProcess | null = null
  // Once the process is gone and all it printed has been read.
  private closed: Promise<unknown> = Promise.resolve()
  /** What the process printed on stdout, in its latest run. */
  output = ''

  private constructor (readonly port: number, private readonly env: Record<string, string>) {}

  static async start (t: { teardown: (fn: () => unknown) => void }, port: number, env: Record<string, string>): Promise<Instance> {
    endAtExit()
    const instance = new Instance(port, env)
    t.teardown(() => instance.stop('SIGKILL'))
    await instance.restart()
    return instance
  }

  /** Starts the process again, with `env` over the instance's own for this run. */
  async restart (env: Record<string, string> = {}): Promise<void> {
    const child = spawn(process.execPath, [FIXTURE], {
      env: { ...process.env, ...this.env, ...env, PORT: String(this.port) },
      stdio: ['ignore', 'pipe', 'inherit']
    })
    this.child = child
    this.closed = new Promise((resolve) => child.once('close', resolve))
    this.output = ''
    await new Promise<void>((resolve, reject) => {
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        this.output += chunk
        if (this.output.includes('listening')) resolve()
      })
      child.once('exit', (code) => reject(new Error(`the instance on ${this.port} exited (${code}) before it listened`)))
    })
  }

  /** Whether the process of its latest run is still there (it may kill itself: CRASH_AT). */
  get alive (): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null
  }

  /**
   * SIGTERM: the application closes (a rolling deploy); SIGKILL: a crash. Resolves once the process is gone and all
   * it printed has been read.
   */
  async stop (signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
    if (this.child === null) return
    // Kept until it is gone: an instance stuck in close() is still there for the teardown's SIGKILL.
    if (this.alive) this.child.kill(signal)
    await this.closed
    this.child = null
  }
}
