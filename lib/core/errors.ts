import createError from '@fastify/error'

export const FST_RELIABLE_WS_INVALID_OPTION = createError(
  'FST_RELIABLE_WS_INVALID_OPTION',
  'Invalid option "%s": %s',
  500,
  TypeError
)

export const FST_RELIABLE_WS_ALREADY_REGISTERED = createError(
  'FST_RELIABLE_WS_ALREADY_REGISTERED',
  '@fastify/websocket is already registered: register fastify-reliable-ws alone and pass the @fastify/websocket options as its `websocket` option'
)

export const FST_RELIABLE_WS_DROPPED = createError(
  'FST_RELIABLE_WS_DROPPED',
  'Message dropped: %d bytes are buffered, above the highWaterMark of %d'
)

export const FST_RELIABLE_WS_NOT_OPEN = createError(
  'FST_RELIABLE_WS_NOT_OPEN',
  'Message not sent: the websocket is no longer open (readyState %d)'
)

export const FST_RELIABLE_WS_SESSION_ENDED = createError(
  'FST_RELIABLE_WS_SESSION_ENDED',
  'Message not sent: the session has ended, or was handed over to another instance'
)

export const FST_RELIABLE_WS_NOT_JSON = createError(
  'FST_RELIABLE_WS_NOT_JSON',
  'sendJSON: the value has no JSON representation',
  500,
  TypeError
)

export const FST_RELIABLE_WS_PROM_CLIENT_MISSING = createError(
  'FST_RELIABLE_WS_PROM_CLIENT_MISSING',
  'The `metrics` option needs prom-client, an optional peer dependency: npm install prom-client',
  500
)

export const FST_RELIABLE_WS_METRICS_CONFLICT = createError(
  'FST_RELIABLE_WS_METRICS_CONFLICT',
  'A metric named "%s" is already in the registry (another Fastify instance of this plugin?): give each instance its own `metrics.registry` or `metrics.prefix`',
  500
)

export const FST_RELIABLE_WS_UNSUPPORTED_DEPENDENCY = createError(
  'FST_RELIABLE_WS_UNSUPPORTED_DEPENDENCY',
  '%s %s is not supported: %s is missing or has changed. Install a version within the ranges in fastify-reliable-ws\'s package.json',
  500
)

export const FST_RELIABLE_WS_INVALID_TOPIC = createError(
  'FST_RELIABLE_WS_INVALID_TOPIC',
  'Invalid topic: %s (a topic is 1 to %d printable ASCII characters, no spaces)',
  500,
  TypeError
)

export const FST_RELIABLE_WS_TOO_MANY_SUBSCRIPTIONS = createError(
  'FST_RELIABLE_WS_TOO_MANY_SUBSCRIPTIONS',
  'Subscription refused: the socket already has limits.maxSubscriptions (%d) topics'
)

export const FST_RELIABLE_WS_TOO_MANY_TOPICS = createError(
  'FST_RELIABLE_WS_TOO_MANY_TOPICS',
  'Subscription refused: the instance already has topics.maxTopics (%d) topics'
)

export const FST_RELIABLE_WS_PUBLISH_BACKLOG = createError(
  'FST_RELIABLE_WS_PUBLISH_BACKLOG',
  'Message not published: topic %s already has topics.maxQueuedMessages (%d) messages waiting for its fan-out',
  503
)

export const FST_RELIABLE_WS_BROKER_UNAVAILABLE = createError(
  'FST_RELIABLE_WS_BROKER_UNAVAILABLE',
  'The topic broker cannot take the message: %s',
  503
)

export const FST_RELIABLE_WS_NOT_PUBLISHABLE = createError(
  'FST_RELIABLE_WS_NOT_PUBLISHABLE',
  'wsPublish: data must be a string, a Buffer, a typed array or an ArrayBuffer, got %s',
  500,
  TypeError
)

export const FST_RELIABLE_WS_NO_TOPICS = createError(
  'FST_RELIABLE_WS_NO_TOPICS',
  'This socket\'s route opted out of fastify-reliable-ws (config.reliable: false): it has no topics'
)

export const FST_RELIABLE_WS_REDIS_MISSING = createError(
  'FST_RELIABLE_WS_REDIS_MISSING',
  'The `redis` option needs ioredis, an optional peer dependency, unless it is given a client: npm install ioredis',
  500
)
