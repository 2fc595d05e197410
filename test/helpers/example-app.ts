import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import { waitFor } from './helpers'

/**
 * Starts examples/chat.mjs as `npm start` runs it (the build must exist: `npm test` makes it), in its own process,
 * on a free port; resolves with its base URL and port once it listens, and stops it when the test ends.
 */
export async function startExample (t: { teardown: (fn: () => unknown) => void }): Promise<{ base: string, port: number }> {
  const child = spawn(process.execPath, ['examples/chat.mjs'], {
    cwd: join(__dirname, '..', '..'),
    env: { ...process.env, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'inherit']
  })
  t.teardown(async () => {
    if (child.exitCode !== null) return
    child.kill('SIGTERM')
    await once(child, 'exit')
  })
  let output = ''
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => { output += chunk })
  const listening = /Dashboard: +(http:\/\/[^:]+:(\d+))\/dashboard/
  await waitFor(() => listening.test(output), 10_000, 'the example app to listen')
  const [, base, port] = listening.exec(output)!
  return { base, port: Number(port) }
}
