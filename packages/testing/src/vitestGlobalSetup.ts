/**
 * Vitest global setup: one PostgreSQL server for the whole test run.
 *
 * When `DATABASE_URL` is unset, resolves a server once (testcontainers, else
 * an embedded PostgreSQL; see `TestDatabase.resolveServer`) and sets
 * `process.env.DATABASE_URL` to its URL. Vitest runs global setups in its
 * main process before it spawns the test workers, and builds the workers'
 * environment from `process.env` at that point, so every worker (and every
 * child process a test spawns) inherits the URL; each test file's
 * `TestDatabase.layer` then only creates its own database on that server.
 * The server is stopped by the returned teardown at the end of the run, or
 * on SIGINT/SIGTERM (after which the process exits with 128 + the signal).
 *
 * When `DATABASE_URL` is set, this does nothing.
 *
 * Wire it in the root `vitest.config.ts`:
 * ```ts
 * test: { globalSetup: ["./packages/testing/src/vitestGlobalSetup.ts"] }
 * ```
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import * as Os from "node:os"
import { resolveServer } from "./TestDatabase.ts"

/**
 * Set in the workers' environment when this setup provisioned the server;
 * its value is the source (`testcontainers` or `embedded`).
 *
 * @category constants
 * @since 0.1.0
 */
export const PROVISIONED_ENV = "OUTBOX_TEST_SERVER"

const signals = ["SIGINT", "SIGTERM"] as const

/**
 * The vitest `setup` hook: resolves the run's server and returns its teardown.
 *
 * @category vitest
 * @since 0.1.0
 */
export const setup = (): Promise<() => Promise<void>> =>
  Effect.runPromise(Effect.gen(function*() {
    const scope = yield* Scope.make()
    const server = yield* Scope.provide(resolveServer, scope).pipe(
      Effect.onError((cause) => Scope.close(scope, Exit.failCause(cause)))
    )
    if (server.source === "DATABASE_URL") return () => Promise.resolve()

    process.env.DATABASE_URL = server.url
    process.env[PROVISIONED_ENV] = server.source
    console.log(`[outbox] ${server.source} PostgreSQL for this run on ${new URL(server.url).host}`)

    // vitest does not always handle these signals; without this, a killed run would leave the server running
    const onSignal = (signal: NodeJS.Signals) =>
      Effect.runFork(
        Scope.close(scope, Exit.void).pipe(
          Effect.ensuring(Effect.sync(() => process.exit(128 + (Os.constants.signals[signal] ?? 0))))
        )
      )
    for (const signal of signals) process.once(signal, onSignal)

    return () =>
      Effect.runPromise(Effect.sync(() => {
        for (const signal of signals) process.off(signal, onSignal)
        delete process.env.DATABASE_URL
        delete process.env[PROVISIONED_ENV]
      }).pipe(Effect.andThen(Scope.close(scope, Exit.void))))
  }))

export default setup
