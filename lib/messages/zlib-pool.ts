import zlib from 'node:zlib'

// `size`: the bytes of the message handed in, measured once however many sockets it goes to.
type Callback = (err: Error | null, data?: Buffer, size?: number) => void

/** One socket's request: its callback, and what to do if the shared stream fails it (ws's own stream for the socket). */
interface Waiter { callback: Callback, fallback: () => void }

interface Job {
  readonly data: Buffer | string
  readonly size: number
  // Output beyond this fails the message (a message inflated past maxPayload).
  readonly limit: number
  readonly waiters: Waiter[]
  chunks: Buffer[]
  length: number
  // Past the limit, or refused by zlib: every waiter falls back.
  failed: boolean
  output: Buffer | null
}

interface Lane { stream: zlib.DeflateRaw | zlib.InflateRaw | null, queue: Job[] }

// What the RFC has a sender drop from the end of each message, and a receiver append.
const TRAILER = Buffer.from([0x00, 0x00, 0xff, 0xff])

/**
 * A few zlib streams shared by every socket of the instance that negotiated no context takeover in this direction,
 * so each message is compressed or inflated on its own: a socket then holds no zlib memory at all, where ws keeps a
 * compressor (~90 KB and more) and an inflater (~20 KB) per socket for its life. Messages queue on the streams in
 * turn; at most `maxLanes` are made, when as many messages are in zlib at once. A text message handed in again
 * right after itself, as a broadcast does for every socket, is compressed once: the last one and its result are kept.
 */
export class ZlibPool {
  private readonly lanes: Lane[] = []
  private last: Job | null = null

  constructor (
    private readonly create: () => zlib.DeflateRaw | zlib.InflateRaw,
    private readonly maxLanes: number,
    // Inflating: the trailer is appended to each message, and its output is limited.
    private readonly inflate: boolean
  ) {}

  run (data: Buffer | string, limit: number, callback: Callback, fallback: () => void): void {
    const last = this.last
    // Text only: a string cannot change, where an application may refill a buffer and send it again.
    if (typeof data === 'string' && last !== null && last.data === data) {
      if (last.output !== null) callback(null, last.output, last.size)
      else last.waiters.push({ callback, fallback })
      return
    }
    const size = typeof data === 'string' ? Buffer.byteLength(data) : data.length
    const job: Job = { data, size, limit, waiters: [{ callback, fallback }], chunks: [], length: 0, failed: false, output: null }
    if (typeof data === 'string') this.last = job
    const lane = this.lane()
    lane.queue.push(job)
    if (lane.queue.length === 1) this.start(lane)
  }

  // An idle lane, else a new one while there may be more, else the one with the shortest queue.
  private lane (): Lane {
    let shortest = this.lanes[0]
    for (const lane of this.lanes) {
      if (lane.queue.length === 0) return lane
      if (lane.queue.length < shortest.queue.length) shortest = lane
    }
    if (this.lanes.length < this.maxLanes) {
      const lane: Lane = { stream: null, queue: [] }
      this.lanes.push(lane)
      return lane
    }
    return shortest
  }

  private start (lane: Lane): void {
    const job = lane.queue[0]
    const stream = lane.stream ?? this.open(lane)
    stream.write(job.data)
    if (this.inflate) stream.write(TRAILER)
    // A full flush also forgets the context, as the next message must be compressed without it.
    stream.flush(this.inflate ? zlib.constants.Z_SYNC_FLUSH : zlib.constants.Z_FULL_FLUSH, () => {
      if (lane.queue[0] === job) this.finish(lane, job)
    })
  }

  private open (lane: Lane): zlib.DeflateRaw | zlib.InflateRaw {
    const stream = lane.stream = this.create()
    const onData = (chunk: Buffer): void => {
      const job = lane.queue[0]
      job.length += chunk.length
      if (job.length <= job.limit) {
        job.chunks.push(chunk)
        return
      }
      // As ws does: nothing more is read, zlib stops, and the flush still calls back.
      job.failed = true
      stream.removeListener('data', onData)
      stream.reset()
    }
    stream.on('data', onData)
    // A corrupt message: zlib destroys the stream (its only error), and its pending flush calls back with the error.
    stream.on('error', () => {
      const job = lane.queue[0]
      job.failed = true
      this.finish(lane, job)
    })
    return stream
  }

  private finish (lane: Lane, job: Job): void {
    lane.queue.shift()
    // A stream that failed a message, or that the message ended (its last block marked final), is done with.
    if (job.failed || lane.stream!.readableEnded) {
      lane.stream!.close()
      lane.stream = null
    } else if (this.inflate) {
      // A message may end mid-block or refer back: the next one, another socket's, must start from nothing.
      lane.stream!.reset()
    }
    // Before the callbacks, which may hand in the next message at once: this lane is then busy, or idle for it.
    if (lane.queue.length > 0) this.start(lane)
    // The waiters (closures over their sockets) are let go of: `last` keeps only the data and its result.
    const waiters = job.waiters.splice(0)
    if (job.failed) {
      this.last = null
      for (const waiter of waiters) waiter.fallback()
      return
    }
    const output = Buffer.concat(job.chunks, job.length)
    job.output = this.inflate ? output : output.subarray(0, output.length - TRAILER.length)
    job.chunks = []
    for (const waiter of waiters) waiter.callback(null, job.output, job.size)
  }
}
