/**
 * `npm run bench:producer`: the Node CPU `Outbox.transaction(Outbox.publish(event))`
 * costs over the same three statements (BEGIN, the outbox INSERT, COMMIT)
 * hand-written with `@effect/sql-pg`. Target: ≤ 15 %.
 *
 * Variants, the same ~320-byte payload in each:
 * - hand-written: `sql.withTransaction(sql\`INSERT INTO outbox (...) VALUES
 *   (...) RETURNING id, tracking_id, created_at\`)` with the columns and
 *   values the library writes, the payload `JSON.stringify`d by hand: the
 *   target's reference;
 * - hand-written, `sql.unsafe`: the library's very statement text and values
 *   (no template to compile), for context;
 * - `Outbox.transaction(Outbox.publish(event))` over
 *   `PgOutboxStore.layerWithoutMigrations()`, under Effect's built-in tracer
 *   (no exporting tracer installed), metrics counted.
 *
 * Two measures:
 * 1. **Without a database**: the three programs over a `SqlClient` built
 *    like `PgClient`'s (its compiler, prepared transaction control) on a
 *    connection that answers every statement at once with the row
 *    PostgreSQL returns. No I/O and no driver, so the difference between
 *    the variants is the library's own JavaScript, timed in a tight loop of
 *    one fiber (rotating rounds, `process.cpuUsage`): on this shared 2-core
 *    machine it is the figure that holds from run to run.
 * 2. **End to end**: BENCH_CLIENTS fibers on a `PgClient` pool of as many
 *    connections each run BENCH_TX single-event transactions per round on a
 *    fresh migrated database (the outbox truncated before each round),
 *    variants rotated (A B C, B C A, …, after a warm-up round). Node CPU per
 *    transaction is the whole process's `process.cpuUsage` delta over the
 *    round's transactions, so the driver's encoding and the socket writes are
 *    in it; the library's share is paired per round (median) and pooled.
 *    Most of a transaction's Node CPU here is the driver's I/O (a third of it
 *    system time), and it moves with the machine's load from round to round
 *    by more than the library adds: read 1. for the library's cost, 2. for
 *    what it is a share of.
 *
 * The packages are the compiled `dist/` a user installs: the script builds
 * them and runs this file without the `@outbox/source` condition (under tsx
 * from source, esbuild's `__name` helpers and the transpiled code add Node
 * CPU of their own and overstate the library's share).
 *
 * Environment: BENCH_ROUNDS (default 15) and BENCH_TX (default 500, per
 * fiber per variant per round) end to end, BENCH_CLIENTS (default 4),
 * BENCH_FREE_ROUNDS (default 9; 0 skips 1.) and BENCH_FREE_TX (default
 * 20,000) without a database, BENCH_ONLY (a comma-separated list of
 * variants, e.g. `publish` under `node --cpu-prof`), BENCH_SYNC_COMMIT (`1`:
 * the scratch database keeps `synchronous_commit = on`; default off, which
 * shortens the run without changing the statements Node sends),
 * DATABASE_URL (the server, default
 * `postgres://postgres@127.0.0.1:5432/postgres`; a scratch database is
 * created on it and dropped). Writes bench/results/producer.json.
 */
import { PgClient } from "@effect/sql-pg"
import * as Outbox from "@outbox/core/Outbox"
import type * as OutboxStore from "@outbox/core/OutboxStore"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PgOutboxStore from "@outbox/sql/PgOutboxStore"
import * as PublishStatement from "@outbox/sql/PublishStatement"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Reactivity from "effect/reactivity/Reactivity"
import * as Redacted from "effect/Redacted"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlConnection from "effect/sql/SqlConnection"
import * as Stream from "effect/Stream"
import { randomBytes } from "node:crypto"
import * as Fs from "node:fs"

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 15)
const TX = Number(process.env.BENCH_TX ?? 500)
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 4)
const FREE_ROUNDS = Number(process.env.BENCH_FREE_ROUNDS ?? 9)
const FREE_TX = Number(process.env.BENCH_FREE_TX ?? 20_000)
const ONLY = process.env.BENCH_ONLY
const SYNC_COMMIT = process.env.BENCH_SYNC_COMMIT === "1"
const SERVER = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"

/** ~320 bytes of JSON: an order with three lines and an address. */
const payload = {
  orderId: "ord_8F3K2M9Q",
  customerId: "cus_4821",
  currency: "EUR",
  total: 129.9,
  items: [
    { sku: "SKU-1001", quantity: 2, price: 19.95 },
    { sku: "SKU-2002", quantity: 1, price: 59.99 },
    { sku: "SKU-3003", quantity: 3, price: 10.01 }
  ],
  shipTo: { street: "12 Rue de la Paix", city: "Paris", postcode: "75002", country: "FR" }
}
const event = { aggregateType: "Order", aggregateId: "o-1", eventType: "OrderCreated", payload }
/** The library's statement for one event into `outbox`, for the `sql.unsafe` variant. */
const libraryText = PublishStatement.insert("\"outbox\"", [{
  aggregateType: "",
  aggregateId: "",
  eventType: "",
  payloadJson: "",
  metadataJson: "",
  maxRetries: 5
}]).text

type Tx = Effect.Effect<unknown, unknown, SqlClient.SqlClient | OutboxStore.OutboxStore>

const variants = {
  handWritten: Effect.flatMap(Effect.service(SqlClient.SqlClient), (sql) =>
    sql.withTransaction(
      sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, metadata, max_retries)
          VALUES (${event.aggregateType}, ${event.aggregateId}, ${event.eventType}, ${JSON.stringify(payload)}::jsonb, ${"{}"}::jsonb, ${5})
          RETURNING id, tracking_id, created_at`
    )),
  handWrittenUnsafe: Effect.flatMap(Effect.service(SqlClient.SqlClient), (sql) =>
    sql.withTransaction(
      sql.unsafe(libraryText, [event.aggregateType, event.aggregateId, event.eventType, JSON.stringify(payload), "{}", 5])
    )),
  publish: Outbox.transaction(Outbox.publish(event))
} satisfies Record<string, Tx>
type Variant = keyof typeof variants
const allVariants = Object.keys(variants) as ReadonlyArray<Variant>
const labels: Record<Variant, string> = {
  handWritten: "hand-written sql.withTransaction(sql`INSERT`)",
  handWrittenUnsafe: "hand-written, sql.unsafe(library's text)",
  publish: "Outbox.transaction(Outbox.publish(event))"
}

const median = (xs: ReadonlyArray<number>) => {
  const sorted = [...xs].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}
const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })
const signed = (n: number, digits: number, unit: string) => `${n >= 0 ? "+" : ""}${fmt(n, digits)} ${unit}`
/** `keys` in rounds, each round starting one variant further (A B C, B C A, …); `warmup` rounds first, not kept. */
const rotate = function*<K>(keys: ReadonlyArray<K>, rounds: number, warmup: number) {
  for (let round = -warmup; round < rounds; round++) {
    for (let k = 0; k < keys.length; k++) yield { key: keys[(k + Math.max(round, 0)) % keys.length]!, kept: round >= 0 }
  }
}

/** 1. The programs over a connection that answers at once: the library's own JavaScript per transaction. */
const withoutDatabase = Effect.gen(function*() {
  const rows = [{ id: 1n, tracking_id: "0b6f6b4e-6f1c-4c1e-9a57-3b1f0e8c2d11", created_at: new Date(), ok: false }]
  const connection: SqlConnection.Connection = {
    execute: () => Effect.succeed(rows),
    executeRaw: () => Effect.succeed({ command: "COMMIT", rows }),
    executeStream: () => Stream.empty,
    executeValues: () => Effect.succeed([]),
    executeValuesUnprepared: () => Effect.succeed([]),
    executeUnprepared: () => Effect.succeed(rows)
  }
  const client = yield* SqlClient.make({
    acquirer: Effect.succeed(connection),
    borrower: (f) => f(connection),
    transactionAcquirer: Effect.succeed(connection),
    compiler: PgClient.makeCompiler(),
    driver: "pg",
    prepareTransactionControls: true,
    releaseSavepoint: (name) => `RELEASE SAVEPOINT ${name}`,
    spanAttributes: [["db.system.name", "postgresql"]]
  })
  const context = yield* Layer.build(
    PgOutboxStore.layerWithoutMigrations().pipe(Layer.provideMerge(Layer.succeed(SqlClient.SqlClient, client)))
  )
  const usPerTx = (tx: Tx) =>
    Effect.provideContext(
      Effect.gen(function*() {
        const cpu0 = process.cpuUsage()
        for (let i = 0; i < FREE_TX; i++) yield* tx
        const cpu = process.cpuUsage(cpu0)
        return (cpu.user + cpu.system) / FREE_TX
      }),
      context
    )
  const us: Record<Variant, Array<number>> = { handWritten: [], handWrittenUnsafe: [], publish: [] }
  for (const { key, kept } of rotate(allVariants, FREE_ROUNDS, 3)) {
    const perTx = yield* usPerTx(variants[key])
    if (kept) us[key].push(perTx)
  }
  const added = (key: Variant) => median(us[key].map((v, r) => v - us.handWritten[r]!))
  console.log(`\n1. Without a database (${FREE_ROUNDS} rotating rounds × ${fmt(FREE_TX)} transactions, one fiber; medians):`)
  console.log(`  ${"variant".padEnd(46)} ${"CPU/tx".padStart(10)}   vs hand-written (paired)`)
  for (const key of allVariants) {
    const vs = key === "handWritten" ? "" : signed(added(key), 2, "µs").padStart(12)
    console.log(`  ${labels[key].padEnd(46)} ${`${fmt(median(us[key]), 2)} µs`.padStart(10)} ${vs}`)
  }
  return Object.fromEntries(allVariants.map((key) => [key, { cpuUsPerTx: median(us[key]), addedUsPerTx: added(key), perRound: us[key] }]))
})

interface Round {
  readonly tx: number
  readonly seconds: number
  readonly cpuSeconds: number
  readonly userSeconds: number
}

/** CLIENTS fibers, each running `tx` `count` times in a row. */
const runRound = (tx: Tx, count: number) =>
  Effect.gen(function*() {
    const t0 = performance.now()
    const cpu0 = process.cpuUsage()
    yield* Effect.forEach(
      Array.from({ length: CLIENTS }, (_, i) => i),
      () =>
        Effect.gen(function*() {
          for (let i = 0; i < count; i++) yield* tx
        }),
      { concurrency: "unbounded", discard: true }
    )
    const cpu = process.cpuUsage(cpu0)
    return {
      tx: CLIENTS * count,
      seconds: (performance.now() - t0) / 1000,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      userSeconds: cpu.user / 1e6
    }
  })

/** A scratch database on SERVER, dropped when the scope closes; its URL. */
const scratchDatabase = Effect.gen(function*() {
  const admin = yield* PgClient.make({ url: Redacted.make(SERVER), maxConnections: 1 })
  const name = `producer_bench_${randomBytes(6).toString("hex")}`
  yield* admin.unsafe(`CREATE DATABASE ${name}`)
  yield* Effect.addFinalizer(() => Effect.ignore(admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)))
  if (!SYNC_COMMIT) yield* admin.unsafe(`ALTER DATABASE ${name} SET synchronous_commit = off`)
  const url = new URL(SERVER)
  url.pathname = `/${name}`
  return url.toString()
})

/** 2. The programs against PostgreSQL. */
const endToEnd = (keys: ReadonlyArray<Variant>) =>
  Effect.gen(function*() {
    const client = yield* PgClient.make({ url: Redacted.make(yield* scratchDatabase), maxConnections: CLIENTS })
    const sqlContext = Context.make(SqlClient.SqlClient, client).pipe(Context.add(PgClient.PgClient, client))
    yield* OutboxMigrations.runOutbox.pipe(Effect.provideContext(sqlContext))
    const context = yield* Layer.build(
      PgOutboxStore.layerWithoutMigrations().pipe(Layer.provideMerge(Layer.succeedContext(sqlContext)))
    )
    const runs = Object.fromEntries(keys.map((k) => [k, [] as Array<Round>])) as Record<Variant, Array<Round>>
    for (const { key, kept } of rotate(keys, ROUNDS, 1)) { // the warm-up round: JIT, prepared statements, caches
      yield* client`TRUNCATE outbox`
      const run = yield* Effect.provideContext(runRound(variants[key], kept ? TX : Math.ceil(TX / 2)), context)
      if (kept) runs[key].push(run)
    }

    const cpuPerTx = (key: Variant, r: number) => runs[key][r]!.cpuSeconds / runs[key][r]!.tx
    const txPerSec = (key: Variant, r: number) => runs[key][r]!.tx / runs[key][r]!.seconds
    const paired = (key: Variant, of: (key: Variant, r: number) => number) =>
      keys.includes("handWritten") ? median(runs[key].map((_, r) => (of(key, r) / of("handWritten", r) - 1) * 100)) : NaN
    const pairedUs = (key: Variant) =>
      keys.includes("handWritten") ? median(runs[key].map((_, r) => (cpuPerTx(key, r) - cpuPerTx("handWritten", r)) * 1e6)) : NaN
    const pooled = (key: Variant) => (runs[key].reduce((a, r) => a + r.cpuSeconds, 0) / runs[key].reduce((a, r) => a + r.tx, 0)) * 1e6
    const summary = Object.fromEntries(keys.map((key) => [key, {
      txPerSec: median(runs[key].map((_, r) => txPerSec(key, r))),
      cpuUsPerTx: median(runs[key].map((_, r) => cpuPerTx(key, r) * 1e6)),
      userUsPerTx: median(runs[key].map((r) => (r.userSeconds / r.tx) * 1e6)),
      pooledCpuUsPerTx: pooled(key),
      cpuPctVsHandWritten: paired(key, cpuPerTx),
      cpuUsVsHandWritten: pairedUs(key),
      txPerSecPctVsHandWritten: paired(key, txPerSec)
    }])) as Record<
      Variant,
      {
        txPerSec: number
        cpuUsPerTx: number
        userUsPerTx: number
        pooledCpuUsPerTx: number
        cpuPctVsHandWritten: number
        cpuUsVsHandWritten: number
        txPerSecPctVsHandWritten: number
      }
    >

    console.log(
      `\n2. End to end (${CLIENTS} fibers on a pool of ${CLIENTS}, ${ROUNDS} rotating rounds × ${TX} transactions per fiber; synchronous_commit ${
        SYNC_COMMIT ? "on" : "off"
      }; medians over rounds, "pooled": all rounds' CPU / all their transactions; "vs hand-written": paired per round, median):`
    )
    console.log(
      `  ${"variant".padEnd(46)} ${"tx/s".padStart(7)} ${"CPU/tx".padStart(10)} ${"user".padStart(9)} ${"pooled".padStart(9)}   vs hand-written: CPU/tx            tx/s`
    )
    for (const key of keys) {
      const s = summary[key]
      const vs = key === "handWritten" ? "" : `${signed(s.cpuPctVsHandWritten, 1, "%").padStart(24)} ${
        `(${signed(s.cpuUsVsHandWritten, 1, "µs")})`.padStart(11)
      } ${signed(s.txPerSecPctVsHandWritten, 1, "%").padStart(9)}`
      console.log(
        `  ${labels[key].padEnd(46)} ${fmt(s.txPerSec).padStart(7)} ${`${fmt(s.cpuUsPerTx, 1)} µs`.padStart(10)} ${`${fmt(s.userUsPerTx, 1)} µs`.padStart(9)} ${
          `${fmt(s.pooledCpuUsPerTx, 1)} µs`.padStart(9)
        } ${vs}`
      )
    }
    return { summary, perRound: runs }
  })

const main = Effect.gen(function*() {
  const keys = (ONLY === undefined ? allVariants : ONLY.split(",")) as ReadonlyArray<Variant>
  console.log(`Producer bench — node ${process.version}, payload ${JSON.stringify(payload).length} bytes, variants: ${keys.join(", ")}`)
  const free = ONLY === undefined && FREE_ROUNDS > 0 ? yield* withoutDatabase : undefined
  const e2e = ROUNDS > 0 ? yield* endToEnd(keys) : undefined

  if (free !== undefined) {
    const added = free.publish!.addedUsPerTx
    const e2eHand = e2e?.summary.handWritten?.cpuUsPerTx
    console.log(
      `\nOutbox.transaction + publish adds ${signed(added, 2, "µs")} of JavaScript per transaction over the hand-written statements (1.)${
        e2eHand === undefined
          ? ""
          : `: ${signed((added / e2eHand) * 100, 1, "%")} of the hand-written transaction's ${fmt(e2eHand, 1)} µs Node CPU end to end (2.; paired there: ${
            signed(e2e!.summary.publish!.cpuPctVsHandWritten, 1, "%")
          }) — target ≤ 15 %: ${(added / e2eHand) * 100 <= 15 ? "met" : "NOT met"}`
      }`
    )
  }

  Fs.mkdirSync(new URL("./results/", import.meta.url), { recursive: true })
  Fs.writeFileSync(
    new URL("./results/producer.json", import.meta.url),
    JSON.stringify(
      {
        at: new Date().toISOString(),
        node: process.version,
        payloadBytes: JSON.stringify(payload).length,
        withoutDatabase: free === undefined ? undefined : { rounds: FREE_ROUNDS, txPerRound: FREE_TX, variants: free },
        endToEnd: e2e === undefined
          ? undefined
          : { clients: CLIENTS, rounds: ROUNDS, txPerClientPerRound: TX, synchronousCommit: SYNC_COMMIT, ...e2e }
      },
      (_, value) => typeof value === "bigint" ? String(value) : value,
      2
    )
  )
})

Effect.runPromise(Effect.scoped(Effect.provide(main, Reactivity.layer))).then(
  () => process.exit(0),
  (error) => {
    console.error(error)
    process.exit(1)
  }
)
