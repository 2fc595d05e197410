import { FST_RELIABLE_WS_PROM_CLIENT_MISSING } from '../core/errors'

export type PromClient = typeof import('prom-client')

/**
 * prom-client is an optional peer dependency: it is required only when the
 * `metrics` option asks for it, at registration. `load` is there for tests.
 */
export function loadPromClient (load: (id: string) => unknown = require): PromClient {
  try {
    return load('prom-client') as PromClient
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') throw new FST_RELIABLE_WS_PROM_CLIENT_MISSING({ cause: err })
    throw err
  }
}
