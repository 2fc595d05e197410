// A local load for the example app, so the dashboard's charts move: chatty clients that come and go with
// different close codes, peers that vanish without a word (the heartbeat finds them), readers too slow for
// what they ask for (backpressure drops), and the odd message that is not JSON.
//
//   npm run load                                   # against http://127.0.0.1:3000 for 60 s
//   npm run load -- --url http://127.0.0.1:3000 --seconds 30 --clients 100
//
// The dashboard's "Start load" button runs the same load inside the app's own process.
import { parseArgs } from 'node:util'
import { pathToFileURL } from 'node:url'
import WebSocket from 'ws'

const CLOSE_CODES = [1000, 1001, 4000, 4001]
const BIG = 'x'.repeat(64 * 1024)

/** The route the load uses, on the app at `base` (its http:// address). */
function echoUrl (base) {
  return base.replace(/^http/, 'ws') + '/echo'
}

/**
 * Runs the load against `base` (the app's http:// address) for `seconds`, then closes every client.
 * Resolves with what it did.
 */
export async function runLoad ({ base, seconds = 60, clients = 50 }) {
  const url = echoUrl(base)
  const until = Date.now() + seconds * 1000
  const open = new Set()
  const done = { connections: 0, messages: 0 }

  // One connection from open to close; `behave` drives it once open. A connection that never opened (the
  // server is gone or not up yet) is tried again a second later, not in a tight loop.
  const session = (ws, behave) => new Promise((resolve) => {
    let opened = false
    let stopBehaving = () => {}
    open.add(ws)
    ws.on('error', () => {})
    ws.once('open', () => {
      opened = true
      done.connections++
      stopBehaving = behave(ws)
    })
    ws.once('close', () => {
      open.delete(ws)
      stopBehaving()
      setTimeout(resolve, opened ? 0 : 1000)
    })
  })

  // Chatty clients: a message every 50-250 ms for 2-8 s, then a close with one of several codes, then again.
  const chatter = async () => {
    while (Date.now() < until) {
      await session(new WebSocket(url), (ws) => {
        let timer = null
        const send = () => {
          ws.send(Math.random() < 0.03 ? 'not json' : JSON.stringify({ n: done.messages++, at: Date.now() }))
          timer = setTimeout(send, 50 + Math.random() * 200)
        }
        send()
        const life = setTimeout(() => ws.close(CLOSE_CODES[Math.floor(Math.random() * CLOSE_CODES.length)]), 2000 + Math.random() * 6000)
        return () => { clearTimeout(timer); clearTimeout(life) }
      })
    }
  }

  // A peer that stops answering pings (a phone in a tunnel): terminated by the heartbeat with 1006.
  const vanisher = async () => {
    while (Date.now() < until) await session(new WebSocket(url, { autoPong: false }), () => () => {})
  }

  // A reader that asks for big echoes and never reads them: its replies pile up until send() drops them.
  const slowReader = async () => {
    while (Date.now() < until) {
      await session(new WebSocket(url), (ws) => {
        ws._socket.pause()
        const timer = setInterval(() => ws.send(JSON.stringify({ big: BIG })), 50)
        const life = setTimeout(() => ws.terminate(), 8000)
        return () => { clearInterval(timer); clearTimeout(life) }
      })
    }
  }

  const workers = [
    ...Array.from({ length: clients }, chatter),
    ...Array.from({ length: Math.max(1, Math.round(clients / 25)) }, vanisher),
    ...Array.from({ length: Math.max(1, Math.round(clients / 50)) }, slowReader)
  ]
  // Time is up: everyone says goodbye, and a second later whoever has not finished (a stalled reader) is cut off.
  let cutOff = null
  const stop = setTimeout(() => {
    for (const ws of open) ws.close(1000)
    cutOff = setTimeout(() => { for (const ws of open) ws.terminate() }, 1000)
  }, seconds * 1000)
  await Promise.all(workers)
  clearTimeout(stop)
  clearTimeout(cutOff)
  return done
}

/** Resolves once one connection to `url` has opened (and closes it); rejects with why it could not. */
function probe (url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { handshakeTimeout: 5000 })
    ws.once('open', () => { ws.close(); resolve() })
    ws.once('error', reject)
  })
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { values } = parseArgs({
    options: {
      url: { type: 'string', default: `http://127.0.0.1:${process.env.PORT ?? 3000}` },
      seconds: { type: 'string', default: '60' },
      clients: { type: 'string', default: '50' }
    }
  })
  // Without a server every client would just retry until the time is up, and the run would end saying nothing.
  const target = echoUrl(values.url)
  try {
    await probe(target)
  } catch (err) {
    console.error(`Cannot connect to ${target}: ${err.code ?? err.message} — start the example app first (npm start), or pass --url`)
    process.exit(1)
  }
  console.log(`Load against ${values.url} for ${values.seconds} s with ${values.clients} clients; watch ${values.url}/dashboard`)
  const done = await runLoad({ base: values.url, seconds: Number(values.seconds), clients: Number(values.clients) })
  console.log(`Done: ${done.connections} connections, ${done.messages} messages`)
}
