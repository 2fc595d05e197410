import type { IncomingMessage } from 'node:http'
import type { preHandlerHookHandler } from 'fastify'
import type { CompressionSettings } from '../core/options'
import type { CompressionCounters, DeflateOffer, ReliableSocket, Route } from '../core/shapes'
import { kCompressFrom, kDeflateOffer } from '../core/symbols'
import { deflateOf, parseExtensionOffers } from '../core/ws-internals'
import type { Deflate } from '../core/ws-internals'

// Each of a socket's zlib streams keeps an output buffer this large for the socket's life (Node's default is
// 16 KiB); bench/notes.md has what it costs and saves.
const CHUNK_SIZE = 1024

type OfferParams = Record<string, Array<string | true>>

/** A route's compression as ws's `perMessageDeflate` option, built once; null when the route declines it. */
export function deflateOffer (settings: CompressionSettings | false): DeflateOffer | null {
  if (settings === false) return null
  return {
    settings,
    options: {
      threshold: settings.threshold,
      concurrencyLimit: settings.concurrencyLimit,
      // false would make ws refuse (400) a client that asks for it; undefined grants it, at no memory cost.
      serverNoContextTakeover: settings.serverNoContextTakeover || undefined,
      clientNoContextTakeover: settings.clientNoContextTakeover,
      serverMaxWindowBits: settings.serverMaxWindowBits,
      clientMaxWindowBits: settings.clientMaxWindowBits,
      zlibDeflateOptions: { level: settings.level, memLevel: settings.memLevel, chunkSize: CHUNK_SIZE },
      zlibInflateOptions: { chunkSize: CHUNK_SIZE }
    }
  }
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
 * `client_max_window_bits` cannot be asked for a smaller window: it is declined unless the route allows the
 * largest, as the server would have to inflate with 2^15 bytes for it.
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
  const serverMaxWindowBits = windowBits(params.server_max_window_bits, settings.serverMaxWindowBits)
  let clientMaxWindowBits
  if (params.client_max_window_bits !== undefined) {
    clientMaxWindowBits = windowBits(params.client_max_window_bits, settings.clientMaxWindowBits)
  } else if (settings.clientMaxWindowBits < 15) {
    return false
  }
  // A window of 2^8, which zlib cannot compress with (it uses 2^9): declined, the connection goes on without.
  if (serverMaxWindowBits === 8 || clientMaxWindowBits === 8) return false
  return { ...offer.options, serverMaxWindowBits, clientMaxWindowBits }
}

// The smaller of the route's window and the one offered; a value that is not a window size is ws's to refuse (400).
function windowBits (offered: Array<string | true> | undefined, own: number): number {
  const value = Number(offered?.[0])
  return value >= 8 && value < own ? value : own
}

/**
 * Once a socket is open: whether it negotiated permessage-deflate (its messages then go out compressed from the
 * route's threshold) and, if so, zlib's work counted both ways.
 */
export function watchCompression (socket: ReliableSocket, route: Route): void {
  const deflate = deflateOf(socket)
  if (deflate === undefined) return
  // Negotiated only where the route offered it.
  socket[kCompressFrom] = route.deflate!.settings.threshold
  countDeflate(deflate, route.ctx.stats.compression)
}

function countDeflate (deflate: Deflate, counters: CompressionCounters): void {
  const { compress, decompress } = deflate
  const { sent, received } = counters
  deflate.compress = function (data, fin, callback) {
    sent.bytesIn += typeof data === 'string' ? Buffer.byteLength(data) : data.length
    compress.call(this, data, fin, (err, out) => {
      if (out !== undefined) {
        sent.bytesOut += out.length
        if (fin) sent.messages++
      }
      callback(err, out)
    })
  }
  deflate.decompress = function (data, fin, callback) {
    received.bytesIn += data.length
    decompress.call(this, data, fin, (err, out) => {
      if (out !== undefined) {
        received.bytesOut += out.length
        if (fin) received.messages++
      }
      callback(err, out)
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

function sizeAtLeast (data: unknown, threshold: number): boolean {
  if (typeof data === 'string') {
    // UTF-8 takes one to three bytes per UTF-16 unit: counting is needed only in between.
    return data.length >= threshold || (data.length * 3 >= threshold && Buffer.byteLength(data) >= threshold)
  }
  if (ArrayBuffer.isView(data) || data instanceof ArrayBuffer) return data.byteLength >= threshold
  if (data instanceof Blob) return data.size >= threshold
  // What ws turns into a buffer with Buffer.from (an array of bytes): as zlib makes of it.
  return true
}
