/**
 * The relay side of `sinks.bench.ts`: a fresh database filled with the
 * run's events through `Outbox.publishAll` (1,000 per transaction, then
 * `VACUUM ANALYZE`), and `OutboxLive.layer()` as users run it, configured by
 * an environment record only, drained into a broker sink built beforehand.
 */
import { PgClient } from "@effect/sql-pg"
import * as Outbox from "@outbox/core/Outbox"
import type { EventInput, OutboxEvent } from "@outbox/core/OutboxEvent"
import { OutboxSink } from "@outbox/core/OutboxSink"
import * as OutboxEnv from "@outbox/runtime/OutboxEnv"
import * as OutboxLive from "@outbox/runtime/OutboxLive"
import * as Relay from "@outbox/runtime/Relay"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import { randomUUID } from "node:crypto"
import { now } from "../shared.ts"
import { type BatchTimes, batchTimes, type Destination } from "./brokers.ts"

/** The relay's pool: `OutboxLive.layerPg`'s default (`OUTBOX_PG_POOL_MAX`, 10). */
export const POOL = 10
/** Events per `Outbox.publishAll` transaction while filling the outbox. */
const ENQUEUE_BATCH = 1_000
/** A drain fails when nothing completed for this long. */
const STALL_MS = 30_000

/** The `g`-th event of a run: the same for the relay's outbox and the ceiling's messages. */
export const input = (g: number): EventInput => ({
  aggregateType: "Order",
  aggregateId: `order-${g % 1000}`,
  eventType: "OrderCreated",
  payload: { n: g, total: 42, currency: "EUR", items: [{ sku: "A-1", quantity: 2 }] }
})

/**
 * The ceiling's events: what the relay would claim for `input(0..n-1)`
 * (fresh tracking ids, no metadata: no trace context in the bench).
 */
export const claimedEvents = (n: number): ReadonlyArray<OutboxEvent> => {
  const createdAt = new Date()
  const lockedUntil = new Date(createdAt.getTime() + 30_000)
  return Array.from({ length: n }, (_, g): OutboxEvent => {
    const e = input(g)
    return {
      id: BigInt(g + 1),
      trackingId: randomUUID(),
      aggregateType: e.aggregateType,
      aggregateId: e.aggregateId,
      eventType: e.eventType,
      payload: e.payload,
      metadata: {},
      retryCount: 0,
      maxRetries: 5,
      createdAt,
      lockToken: 1n,
      lockedUntil
    }
  })
}

/** A relay row: `OutboxLive.layer()` configured only by `env`. */
export interface Mode {
  readonly name: string
  readonly env: Readonly<Record<string, string>>
}

/** The variables this version reads: a mode setting another one is refused (it would run as a copy of the defaults). */
const known = new Set(OutboxEnv.variables.map((v) => v.name))
export const unknownVariables = (mode: Mode): ReadonlyArray<string> => Object.keys(mode.env).filter((name) => !known.has(name))

/**
 * The relay's warnings and errors fail the bench (a failed iteration is
 * logged and retried, so it would otherwise only show as a slower run); the
 * warning every concurrency above 1 logs is expected.
 */
const collectingLogger = (errors: Array<string>) =>
  Logger.make((options) => {
    if (options.logLevel !== "Warn" && options.logLevel !== "Error" && options.logLevel !== "Fatal") return
    const message = Array.isArray(options.message) ? options.message.map(String).join(" ") : String(options.message)
    if (options.logLevel === "Warn" && message.includes("order is not kept")) return
    errors.push(`relay ${options.logLevel}: ${message}`)
  })

/** A database ready for one relay run: `n` PENDING events, vacuumed and analysed. */
export const filledDatabase = (server: string, n: number) =>
  Effect.gen(function*() {
    const database = yield* TestDatabase.freshDatabase(server)
    const pg = yield* PgClient.make({ url: Redacted.make(database.url), maxConnections: POOL }).pipe(
      Effect.provide(Reactivity.layer)
    )
    const context = Context.make(SqlClient.SqlClient, pg).pipe(Context.add(PgClient.PgClient, pg))
    yield* OutboxMigrations.run.pipe(Effect.provideContext(context))
    const producer = yield* Layer.build(PgOutboxStore.layerWithoutMigrations().pipe(Layer.provide(Layer.succeedContext(context))))
    for (let from = 0; from < n; from += ENQUEUE_BATCH) {
      const inputs = Array.from({ length: Math.min(ENQUEUE_BATCH, n - from) }, (_, i) => input(from + i))
      yield* Outbox.transaction(Outbox.publishAll(inputs)).pipe(Effect.provideContext(producer))
    }
    yield* pg`VACUUM ANALYZE outbox`
    const [row] = yield* pg<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE status = 'PENDING'`
    if (row!.n !== n) return yield* Effect.fail(new Error(`${row!.n} events pending after the preload, expected ${n}`))
    return { context, sql: pg }
  })

export interface Drain {
  readonly seconds: number
  readonly cpuSeconds: number
  readonly stats: Relay.RelayStats
  /** Rows COMPLETED in the database after the drain (with `OUTBOX_COMPLETED=delete`: rows gone). */
  readonly completedRows: number
  readonly errors: ReadonlyArray<string>
  /** Time inside the sink's `deliverBatch`, per call (from the call to its outcomes). */
  readonly times: BatchTimes
}

/** `sink` with its `deliverBatch` timed into `times` (one clock read before and after each batch). */
const timedSink = (sink: OutboxSink["Service"], times: BatchTimes): OutboxSink["Service"] => {
  const deliverBatch = sink.deliverBatch
  if (deliverBatch === undefined) return sink
  return OutboxSink.of({
    ...sink,
    deliverBatch: (events) =>
      Effect.suspend(() => {
        const t0 = now()
        return Effect.tap(deliverBatch(events), () =>
          Effect.sync(() => {
            times.batchMs += now() - t0
            times.batches++
            times.events += events.length
          }))
      })
  })
}

/**
 * Builds `destination`'s sink (not timed), then times `OutboxLive.layer()`
 * from its start until the relay has completed `n` events (stats polled
 * every 2 ms), with this process's CPU over the same window and the time
 * spent inside the sink's `deliverBatch`; `before` runs
 * just before the start (a profiler, a machine sample) and `after` just
 * after the last completion. The relay is stopped (not timed) before returning.
 */
export const drain = <A>(options: {
  readonly context: Context.Context<SqlClient.SqlClient | PgClient.PgClient>
  readonly destination: Destination
  readonly mode: Mode
  readonly n: number
  readonly before: Effect.Effect<A>
  readonly after: (a: A) => Effect.Effect<void>
}): Effect.Effect<Drain, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const times = batchTimes()
    const sink = timedSink(Context.get(yield* Layer.build(options.destination.sink), OutboxSink), times)
    const errors: Array<string> = []
    const sql = Context.get(options.context, SqlClient.SqlClient)
    const { seconds, cpuSeconds, stats } = yield* Effect.scoped(Effect.gen(function*() {
      const a = yield* options.before
      const cpu0 = process.cpuUsage()
      const t0 = now()
      const relay = Context.get(
        yield* Layer.build(
          OutboxLive.layer().pipe(
            Layer.provide(Layer.succeed(OutboxSink)(sink)),
            Layer.provide(Layer.succeedContext(options.context)),
            Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnvRecord({ ...options.mode.env }))),
            Layer.provide(Logger.layer([collectingLogger(errors)]))
          )
        ),
        Relay.Relay
      )
      let last = -1
      let since = now()
      while (true) {
        const stats = yield* relay.stats
        if (stats.completed >= options.n) {
          const seconds = (now() - t0) / 1000
          const cpu = process.cpuUsage(cpu0)
          yield* options.after(a)
          return { seconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, stats }
        }
        if (errors.length > 0) return yield* Effect.fail(new Error(`${errors.length} relay warning(s), first: ${errors[0]}`))
        if (stats.completed !== last) {
          last = stats.completed
          since = now()
        } else if (now() - since > STALL_MS) {
          return yield* Effect.fail(new Error(`stalled at ${stats.completed}/${options.n} completed (${JSON.stringify(stats)})`))
        }
        yield* Effect.sleep(2)
      }
    }))
    const [row] = yield* sql<{ completed: number; total: number }>`
      SELECT count(*) FILTER (WHERE status = 'COMPLETED')::int AS completed, count(*)::int AS total FROM outbox`
    // OUTBOX_COMPLETED=delete: a completed event's row is gone
    const completedRows = options.mode.env.OUTBOX_COMPLETED === "delete" ? options.n - row!.total : row!.completed
    return { seconds, cpuSeconds, stats, completedRows, errors, times }
  })
