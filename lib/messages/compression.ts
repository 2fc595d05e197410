import type { IncomingMessage } from 'node:http'
import zlib from 'node:zlib'
import type { preHandlerHookHandler } from 'fastify'
import type { CompressionSettings } from '../core/options'
import type { CompressionCounters, DeflateOffer, ReliableSocket, Route, SharedZlib } from '../core/shapes'
import { kCompressFrom, kDeflateOffer } from '../core/symbols'
import { deflateOf, parseExtensionOffers, releaseInflater } from '../core/ws-internals'
import type { Deflate } from '../core/ws-internals'
import { ZlibPool } from './zlib-pool'

// Each zlib stream keeps an output buffer this large (Node's default is 16 KiB); bench/notes.md has what it costs.
const CHUNK_SIZE = 1024
// The shared inflater takes every window a client may compress with.
const MAX_WINDOW_BITS = 15

type OfferParams = Record<string, Array<string | true>>

/** A route's compression as ws's `perMessageDeflate` option, built once; null when the route declines it. */
export function deflateOffer (settings: CompressionSettings | false): DeflateOffer | null {
  if (settings === false) return null
  return {
    settings,
    options: {
      // The plugin applies the route's threshold itself; ws's would also veto an application's `compress: true`.
      threshold: 0,
      concurrencyLimit: settings.concurrencyLimit,
      // false would make ws refuse (400) a client that asks for it; undefined grants it, at no memory cost.
      serverNoContextTakeover: settings.serverNoContextTakeover || undefined,
      clientNoContextTakeover: settings.clientNoContextTakeover,
      serverMaxWindowBits: settings.serverMaxWindowBits,
      clientMaxWindowBits: settings.clientMaxWindowBits,
      zlibDeflateOptions: { level: settings.level, memLevel: settings.memLevel, chunkSize: CHUNK_SIZE },
      zlibInflateOptions: { chunkSize: CHUNK_SIZE }
    },
    compressors: new Map(),
    inflater: null
  }
}

function compressor (offer: DeflateOffer, windowBits: number): SharedZlib {
  let pool = offer.compressors.get(windowBits)
  if (pool === undefined) {
    const { level, memLevel, concurrencyLimit } = offer.settings
    pool = new ZlibPool(() => zlib.createDeflateRaw({ level, memLevel, windowBits, chunkSize: CHUNK_SIZE }), concurrencyLimit, false)
    offer.compressors.set(windowBits, pool)
  }
  return pool
}

function inflater (offer: DeflateOffer): SharedZlib {
  offer.inflater ??= new ZlibPool(() => zlib.createInflateRaw({ windowBits: MAX_WINDOW_BITS, chunkSize: CHUNK_SIZE }), offer.settings.concurrencyLimit, true)
  return offer.inflater
}

/** A preHandler of routes with compression: the upgrade may negotiate it, as the route allows. */
export function createCompressionOffer (offer: DeflateOffer): preHandlerHookHandler {
  return function offerCompression (request, _reply, done) {
    (request.raw as { [kDeflateOffer]?: DeflateOffer })[kDeflateOffer] = offer
    done()
  }
}

/**
 * ws's `perMessageDeflate` for one upgrade request: none unless its route allows it, else the route's, with each
 * window no larger than the client's first offer asks (ws alone refuses, with 400, an offer whose windows it
 * cannot grant exactly, where the RFC has the server agree to a smaller one). A client whose offer leaves out
 * `client_max_window_bits` cannot be asked for a smaller window: where the socket would inflate with a stream of
 * its own (the client keeps context), it is declined unless the route allows the largest window.
 */
export function deflateFor (request: IncomingMessage): object | false {
  const offer = (request as { [kDeflateOffer]?: DeflateOffer })[kDeflateOffer]
  if (offer === undefined) return false
  const header = request.headers['sec-websocket-extensions']
  if (header === undefined) return false
  let params: OfferParams | undefined
  try {
    params = (parseExtensionOffers(header)['permessage-deflate'] as OfferParams[] | undefined)?.[0]
  } catch {
    // ws parses it again, and answers 400.
    return offer.options
  }
  if (params === undefined) return false
  const { settings } = offer
  // Below the route's window, the smallest: the route's sockets then share compressors of two sizes at most.
  let serverMaxWindowBits = windowBits(params.server_max_window_bits, settings.serverMaxWindowBits)
  if (serverMaxWindowBits > 8 && serverMaxWindowBits < settings.serverMaxWindowBits) serverMaxWindowBits = 9
  let clientMaxWindowBits
  if (params.client_max_window_bits !== undefined) {
    clientMaxWindowBits = windowBits(params.client_max_window_bits, settings.clientMaxWindowBits)
  } else if (settings.clientMaxWindowBits < MAX_WINDOW_BITS && !settings.clientNoContextTakeover) {
    return false
  }
  // A window of 2^8, which zlib cannot compress with (it uses 2^9): declined, the connection goes on without.
  if (serverMaxWindowBits === 8 || clientMaxWindowBits === 8) return false
  return { ...offer.options, serverMaxWindowBits, clientMaxWindowBits }
}

// The smaller of the route's window and the one offered (8, which zlib cannot compress with, is declined above); a
// value that is not a window size is ws's to refuse (400).
function windowBits (offered: Array<string | true> | undefined, own: number): number {
  const value = Number(offered?.[0])
  return value >= 8 && value < own ? value : own
}

/**
 * Once a socket is open: whether it negotiated permessage-deflate (its messages then go out compressed from the
 * route's threshold). If so, each direction without context takeover goes through the route's shared zlib
 * streams, and zlib's work is counted both ways.
 */
export function watchCompression (socket: ReliableSocket, route: Route): void {
  const deflate = deflateOf(socket)
  if (deflate === undefined) return
  // Negotiated only where the route offered it.
  const offer = route.deflate!
  socket[kCompressFrom] = offer.settings.threshold
  const { params } = deflate
  const shared = {
    out: params.server_no_context_takeover === true ? compressor(offer, params.server_max_window_bits) : null,
    in: params.client_no_context_takeover === true ? inflater(offer) : null
  }
  useSharedZlib(deflate, shared, route.ctx.stats.compression)
}

/**
 * Replaces the socket's compress and decompress (which ws's sender and parser call, one message at a time) with
 * the shared streams where there are some, counting what zlib does. ws's own, with a zlib stream for this socket,
 * still takes the messages sent or received in fragments (which must share one stream), and those the shared
 * streams fail: past the limit or corrupt, it fails them with ws's own close code.
 */
function useSharedZlib (deflate: Deflate, shared: { out: SharedZlib | null, in: SharedZlib | null }, counters: CompressionCounters): void {
  const { compress, decompress } = deflate
  const { sent, received } = counters
  // A message in fragments is under way through ws's own stream.
  let compressing = false
  let inflating = false
  deflate.compress = function (data, fin, callback) {
    const done = (err: Error | null, out?: Buffer, size?: number): void => {
      if (out !== undefined) {
        // The shared compressor measured the message once for all the sockets it went to.
        sent.bytesIn += size ?? (typeof data === 'string' ? Buffer.byteLength(data) : data.length)
        sent.bytesOut += out.length
        if (fin) sent.messages++
      }
      callback(err, out)
    }
    if (shared.out !== null && fin && !compressing) {
      shared.out.run(data, Infinity, done, () => compress.call(this, data, fin, done))
      return
    }
    compressing = !fin
    compress.call(this, data, fin, done)
  }
  deflate.decompress = function (data, fin, callback) {
    received.bytesIn += data.length
    const done = (err: Error | null, out?: Buffer): void => {
      if (out !== undefined) {
        received.bytesOut += out.length
        if (fin) received.messages++
      }
      callback(err, out)
    }
    if (shared.in !== null && fin && !inflating) {
      shared.in.run(data, this._maxPayload, done, () => decompress.call(this, data, fin, done))
      return
    }
    inflating = !fin
    if (shared.in === null || !fin) return decompress.call(this, data, fin, done)
    decompress.call(this, data, fin, (err, out) => {
      // A message in fragments made ws an inflater for this socket, which it would keep for the socket's life (after
      // an error ws has closed it already).
      if (err === null) releaseInflater(deflate)
      done(err, out)
    })
  }
}

const COMPRESSED = Object.freeze({ compress: true })
export const UNCOMPRESSED = Object.freeze({ compress: false })

/**
 * The options to hand ws's send for a message on a socket that negotiated compression: compressed from the
 * route's threshold on, unless the application chose. ws itself applies its threshold only without context
 * takeover, and compresses every message otherwise.
 */
export function compressionOptions (data: unknown, options: object | undefined, threshold: number): object {
  if (options !== undefined && (options as { compress?: boolean }).compress !== undefined) return options
  const compress = sizeAtLeast(data, threshold)
  if (options === undefined) return compress ? COMPRESSED : UNCOMPRESSED
  return { ...options, compress }
}

/** Whether a message is `threshold` bytes or more. */
export function sizeAtLeast (data: unknown, threshold: number): boolean {
  if (typeof data === 'string') {
    // UTF-8 takes one to three bytes per UTF-16 unit: counting is needed only in between.
    return data.length >= threshold || (data.length * 3 >= threshold && Buffer.byteLength(data) >= threshold)
  }
  if (ArrayBuffer.isView(data) || data instanceof ArrayBuffer) return data.byteLength >= threshold
  if (data instanceof Blob) return data.size >= threshold
  // What ws turns into a buffer with Buffer.from (an array of bytes): as zlib makes of it.
  return true
}
