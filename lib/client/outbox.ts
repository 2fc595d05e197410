export type Payload = string | ArrayBufferLike | Blob | ArrayBufferView

/**
 * The client's messages that are not done with: queued while disconnected,
 * and, in a session, sent but not yet acknowledged by the server. Bounded by
 * count; kept in the order they were sent.
 */
export class Outbox {
  private items: Payload[] = []

  constructor (private readonly maxMessages: number) {}

  get length (): number {
    return this.items.length
  }

  /** False when the outbox is full: the message is refused, never one already in it. */
  push (data: Payload): boolean {
    if (this.items.length >= this.maxMessages) return false
    this.items.push(data)
    return true
  }

  at (index: number): Payload {
    return this.items[index]
  }

  /** Removes and returns the first `count` messages. */
  take (count: number): Payload[] {
    return this.items.splice(0, count)
  }

  clear (): Payload[] {
    return this.take(this.items.length)
  }

  /** What the messages from `start` on weigh, as bufferedAmount counts them. */
  bytesFrom (start: number): number {
    let bytes = 0
    for (let i = start; i < this.items.length; i++) bytes += byteLength(this.items[i])
    return bytes
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
