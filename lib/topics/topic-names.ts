import { FST_RELIABLE_WS_INVALID_TOPIC } from '../core/errors'

/**
 * Whether `topic` is a topic name: 1 to `maxLength` printable ASCII characters (U+0021 to U+007E), so its length is
 * its size in bytes and it can be logged, used as a Redis key or a metric label without escaping.
 */
export function isTopic (topic: unknown, maxLength: number): topic is string {
  if (typeof topic !== 'string' || topic.length === 0 || topic.length > maxLength) return false
  for (let i = 0; i < topic.length; i++) {
    const code = topic.charCodeAt(i)
    if (code < 0x21 || code > 0x7e) return false
  }
  return true
}

/** The error for a name isTopic refused: what is wrong with it, without echoing a client's bytes into logs. */
export function invalidTopic (topic: unknown, maxLength: number): Error {
  const why = typeof topic !== 'string'
    ? `a ${typeof topic}, not a string`
    : topic.length === 0 ? 'empty' : topic.length > maxLength ? `${topic.length} characters long` : 'a character outside U+0021-U+007E'
  return new FST_RELIABLE_WS_INVALID_TOPIC(why, maxLength)
}
