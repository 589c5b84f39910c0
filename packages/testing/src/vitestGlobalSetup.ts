/**
 * Vitest global setup: when `DATABASE_URL` is unset, resolves ONE PostgreSQL
 * server for the whole run (testcontainers, else embedded) and exports its
 * URL as `DATABASE_URL`, which the test workers (spawned afterwards) inherit.
 * Each test file still creates and drops its own database on it.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { serverUrl } from "./TestDatabase.ts"

/**
 * @category vitest
 * @since 0.1.0
 */
export const setup = (): Promise<() => Promise<void>> => {
  const existing = process.env.DATABASE_URL
  if (existing !== undefined && existing !== "") return Promise.resolve(() => Promise.resolve())
  return Effect.runPromise(Effect.gen(function*() {
    const scope = yield* Scope.make()
    const url = yield* Scope.provide(serverUrl, scope)
    process.env.DATABASE_URL = url
    process.env.OUTBOX_TEST_SERVER = "provisioned"
    return () => Effect.runPromise(Scope.close(scope, Exit.void))
  }))
}

export default setup
