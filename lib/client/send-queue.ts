export type Payload = string | ArrayBufferLike | Blob | ArrayBufferView

/** Messages sent while disconnected, in order, bounded by count. */
export class SendQueue {
  private items: Payload[] = []
  /** What the queued messages weigh, for bufferedAmount. */
  bytes = 0

  constructor (private readonly maxMessages: number) {}

  get length (): number {
    return this.items.length
  }

  /** False when the queue is full: the message is refused, never one already queued. */
  push (data: Payload): boolean {
    if (this.items.length >= this.maxMessages) return false
    this.items.push(data)
    this.bytes += byteLength(data)
    return true
  }

  shift (): Payload {
    const data = this.items.shift()!
    this.bytes -= byteLength(data)
    return data
  }

  /** Empties the queue, returning what it held. */
  clear (): Payload[] {
    const items = this.items
    this.items = []
    this.bytes = 0
    return items
  }
}

/** Bytes on the wire, as a browser's bufferedAmount counts them (UTF-8 for text). */
export function byteLength (data: Payload): number {
  if (typeof data === 'string') return utf8Length(data)
  if (typeof (data as Blob).size === 'number') return (data as Blob).size
  return (data as ArrayBufferLike | ArrayBufferView).byteLength
}

function utf8Length (text: string): number {
  let bytes = text.length
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i)
    if (code < 0x80) continue
    if (code < 0x800) bytes += 1
    // A surrogate pair is two UTF-16 units and four bytes; a lone surrogate becomes U+FFFD, three bytes.
    else if (code >= 0xd800 && code <= 0xdbff && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) { bytes += 2; i++ } else bytes += 2
  }
  return bytes
}
