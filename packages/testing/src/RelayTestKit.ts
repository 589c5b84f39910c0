/**
 * TestClock helpers for relay tests.
 *
 * Under `TestClock` every `sleep` and `Schedule` of the relay waits for the
 * test to move the clock, while real I/O (a PostgreSQL round trip) still
 * takes real time. These helpers move virtual time in steps and give real
 * I/O a moment to complete between steps, so tests control lease expiry,
 * heartbeats, reaping and backoff without real waiting for any of them.
 *
 * @since 0.1.0
 */
import { OutboxStore } from "@outbox/core/OutboxStore"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as SqlClient from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import * as MemoryOutboxStore from "./MemoryOutboxStore.ts"

/**
 * Yields to real I/O briefly (a couple of live milliseconds) without moving
 * virtual time.
 *
 * @category combinators
 * @since 0.1.0
 */
export const settle: Effect.Effect<void> = TestClock.withLive(Effect.sleep(Duration.millis(2)))

/**
 * Polls `condition` (letting real I/O run between polls, virtual time frozen)
 * until it holds; fails after `timeout` of real time with `message`.
 *
 * @category combinators
 * @since 0.1.0
 */
export const eventually = <E, R>(
  condition: Effect.Effect<boolean, E, R>,
  options: { readonly timeout?: Duration.Input; readonly message?: string } = {}
): Effect.Effect<void, E | Error, R> =>
  Effect.gen(function*() {
    const limit = Duration.toMillis(Duration.fromInputUnsafe(options.timeout ?? "10 seconds"))
    for (let waited = 0; waited <= limit; waited += 2) {
      if (yield* condition) return
      yield* settle
    }
    return yield* Effect.fail(new Error(options.message ?? "condition did not hold in time"))
  })

/**
 * Moves virtual time forward by `total` in increments of `step`, letting
 * real I/O settle after each increment (so a loop woken by one step has
 * finished its round trip before the next).
 *
 * @category combinators
 * @since 0.1.0
 */
export const advance = (
  total: Duration.Input,
  step: Duration.Input = "1 second"
): Effect.Effect<void> =>
  Effect.gen(function*() {
    const totalMs = Duration.toMillis(Duration.fromInputUnsafe(total))
    const stepMs = Duration.toMillis(Duration.fromInputUnsafe(step))
    for (let moved = 0; moved < totalMs; moved += stepMs) {
      yield* TestClock.adjust(Duration.millis(Math.min(stepMs, totalMs - moved)))
      yield* settle
      yield* settle
    }
  })

/**
 * Moves virtual time in steps of `step` until `condition` holds; fails after
 * `max` of virtual time.
 *
 * @category combinators
 * @since 0.1.0
 */
export const advanceUntil = <E, R>(
  condition: Effect.Effect<boolean, E, R>,
  options: { readonly step?: Duration.Input; readonly max?: Duration.Input; readonly message?: string } = {}
): Effect.Effect<void, E | Error, R> =>
  Effect.gen(function*() {
    const stepMs = Duration.toMillis(Duration.fromInputUnsafe(options.step ?? "100 millis"))
    const maxMs = Duration.toMillis(Duration.fromInputUnsafe(options.max ?? "10 minutes"))
    for (let moved = 0; moved <= maxMs; moved += stepMs) {
      if (yield* condition) return
      yield* advance(Duration.millis(stepMs), Duration.millis(stepMs))
    }
    return yield* Effect.fail(new Error(options.message ?? "condition did not hold within the virtual time limit"))
  })

/**
 * The two stores the relay's TestClock tests run against, each empty per
 * test: a new memory store, and the PostgreSQL store driven by Effect's
 * `Clock` (`timeSource: "clock"`, so TestClock moves its leases and backoffs)
 * over a truncated outbox (it needs the test database's `SqlClient`).
 *
 * @category constants
 * @since 0.1.0
 */
export const stores = [
  { name: "memory store", layer: MemoryOutboxStore.layer },
  {
    name: "PostgreSQL store",
    layer: Layer.effect(
      OutboxStore,
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`TRUNCATE outbox`
        return yield* PgOutboxStore.make({ timeSource: "clock" })
      })
    ).pipe(Layer.orDie)
  }
] as const
