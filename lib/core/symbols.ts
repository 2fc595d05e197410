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
export const kHeartbeatDueAt = Symbol('reliable-ws.heartbeatDueAt')
export const kLastMessageAt = Symbol('reliable-ws.lastMessageAt')
export const kTat = Symbol('reliable-ws.tat')
export const kRateNoticeAt = Symbol('reliable-ws.rateNoticeAt')
export const kIp = Symbol('reliable-ws.ip')
export const kLog = Symbol('reliable-ws.log')
// The raw upgrade request of a reliable route: the subprotocol may be chosen.
export const kOffersProtocol = Symbol('reliable-ws.offersProtocol')
// The socket speaks the reliable subprotocol.
export const kFramed = Symbol('reliable-ws.framed')
export const kSendControl = Symbol('reliable-ws.sendControl')
// Control pongs not yet handed to the operating system, and the socket's one callback that counts them out.
export const kPendingPongs = Symbol('reliable-ws.pendingPongs')
export const kPongSent = Symbol('reliable-ws.pongSent')
// The session a socket of a route with sessions carries, and the one a raw upgrade request asked to resume.
export const kSession = Symbol('reliable-ws.session')
export const kResume = Symbol('reliable-ws.resume')
export const kTransmit = Symbol('reliable-ws.transmit')
// A client's message that waited for its session's store (resume.durable), its turn come.
export const kDeliver = Symbol('reliable-ws.deliver')
export const kPublished = Symbol('reliable-ws.published')
export const kOnConnectPending = Symbol('reliable-ws.onConnectPending')
// The code of the close frame the server sent (1006 while none), for a peer ws stopped reading before it could answer.
export const kCloseCodeSent = Symbol('reliable-ws.closeCodeSent')
// When a deadline visit first found the message now arriving unfinished (-1: none, or one completed since).
export const kMessageStartedAt = Symbol('reliable-ws.messageStartedAt')
// How many 'error' listeners a socket had when ws's server emitted 'connection' (see fastifyWebsocketErrorListener).
export const kErrorListeners = Symbol('reliable-ws.errorListeners')
// The ServerResponse @fastify/websocket routed an upgrade request with, until the socket is open.
export const kUpgradeResponse = Symbol('reliable-ws.upgradeResponse')
// The connection ws took over at the upgrade (the request's socket), null behind @fastify/websocket's injectWS.
export const kTcp = Symbol('reliable-ws.tcp')
// The application's last send had `fin: false`: a fragmented message is under way and must not be interrupted.
export const kMidMessage = Symbol('reliable-ws.midMessage')
// Messages this many bytes or larger go out compressed; Infinity when the socket did not negotiate permessage-deflate.
export const kCompressFrom = Symbol('reliable-ws.compressFrom')
// The compression settings a raw upgrade request's route allows, as ws's perMessageDeflate option (false: none).
export const kDeflateOffer = Symbol('reliable-ws.deflateOffer')
// The topics a socket (of a route without a session) or a session subscribes to; null until the first.
export const kTopics = Symbol('reliable-ws.topics')
// Where a session stands in each topic it subscribes to (a TopicPlace each, core/shapes.ts), for its handover.
export const kPlaces = Symbol('reliable-ws.places')
