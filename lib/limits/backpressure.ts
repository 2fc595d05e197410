import type { Route, ReliableSocket } from '../core/shapes'
import { failConnection } from '../core/socket-errors'
import { FST_RELIABLE_WS_DROPPED } from '../core/errors'
import { kCause, kOverHighWater, kTcp } from '../core/symbols'
import { OPEN } from '../protocol/protocol'

const EMPTY = Buffer.alloc(0)

/** A send refused because the peer reads too slowly: drop it, or close the peer with 1013. */
export function refuse (socket: ReliableSocket, route: Route, buffered: number, cb: ((err?: Error) => void) | undefined): false {
  const stats = route.ctx.stats
  const { highWaterMark, onLimit } = route.backpressure
  route.counters.dropped++
  if (onLimit === 'close') {
    stats.slowConsumersClosed++
    socket[kCause] = 'backpressure'
    route.ctx.warnings.warn(socket, route, { bufferedBytes: buffered, highWaterMark }, 'websocket slow consumer: closing with 1013')
    // Queued behind the buffered data, so a consumer that reads again still gets it;
    // ws's close timer (closeTimeout = shutdown.timeoutMs) ends one that never does.
    socket.close(1013, 'Slow consumer')
  }
  if (cb !== undefined) process.nextTick(cb, new FST_RELIABLE_WS_DROPPED(buffered, highWaterMark))
  return false
}

/** After a send: below the mark the buffered amount is read only here, once per message. */
export function watchHighWater (socket: ReliableSocket, route: Route): void {
  if (!socket[kOverHighWater] && socket.bufferedAmount > route.backpressure.highWaterMark) crossHighWater(socket, route)
}

/** The buffered amount has just risen above highWaterMark: count it and watch for the drain. */
function crossHighWater (socket: ReliableSocket, route: Route): void {
  socket[kOverHighWater] = true
  route.ctx.stats.backpressureEvents++
  route.ctx.warnings.warn(socket, route, { bufferedBytes: socket.bufferedAmount, highWaterMark: route.backpressure.highWaterMark },
    'websocket backpressure: buffered bytes above highWaterMark')
  awaitFlush(socket, route)
}

// ws has no outbound 'drain'. While the TCP socket holds data, an empty
// write's callback runs once everything written before it has reached the
// kernel: the earliest moment the buffered amount can have fallen (it puts no
// bytes on the wire). When the TCP buffer is already empty the rest sits in
// ws's own queue (permessage-deflate at work); an empty write would then
// complete at once, again and again, starving the compression it waits for,
// so the check waits for the next turn of the event loop instead.
// Without a TCP connection (injectWS) there is no buffer to wait on either.
function awaitFlush (socket: ReliableSocket, route: Route): void {
  const tcp = socket[kTcp]
  if (tcp === null || !(tcp.writableLength > 0)) {
    setImmediate(checkDrain, socket, route)
  } else {
    tcp.write(EMPTY, (err) => { if (err == null) checkDrain(socket, route) })
  }
}

function checkDrain (socket: ReliableSocket, route: Route): void {
  if (socket.readyState !== OPEN) return
  // At or below, so a lowWaterMark of 0 means "once everything is flushed".
  if (socket.bufferedAmount <= route.backpressure.lowWaterMark) {
    socket[kOverHighWater] = false
    try {
      socket.emit('drain')
    } catch (err) {
      // Thrown from a write callback or setImmediate, it would take the process down.
      failConnection(socket, err)
    }
  } else {
    awaitFlush(socket, route)
  }
}
