import type { FastifyErrorConstructor } from '@fastify/error'

/**
 * An optional peer dependency, required only when an option asks for it, at registration. Not installed, it is the
 * coded error `Missing` (whose message says what to install); anything else that fails in loading it is passed on as
 * it is. `load` is there for tests.
 */
export function loadOptionalPeer<T> (id: string, Missing: FastifyErrorConstructor, load: (id: string) => unknown = require): T {
  try {
    return load(id) as T
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') throw new Missing({ cause: err })
    throw err
  }
}
