// Messages: what travels in a socket's messages, JSON with its schema and the reliable subprotocol's server side.
import Ajv from 'ajv'
import type { ValidateFunction } from 'ajv'
import type { ReliableSocket } from '../core/shapes'
import { failConnection } from '../core/socket-errors'
import { FST_RELIABLE_WS_INVALID_OPTION, FST_RELIABLE_WS_NOT_JSON } from '../core/errors'
import { ALIVE } from '../core/shapes'
import { kPongState, kRoute } from '../core/symbols'

const INVALID_REPLY = '{"type":"error","message":"Invalid message"}'

/**
 * Ajv set up for message validation: unlike Fastify's request
 * validator it never coerces types, fills defaults or removes properties, so
 * the handler sees exactly what the peer sent.
 */
export function createAjv (): Ajv {
  return new Ajv({ coerceTypes: false, useDefaults: false, removeAdditional: false, allErrors: false })
}

export function compileMessageSchema (ajv: Ajv, schema: object, url: string): ValidateFunction {
  try {
    return ajv.compile(schema)
  } catch (err) {
    throw new FST_RELIABLE_WS_INVALID_OPTION(`config.reliable of ${url}.messageSchema`, (err as Error).message)
  }
}

/** 'message' listener of JSON routes: parse, validate, then emit 'json'. */
export function onJsonMessage (this: ReliableSocket, data: Buffer, isBinary: boolean): void {
  this[kPongState] = ALIVE
  const route = this[kRoute]!
  route.counters.messagesReceived++
  if (isBinary) return reject(this, INVALID_REPLY)
  let value: unknown
  try {
    value = JSON.parse(data.toString())
  } catch {
    return reject(this, INVALID_REPLY)
  }
  const validate = route.validate
  if (validate !== null && !validate(value)) {
    return reject(this, JSON.stringify({ type: 'error', message: 'Invalid message', errors: validate.errors }))
  }
  try {
    this.emit('json', value)
  } catch (err) {
    // A throwing listener would otherwise escape through ws's parser and take the process down.
    failConnection(this, err)
  }
}

/** A value's JSON text, for sendJSON; a value with no JSON form (undefined, a function) throws. */
export function toJSONText (value: unknown): string {
  const text = JSON.stringify(value)
  if (text === undefined) throw new FST_RELIABLE_WS_NOT_JSON()
  return text
}

function reject (socket: ReliableSocket, reply: string): void {
  socket[kRoute]!.counters.invalid++
  socket.send(reply)
}
