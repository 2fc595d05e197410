// Where Redis Cluster keeps a name: the slot of a key or shard channel.

/**
 * The Redis Cluster slot of a key or shard channel, as Redis computes it: CRC16 (XMODEM) of the name's hash tag (what
 * lies between its first `{` and the next `}`, when not empty), else of the whole name, modulo 16384.
 */
export function hashSlot (name: string): number {
  let bytes = Buffer.from(name)
  const open = bytes.indexOf(0x7b)
  const close = bytes.indexOf(0x7d, open + 1)
  if (open >= 0 && close > open + 1) bytes = bytes.subarray(open + 1, close)
  let crc = 0
  for (const byte of bytes) {
    crc ^= byte << 8
    for (let bit = 0; bit < 8; bit++) crc = (crc & 0x8000) === 0 ? crc << 1 : (crc << 1) ^ 0x1021
    crc &= 0xffff
  }
  return crc & 0x3fff
}
