// The client (fastify-reliable-ws/client): a WebSocket that reconnects and resumes, for browsers and Node, so it imports
// only lib/protocol/ (tsconfig.browser.json checks it against the browser's types alone).
export { ReliableWebSocket } from './reliable-websocket'
export type { ReliableWebSocketEventMap } from './reliable-websocket'
export { DropEvent, GiveUpEvent, ReconnectingEvent, ReliableCloseEvent, SessionLostEvent } from './events'
export { isRetryable } from './close-codes'
export type { CloseInfo } from './close-codes'
export { CLIENT_DEFAULTS, InvalidOptionError } from './options'
export type { HeartbeatSettings, ReliableWebSocketOptions, WebSocketConstructor, WebSocketLike } from './options'
export type { BackoffSettings } from './backoff'
export { PROTOCOL } from '../protocol/protocol'
