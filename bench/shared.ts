/**
 * Helpers shared by the benchmarks: timing, peak RSS, a fresh database with
 * a client, preloading the outbox, draining it with the real relay, and a
 * tracer whose spans go nowhere.
 */
import { PgClient } from "@effect/sql-pg"
import * as OutboxConfig from "@outbox/core/OutboxConfig"
import * as OutboxSink from "@outbox/core/OutboxSink"
import * as OutboxTelemetry from "@outbox/runtime/OutboxTelemetry"
import * as Relay from "@outbox/runtime/Relay"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import { BatchSpanProcessor, type ReadableSpan, type SpanExporter } from "@opentelemetry/sdk-trace-base"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Redacted from "effect/Redacted"
import * as SqlClient from "effect/sql/SqlClient"
import * as Fs from "node:fs"

export const now = () => performance.now()
export const rssMb = () => process.memoryUsage().rss / 1024 / 1024
export const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })

/** Samples RSS every 100 ms while `effect` runs. */
export const withPeakRss = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    let peak = rssMb()
    const start = peak
    const timer = setInterval(() => (peak = Math.max(peak, rssMb())), 100)
    const result = yield* Effect.ensuring(effect, Effect.sync(() => clearInterval(timer)))
    return { result, start, peak: Math.max(peak, rssMb()), end: rssMb() }
  })

/** Wall time and this process's CPU time (user + system) of `effect`. */
export const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const t0 = now()
    const cpu0 = process.cpuUsage()
    const result = yield* effect
    const cpu = process.cpuUsage(cpu0)
    return { result, seconds: (now() - t0) / 1000, cpuSeconds: (cpu.user + cpu.system) / 1e6 }
  })

export const reset = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql`TRUNCATE outbox`
})

/** `n` PENDING events in one INSERT (the outbox emptied first), then VACUUM ANALYZE. */
export const preload = (n: number) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* reset
    yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload)
               SELECT 'Order', (g % 1000)::text, 'OrderCreated', jsonb_build_object('n', g)
               FROM generate_series(1, ${n}) g`
    yield* sql`VACUUM ANALYZE outbox`.pipe(Effect.catch(() => sql`ANALYZE outbox`))
  })

/**
 * Runs the real relay (no-op sink, claims of at most `batch`, starting at `minBatch`, by default the
 * library's) until `n` events completed.
 */
export const drainWithRelay = (n: number, concurrency: number, batch = 100, minBatch?: number) =>
  Effect.scoped(Effect.gen(function*() {
    const context = yield* Layer.build(
      Relay.layer.pipe(
        Layer.provide(OutboxSink.layerHandler(() => Effect.void)),
        Layer.provide(OutboxConfig.layer({
          batchSize: batch,
          ...(minBatch === undefined ? {} : { minBatchSize: minBatch }),
          concurrency,
          pollInterval: Duration.millis(10)
        }))
      )
    )
    const relay = Context.get(context, Relay.Relay)
    while ((yield* relay.stats).completed < n) yield* Effect.sleep("20 millis")
  }))

/**
 * A fresh database on the resolved server with a pool of `maxConnections`;
 * `run` provides it (SqlClient, PgClient) and the store without migrations.
 */
export const openDatabase = (maxConnections = 16) =>
  Effect.gen(function*() {
    const server = yield* TestDatabase.serverUrl
    const database = yield* TestDatabase.freshDatabase(server)
    const client = yield* PgClient.make({ url: Redacted.make(database.url), maxConnections }).pipe(
      Effect.provide((yield* Effect.promise(() => import("effect/reactivity/Reactivity"))).layer)
    )
    const services = Layer.succeedContext(Context.make(SqlClient.SqlClient, client).pipe(Context.add(PgClient.PgClient, client)))
    const run = <A, E>(effect: Effect.Effect<A, E, any>) =>
      effect.pipe(Effect.provide(PgOutboxStore.layerWithoutMigrations().pipe(Layer.provideMerge(services)))) as Effect.Effect<A, E>
    return { database, services, run }
  })

/** Spans exported so far by `droppingTracer` layers. */
export const exportedSpans = { count: 0 }

const droppingExporter: SpanExporter = {
  export(spans: Array<ReadableSpan>, done) {
    exportedSpans.count += spans.length
    done({ code: 0 })
  },
  shutdown: () => Promise.resolve()
}

/**
 * An OpenTelemetry SDK tracer (`BatchSpanProcessor`) over an exporter that
 * accepts every batch and drops it, counting its spans in `exportedSpans`:
 * the cost measured is the relay's and the SDK's, not a collector's network.
 * One per drain: closing the layer shuts its span processor down for good.
 */
export const droppingTracer = (): Layer.Layer<never> =>
  OutboxTelemetry.layerTracer(new BatchSpanProcessor(droppingExporter, { maxQueueSize: 65_536, maxExportBatchSize: 2048 }), {
    serviceName: "outbox-bench"
  }) as Layer.Layer<never>

/**
 * Writes `bench/results/<name>.json`: `results` stamped with when and on which Node version they were
 * measured, so that runs on different days or machines can be told apart.
 */
export const writeResults = (name: string, results: Record<string, unknown>): void => {
  Fs.mkdirSync(new URL("./results/", import.meta.url), { recursive: true })
  Fs.writeFileSync(
    new URL(`./results/${name}.json`, import.meta.url),
    JSON.stringify({ at: new Date().toISOString(), node: process.version, ...results }, null, 2)
  )
}

/**
 * Runs a bench's `main` in a scope and exits: 0 when it finished, 1 with the error printed (the database
 * pools it opened would otherwise keep the process alive).
 */
export const runMain = <E>(main: Effect.Effect<void, E, Scope.Scope>): void => {
  Effect.runPromise(Effect.scoped(main)).then(
    () => process.exit(0),
    (error) => {
      console.error(error)
      process.exit(1)
    }
  )
}

/** Milliseconds since the epoch with sub-millisecond resolution (one clock for every timestamp of a process). */
export const epochMs = () => performance.timeOrigin + performance.now()

/** The machine's CPU time so far, from `/proc/stat` (all cores, jiffies): `total` and `idle` (idle + iowait). */
export const machineCpu = (): { readonly total: number; readonly idle: number } => {
  const fields = Fs.readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/).slice(1, 9).map(Number)
  // user nice system idle iowait irq softirq steal (guest time is already counted in user)
  return { total: fields.reduce((a, b) => a + b, 0), idle: fields[3]! + fields[4]! }
}

/** Busy share of the whole machine (every core, PostgreSQL included) between two `machineCpu` samples, in %. */
export const machineCpuPercent = (from: ReturnType<typeof machineCpu>, to: ReturnType<typeof machineCpu>): number => {
  const total = to.total - from.total
  return total <= 0 ? 0 : (1 - (to.idle - from.idle) / total) * 100
}

/** The `p`-th percentile (0–100, nearest rank) of `sorted`, which must be sorted ascending. */
export const percentile = (sorted: ArrayLike<number>, p: number): number =>
  sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!

/**
 * CPU time (seconds, user + system) of the PostgreSQL backends connected to `database`, by pid, from
 * `/proc/<pid>/stat` (Linux, same host): with two samples, what one system cost the server, apart from
 * whatever else runs on the machine. `pids` come from `pg_stat_activity`; the caller leaves out its own.
 */
export const backendCpu = (pids: ReadonlyArray<number>): Map<number, number> => {
  const cpu = new Map<number, number>()
  for (const pid of pids) {
    try {
      // the command may hold spaces or parentheses: the fields start after the last ")"
      const stat = Fs.readFileSync(`/proc/${pid}/stat`, "utf8")
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      cpu.set(pid, (Number(fields[11]) + Number(fields[12])) / 100) // utime, stime (fields 14, 15) in USER_HZ (100)
    } catch {
      // the backend exited meanwhile
    }
  }
  return cpu
}

/** Seconds of backend CPU between two `backendCpu` samples (a backend new in `to` counts from zero). */
export const backendCpuSeconds = (from: ReadonlyMap<number, number>, to: ReadonlyMap<number, number>): number => {
  let seconds = 0
  for (const [pid, s] of to) seconds += s - (from.get(pid) ?? 0)
  return seconds
}
