import { randomFillSync } from 'node:crypto'

const ID_BYTES = 16
const IDS_PER_FILL = 256

/**
 * Ids of 128 random bits as 32 hex digits. The entropy is drawn for 256 ids
 * at a time (a call to the system's generator is costly), and hex from a
 * Buffer is a flat string: randomUUID() builds its result by concatenation,
 * and keeping that rope costs memory per connection. Figures: bench/notes.md,
 * "Figures behind lib/'s constants".
 */
export function createIdGenerator (): () => string {
  const pool = Buffer.allocUnsafe(ID_BYTES * IDS_PER_FILL)
  let offset = pool.length
  return function nextId () {
    if (offset === pool.length) {
      randomFillSync(pool)
      offset = 0
    }
    offset += ID_BYTES
    return pool.toString('hex', offset - ID_BYTES, offset)
  }
}
