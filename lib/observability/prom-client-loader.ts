import { FST_RELIABLE_WS_PROM_CLIENT_MISSING } from '../core/errors'
import { loadOptionalPeer } from '../core/optional-peer'

export type PromClient = typeof import('prom-client')

/** prom-client, an optional peer dependency: required only when the `metrics` option asks for it. */
export function loadPromClient (load?: (id: string) => unknown): PromClient {
  return loadOptionalPeer('prom-client', FST_RELIABLE_WS_PROM_CLIENT_MISSING, load)
}
