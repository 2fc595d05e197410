/** Whether a value some code may have answered with a promise is one: only then is the caller's path asynchronous. */
export function isThenable (value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | null)?.then === 'function'
}
