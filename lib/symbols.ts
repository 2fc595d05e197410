// Per-socket state lives behind symbols so it never collides with ws's own
// fields or with what an application puts on the socket.
export const kRoute = Symbol('reliable-ws.route')
export const kOpenedAt = Symbol('reliable-ws.openedAt')
export const kCause = Symbol('reliable-ws.cause')
export const kPongState = Symbol('reliable-ws.pongState')
export const kPingAt = Symbol('reliable-ws.pingAt')
export const kLatency = Symbol('reliable-ws.latency')
export const kNextPingAt = Symbol('reliable-ws.nextPingAt')
export const kWheelTick = Symbol('reliable-ws.wheelTick')
export const kWheelPos = Symbol('reliable-ws.wheelPos')
export const kOverHighWater = Symbol('reliable-ws.overHighWater')
export const kBytesReadAtOpen = Symbol('reliable-ws.bytesReadAtOpen')
export const kBytesWrittenAtOpen = Symbol('reliable-ws.bytesWrittenAtOpen')
