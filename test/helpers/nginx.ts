import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from './redis'
import { find, NGINX } from './programs'

const DEPLOYED = join(__dirname, '..', '..', 'deploy', 'nginx.conf')

/** Replaces the one match of `pattern` in `text`; the test must not run a configuration it did not mean to. */
function replaceOnce (text: string, pattern: RegExp, by: string): string {
  const matches = text.match(new RegExp(pattern.source, 'g'))?.length ?? 0
  if (matches !== 1) throw new Error(`deploy/nginx.conf: expected one ${pattern}, found ${matches}`)
  return text.replace(pattern, by)
}

/** Gives every occurrence of a directive (`name value;`) or of a server parameter (`name=value`) another value. */
function setEverywhere (text: string, name: string, value: string): string {
  const pattern = new RegExp(`\\b${name}( |=)[^;\\s]+`, 'g')
  if (!pattern.test(text)) throw new Error(`deploy/nginx.conf has no ${name}`)
  return text.replace(pattern, (_, separator: string) => `${name}${separator}${value}`)
}

/**
 * Debian's nginx (declare the test with `needs(NGINX)`) running deploy/nginx.conf as written, but for what a test
 * cannot take from it: the loopback port it listens on, the instances' ports, the directives and server parameters
 * named in `shorter` (`{ worker_shutdown_timeout: '2s', fail_timeout: '1s' }`), and files in a directory of its own.
 * In the foreground, stopped in teardown.
 */
export class Nginx {
  private constructor (readonly port: number, private readonly child: ChildProcess) {}

  static async start (t: { teardown: (fn: () => unknown) => void }, upstreams: number[], shorter: Record<string, string> = {}): Promise<Nginx> {
    const dir = mkdtempSync(join(tmpdir(), 'nginx-'))
    let child: ChildProcess | null = null
    t.teardown(async () => {
      if (child !== null && child.exitCode === null && child.signalCode === null) {
        // SIGTERM: a fast shutdown, websockets included.
        child.kill('SIGTERM')
        await once(child, 'exit')
      }
      rmSync(dir, { recursive: true, force: true })
    })
    // Started as root, the workers run as nobody, and reach their temporary files through this directory.
    chmodSync(dir, 0o755)
    const port = await freePort()
    let conf = readFileSync(DEPLOYED, 'utf8')
    const servers = conf.match(/server 127\.0\.0\.1:\d+/g) ?? []
    if (servers.length !== upstreams.length) throw new Error(`deploy/nginx.conf names ${servers.length} instances, the test ${upstreams.length}`)
    let i = 0
    conf = conf.replace(/server 127\.0\.0\.1:\d+/g, () => `server 127.0.0.1:${upstreams[i++]}`)
    conf = replaceOnce(conf, /listen \d+;/, `listen 127.0.0.1:${port};`)
    for (const [name, value] of Object.entries(shorter)) conf = setEverywhere(conf, name, value)
    // Debian's build keeps its temporary files and logs under /var: this one keeps them in its own directory.
    conf = replaceOnce(conf, /http \{/, `http {
    access_log off;
    client_body_temp_path ${dir}/body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;`)
    writeFileSync(join(dir, 'nginx.conf'), conf)
    child = spawn(find(NGINX), ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', join(dir, 'error.log'),
      '-g', `daemon off; pid ${join(dir, 'nginx.pid')};`], { stdio: ['ignore', 'inherit', 'inherit'] })
    const nginx = new Nginx(port, child)
    const exited = once(child, 'exit').then(([code]) => { throw new Error(`nginx exited (${code}): ${readFileSync(join(dir, 'error.log'), 'utf8')}`) })
    exited.catch(() => {})
    await Promise.race([listening(port), exited])
    return nginx
  }

  url (path: string): string {
    return `ws://127.0.0.1:${this.port}${path}`
  }

  http (path: string): string {
    return `http://127.0.0.1:${this.port}${path}`
  }

  /** `nginx -s reload`: new workers take new connections, the old ones keep theirs until worker_shutdown_timeout. */
  reload (): void {
    this.child.kill('SIGHUP')
  }
}

async function listening (port: number): Promise<void> {
  for (let tries = 0; ; tries++) {
    const connected = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true) })
      socket.on('error', () => resolve(false))
    })
    if (connected) return
    if (tries > 200) throw new Error(`nginx did not listen on ${port}`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}
