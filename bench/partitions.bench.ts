/**
 * `npx tsx bench/partitions.bench.ts`: what the partitioned outbox costs on
 * the publish path and what it saves at retirement, on a fresh database.
 *
 * 1. Publish throughput into the partitioned `outbox` against `plain_outbox`,
 *    an unpartitioned table of the same shape (columns, defaults, CHECKs,
 *    primary key, partial indexes): one-row transactions from several
 *    clients, and 100-row multi-row INSERTs. Three variants each: the
 *    library (`Outbox.transaction(Outbox.publish...)`) into `outbox`, and the
 *    library's own INSERT statement written by hand into both tables.
 * 2. Retiring one daily partition of BENCH_RETIRE_ROWS rows, each time on an
 *    identical fresh fill (VACUUM ANALYZE + CHECKPOINT after it, as an old
 *    partition would be): `DETACH PARTITION` + `DROP TABLE`; `DELETE` of the
 *    day through the parent followed by `VACUUM` of the partition; and
 *    `PartitionManager.maintain` with a 7-day retention policy (the
 *    partition is BENCH_RETIRE_AGE_DAYS old by the real clock).
 *
 * WAL is the difference of `pg_current_wal_insert_lsn()` around a step: it
 * counts the whole cluster, so every step also records how many other
 * client sessions were active (a non-zero count marks a number as noisy).
 *
 * Environment: BENCH_PUBLISH_TX (default 4000) one-row transactions per run,
 * BENCH_PUBLISH_CLIENTS (4), BENCH_BATCHES (200) multi-row INSERTs per run,
 * BENCH_BATCH_SIZE (100), BENCH_BATCH_CLIENTS (1), BENCH_ROUNDS (3, best of,
 * after one warm-up), BENCH_RETIRE_ROWS (1000000), BENCH_RETIRE_AGE_DAYS (30),
 * DATABASE_URL (else testcontainers or embedded PostgreSQL, as in the tests).
 * Results go to `bench/results/partitions.json`.
 */
import * as Outbox from "@outbox/core/Outbox"
import * as PartitionPolicy from "@outbox/core/PartitionPolicy"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PartitionManager from "@outbox/sql/PartitionManager"
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"
import { openDatabase, runMain, writeResults } from "./shared.ts"

const envInt = (name: string, fallback: number) => {
  const value = Number(process.env[name] ?? fallback)
  if (!Number.isInteger(value) || value <= 0) throw new Error(`${name} must be a positive integer`)
  return value
}

const PUBLISH_TX = envInt("BENCH_PUBLISH_TX", 4000)
const PUBLISH_CLIENTS = envInt("BENCH_PUBLISH_CLIENTS", 4)
const BATCHES = envInt("BENCH_BATCHES", 200)
const BATCH_SIZE = envInt("BENCH_BATCH_SIZE", 100)
const BATCH_CLIENTS = envInt("BENCH_BATCH_CLIENTS", 1)
const ROUNDS = envInt("BENCH_ROUNDS", 3)
const RETIRE_ROWS = envInt("BENCH_RETIRE_ROWS", 1_000_000)
const RETIRE_AGE_DAYS = envInt("BENCH_RETIRE_AGE_DAYS", 30)
const RETENTION_DAYS = 7

const DAY = 86_400_000
const now = () => performance.now()
const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits })
const mb = (bytes: number) => fmt(bytes / 1024 / 1024, 1)
const ms = (seconds: number) => fmt(seconds * 1000, 0)
const walFmt = (bytes: number) => (bytes < 1024 * 1024 ? `${fmt(bytes / 1024, 1)} kB` : `${mb(bytes)} MB`)

/** Wall time of `effect`. */
const timed = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const t0 = now()
    const result = yield* effect
    return { result, seconds: (now() - t0) / 1000 }
  })

// ---------------------------------------------------------------------------
// 1. publish throughput

const PUBLISH_VARIANTS = ["libraryPartitioned", "handPartitioned", "handPlain"] as const
type PublishVariant = typeof PUBLISH_VARIANTS[number]
const VARIANT_LABEL: Record<PublishVariant, string> = {
  libraryPartitioned: "Outbox.publish → outbox (partitioned)",
  handPartitioned: "hand-written INSERT → outbox (partitioned)",
  handPlain: "hand-written INSERT → plain_outbox (unpartitioned)"
}

/** `plain_outbox`: the outbox's shape without partitioning, with its own id sequence. */
const createPlainOutbox = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  yield* sql.unsafe(`CREATE TABLE plain_outbox (LIKE outbox INCLUDING DEFAULTS INCLUDING CONSTRAINTS)`)
  yield* sql.unsafe(`CREATE SEQUENCE plain_outbox_id_seq OWNED BY plain_outbox.id`)
  yield* sql.unsafe(`ALTER TABLE plain_outbox ALTER COLUMN id SET DEFAULT nextval('plain_outbox_id_seq')`)
  yield* sql.unsafe(`ALTER TABLE plain_outbox ADD PRIMARY KEY (id, created_at)`)
  yield* sql.unsafe(`CREATE INDEX plain_outbox_claimable_idx ON plain_outbox (id) WHERE status IN ('PENDING', 'FAILED')`)
  yield* sql.unsafe(`CREATE INDEX plain_outbox_leased_idx ON plain_outbox (locked_until) WHERE status = 'PROCESSING'`)
})

const publishPhase = Effect.gen(function*() {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  yield* createPlainOutbox

  const payload = { total: 42, items: [{ sku: "A", quantity: 2 }] }
  const events = (n: number) =>
    Array.from({ length: n }, (_, i) => ({ aggregateType: "Order", aggregateId: `o-${i}`, eventType: "OrderCreated", payload }))
  // the statement PgOutboxStore.publish sends, written by hand (same columns, casts and RETURNING)
  const insert = (table: "outbox" | "plain_outbox", n: number) => {
    const rows = events(n).map((e) =>
      sql`(${e.aggregateType}, ${e.aggregateId}, ${e.eventType}, ${JSON.stringify(e.payload)}::jsonb, ${"{}"}::jsonb, ${5})`
    )
    return sql`INSERT INTO ${sql(table)} (aggregate_type, aggregate_id, event_type, payload, metadata, max_retries)
               VALUES ${sql.csv(rows)}
               RETURNING id, tracking_id, created_at`
  }
  const variants = (n: number): Record<PublishVariant, Effect.Effect<unknown, unknown, any>> => ({
    libraryPartitioned: n === 1
      ? Outbox.transaction(Outbox.publish(events(1)[0]!))
      : Outbox.transaction(Outbox.publishAll(events(n))),
    handPartitioned: sql.withTransaction(insert("outbox", n)),
    handPlain: sql.withTransaction(insert("plain_outbox", n))
  })
  const run = (tx: Effect.Effect<unknown, unknown, any>, transactions: number, clients: number) =>
    timed(Effect.all(
      Array.from({ length: clients }, (_, c) =>
        Effect.forEach(
          Array.from({ length: Math.floor(transactions / clients) + (c < transactions % clients ? 1 : 0) }),
          () => tx,
          { discard: true }
        )),
      { concurrency: "unbounded" }
    ))

  /** One warm-up round, then ROUNDS alternating rounds; both tables emptied before every run. */
  const bestOf = Effect.fnUntraced(function*(n: number, transactions: number, clients: number) {
    const txs = variants(n)
    const best: Record<PublishVariant, number> = { libraryPartitioned: Infinity, handPartitioned: Infinity, handPlain: Infinity }
    for (let round = 0; round <= ROUNDS; round++) {
      for (const variant of PUBLISH_VARIANTS) {
        yield* sql`TRUNCATE outbox, plain_outbox`
        const { seconds } = yield* run(txs[variant], transactions, clients)
        if (round > 0) best[variant] = Math.min(best[variant], seconds)
        const [found] = yield* sql<{ n: number }>`
          SELECT count(*)::int AS n FROM ${sql(variant === "handPlain" ? "plain_outbox" : "outbox")}`
        if (found!.n !== transactions * n) {
          return yield* Effect.die(new Error(`${variant}: expected ${transactions * n} rows, found ${found!.n}`))
        }
      }
    }
    return Object.fromEntries(PUBLISH_VARIANTS.map((v) => [v, {
      seconds: best[v],
      txPerSec: transactions / best[v],
      eventsPerSec: (transactions * n) / best[v]
    }])) as Record<PublishVariant, { seconds: number; txPerSec: number; eventsPerSec: number }>
  })

  const single = yield* bestOf(1, PUBLISH_TX, PUBLISH_CLIENTS)
  const batch = yield* bestOf(BATCH_SIZE, BATCHES, BATCH_CLIENTS)
  yield* sql`TRUNCATE outbox, plain_outbox`
  return { single, batch }
})

// ---------------------------------------------------------------------------
// 2. retiring one partition

interface WalStep {
  readonly seconds: number
  readonly walBytes: number
  /** Other client sessions active before or after the step (WAL is cluster-wide). */
  readonly otherActiveSessions: number
}

interface Sizes {
  readonly totalBytes: number
  readonly heapBytes: number
  readonly indexBytes: number
}

const retirePhase = Effect.gen(function*() {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const manager = yield* PartitionManager.make

  const today = PartitionPolicy.floor("daily", new Date())
  const day = new Date(today.getTime() - RETIRE_AGE_DAYS * DAY)
  const nextDay = new Date(day.getTime() + DAY)
  const partition = `retire_bench_${PartitionPolicy.suffix(day)}`
  // ISO timestamps from Date.toISOString() and names from PartitionPolicy.suffix: digits and fixed text only
  const bounds = (from: Date) => `FROM ('${from.toISOString()}') TO ('${new Date(from.getTime() + DAY).toISOString()}')`

  yield* sql.unsafe(`CREATE TABLE retire_bench (LIKE outbox INCLUDING DEFAULTS INCLUDING CONSTRAINTS, PRIMARY KEY (id, created_at))
                     PARTITION BY RANGE (created_at)`)
  yield* sql.unsafe(`CREATE INDEX retire_bench_claimable_idx ON retire_bench (id) WHERE status IN ('PENDING', 'FAILED')`)
  yield* sql.unsafe(`CREATE INDEX retire_bench_leased_idx ON retire_bench (locked_until) WHERE status = 'PROCESSING'`)
  yield* sql.unsafe(`CREATE TABLE retire_bench_default PARTITION OF retire_bench DEFAULT`)
  // today's partition exists, so maintain (premake 0) has nothing to create and only retires
  yield* sql.unsafe(`CREATE TABLE retire_bench_${PartitionPolicy.suffix(today)} PARTITION OF retire_bench FOR VALUES ${bounds(today)}`)

  const sizes = sql<{ total: number; heap: number; indexes: number }>`
    SELECT pg_total_relation_size(c.oid)::float8 AS total, pg_relation_size(c.oid)::float8 AS heap, pg_indexes_size(c.oid)::float8 AS indexes
    FROM pg_class c WHERE c.oid = to_regclass(${partition})`.pipe(
    Effect.map(([r]): Sizes => ({ totalBytes: r!.total, heapBytes: r!.heap, indexBytes: r!.indexes }))
  )
  const probe = sql<{ lsn: string; busy: number }>`
    SELECT pg_current_wal_insert_lsn()::text AS lsn,
           (SELECT count(*)::int FROM pg_stat_activity
            WHERE backend_type = 'client backend' AND state <> 'idle' AND pid <> pg_backend_pid()
              AND datname IS DISTINCT FROM current_database()) AS busy`.pipe(Effect.map(([r]) => r!))
  const withWal = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    Effect.gen(function*() {
      const before = yield* probe
      const { result, seconds } = yield* timed(effect)
      const after = yield* probe
      const [diff] = yield* sql<{ bytes: number }>`SELECT pg_wal_lsn_diff(${after.lsn}::pg_lsn, ${before.lsn}::pg_lsn)::float8 AS bytes`
      return { result, step: { seconds, walBytes: diff!.bytes, otherActiveSessions: Math.max(before.busy, after.busy) } satisfies WalStep }
    })

  /** A fresh partition for `day` with RETIRE_ROWS completed outbox rows, vacuumed and checkpointed. */
  const fill = Effect.gen(function*() {
    yield* sql.unsafe(`CREATE TABLE ${partition} PARTITION OF retire_bench FOR VALUES ${bounds(day)}`)
    const { seconds } = yield* timed(sql`
      INSERT INTO ${sql(partition)} (id, tracking_id, aggregate_type, aggregate_id, event_type, payload, metadata,
                                     status, retry_count, max_retries, created_at, processed_at)
      SELECT g, gen_random_uuid(), 'Order', 'order-' || (g % 200000), 'OrderCreated',
             jsonb_build_object(
               'orderId', 'order-' || (g % 200000), 'customerId', 'customer-' || (g % 5000),
               'total', round((g % 100000) / 100.0, 2), 'currency', 'EUR',
               'items', jsonb_build_array(
                 jsonb_build_object('sku', 'SKU-' || (g % 97), 'quantity', 1 + g % 3, 'price', 19.99),
                 jsonb_build_object('sku', 'SKU-' || (g % 89), 'quantity', 1, 'price', 4.5))),
             jsonb_build_object('traceparent', '00-' || lpad(to_hex(g), 32, '0') || '-' || lpad(to_hex(g), 16, '0') || '-01',
                                'source', 'orders-service'),
             'COMPLETED', 0, 5, ts, ts + interval '40 milliseconds'
      FROM generate_series(1, ${RETIRE_ROWS}::int) g,
           LATERAL (SELECT ${day}::timestamptz + (g - 1) * (86399.0 / ${RETIRE_ROWS}::int) * interval '1 second' AS ts) t`)
    yield* sql.unsafe(`VACUUM (ANALYZE) ${partition}`)
    yield* sql`CHECKPOINT`
    return { seconds, sizes: yield* sizes }
  })

  const countRows = sql<{ n: number }>`SELECT count(*)::int AS n FROM retire_bench WHERE created_at >= ${day} AND created_at < ${nextDay}`.pipe(
    Effect.map(([r]) => r!.n)
  )
  const exists = sql<{ found: boolean }>`SELECT to_regclass(${partition}) IS NOT NULL AS found`.pipe(Effect.map(([r]) => r!.found))
  const expectRows = (n: number, where: string) =>
    Effect.flatMap(countRows, (found) => found === n ? Effect.void : Effect.die(new Error(`${where}: expected ${n} rows, found ${found}`)))

  // (a) DETACH PARTITION + DROP TABLE
  const filledA = yield* fill
  yield* expectRows(RETIRE_ROWS, "after fill (a)")
  const detach = yield* withWal(sql.unsafe(`ALTER TABLE retire_bench DETACH PARTITION ${partition}`))
  const drop = yield* withWal(sql.unsafe(`DROP TABLE ${partition}`))
  yield* expectRows(0, "after detach + drop")

  // (b) DELETE through the parent, then VACUUM of the partition
  const filledB = yield* fill
  const deleted = yield* withWal(sql`DELETE FROM retire_bench WHERE created_at >= ${day} AND created_at < ${nextDay}`)
  yield* expectRows(0, "after DELETE")
  const afterDelete = yield* sizes
  const vacuum = yield* withWal(sql.unsafe(`VACUUM ${partition}`))
  const afterVacuum = yield* sizes
  yield* sql.unsafe(`DROP TABLE ${partition}`)

  // (c) the library: PartitionManager.maintain with the outbox's retention rules on this table
  const filledC = yield* fill
  // one protect scan on its own, for scale: maintain runs it before and after the detach
  const protectScan = yield* timed(sql`SELECT count(*) FROM ${sql(partition)} WHERE status NOT IN ('COMPLETED', 'DEAD_LETTER')`)
  const policy = PartitionPolicy.make({
    table: "retire_bench",
    column: "created_at",
    interval: "daily",
    premake: 0,
    retention: { amount: RETENTION_DAYS, unit: "days" },
    retentionMode: "drop",
    protect: { column: "status", doneValues: ["COMPLETED", "DEAD_LETTER"] }
  })
  const maintained = yield* withWal(manager.maintain(policy))
  const report = maintained.result
  if (!report.retired.some((r) => r.partition === partition) || (yield* exists)) {
    return yield* Effect.die(new Error(`maintain did not retire ${partition}: ${JSON.stringify(report)}`))
  }
  yield* expectRows(0, "after maintain")

  return {
    rows: RETIRE_ROWS,
    partition,
    day: day.toISOString(),
    fill: { a: filledA, b: filledB, c: filledC },
    detachDrop: { detach: detach.step, drop: drop.step },
    deleteVacuum: {
      delete: deleted.step,
      vacuum: vacuum.step,
      sizes: { beforeDelete: filledB.sizes, afterDelete, afterVacuum }
    },
    maintain: {
      ...maintained.step,
      protectScanSeconds: protectScan.seconds,
      retired: report.retired,
      created: report.created,
      failed: report.failed
    }
  }
})

// ---------------------------------------------------------------------------

const main = Effect.gen(function*() {
  const started = now()
  const { run, services } = yield* openDatabase(16)

  yield* OutboxMigrations.run.pipe(Effect.provide(services))
  const [server_] = yield* run(Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ version: string }>`SELECT current_setting('server_version') AS version`))
  console.log(`Partition bench — PostgreSQL ${server_?.version}, node ${process.version}, best of ${ROUNDS} after a warm-up`)

  const publish = yield* run(publishPhase)
  const line = (label: string, r: { txPerSec: number; eventsPerSec: number }, base: number) =>
    `  ${label.padEnd(52)} ${fmt(r.txPerSec).padStart(8)} tx/s ${fmt(r.eventsPerSec).padStart(9)} events/s  ${
      fmt((r.eventsPerSec / base - 1) * 100, 1).padStart(6)
    } % vs plain`
  console.log(`\nPublish, ${fmt(PUBLISH_TX)} one-row transactions from ${PUBLISH_CLIENTS} clients:`)
  for (const v of PUBLISH_VARIANTS) console.log(line(VARIANT_LABEL[v], publish.single[v], publish.single.handPlain.eventsPerSec))
  console.log(`\nPublish, ${fmt(BATCHES)} transactions of one ${BATCH_SIZE}-row INSERT from ${BATCH_CLIENTS} client(s):`)
  for (const v of PUBLISH_VARIANTS) console.log(line(VARIANT_LABEL[v], publish.batch[v], publish.batch.handPlain.eventsPerSec))

  const retire = yield* run(retirePhase)
  const noisy = (s: WalStep) => (s.otherActiveSessions > 0 ? `  (${s.otherActiveSessions} other active session(s): WAL noisy)` : "")
  const row = (label: string, s: WalStep) =>
    `  ${label.padEnd(46)} ${ms(s.seconds).padStart(8)} ms ${walFmt(s.walBytes).padStart(13)} WAL${noisy(s)}`
  const size = (label: string, s: Sizes) =>
    `  ${label.padEnd(46)} ${mb(s.totalBytes).padStart(8)} MB total (heap ${mb(s.heapBytes)} MB, indexes ${mb(s.indexBytes)} MB)`
  const d = retire.deleteVacuum
  const detachDrop = { seconds: retire.detachDrop.detach.seconds + retire.detachDrop.drop.seconds, walBytes: retire.detachDrop.detach.walBytes + retire.detachDrop.drop.walBytes }
  const deleteVacuum = { seconds: d.delete.seconds + d.vacuum.seconds, walBytes: d.delete.walBytes + d.vacuum.walBytes }
  console.log(
    `\nRetiring one daily partition of ${fmt(retire.rows)} completed rows (${retire.partition}, ${RETIRE_AGE_DAYS} days old; fill ${
      fmt(retire.fill.a.seconds, 1)
    } s, ${mb(retire.fill.a.sizes.totalBytes)} MB, then VACUUM ANALYZE + CHECKPOINT):`
  )
  console.log(`  ${"step".padEnd(46)} ${"time".padStart(11)} ${"WAL".padStart(14)}`)
  console.log(`  (a) detach + drop`)
  console.log(row("    ALTER TABLE retire_bench DETACH PARTITION", retire.detachDrop.detach))
  console.log(row("    DROP TABLE", retire.detachDrop.drop))
  console.log(row("    total", { ...detachDrop, otherActiveSessions: 0 }))
  console.log(`  (b) delete + vacuum`)
  console.log(row("    DELETE FROM retire_bench WHERE <that day>", d.delete))
  console.log(row("    VACUUM <partition>", d.vacuum))
  console.log(row("    total (the emptied partition remains)", { ...deleteVacuum, otherActiveSessions: 0 }))
  console.log(size("    size before DELETE", d.sizes.beforeDelete))
  console.log(size("    size after DELETE", d.sizes.afterDelete))
  console.log(size("    size after VACUUM", d.sizes.afterVacuum))
  console.log(`  (c) PartitionManager.maintain, retention ${RETENTION_DAYS} days, protect status`)
  console.log(row(`    maintain → ${retire.maintain.retired.map((r) => `${r.action} (${r.detach} detach)`).join(", ")}`, retire.maintain))
  console.log(`    of which one protect scan (count of unfinished rows; runs twice) ≈ ${ms(retire.maintain.protectScanSeconds)} ms`)
  console.log(
    `\n  DELETE + VACUUM vs detach + drop: ${fmt(deleteVacuum.seconds / detachDrop.seconds, 0)}× the time, ${
      fmt(deleteVacuum.walBytes / Math.max(detachDrop.walBytes, 1), 0)
    }× the WAL; the heap and index space of a DELETE is only returned to the OS by VACUUM FULL or by dropping the table${
      d.sizes.afterVacuum.heapBytes < d.sizes.afterDelete.heapBytes
        ? " (here VACUUM truncated the heap because every page was empty; the indexes kept their size)"
        : ""
    }.`
  )
  const seconds = (now() - started) / 1000
  console.log(`\nDone in ${fmt(seconds, 0)} s.`)

  writeResults("partitions", {
    postgres: server_?.version,
    settings: { PUBLISH_TX, PUBLISH_CLIENTS, BATCHES, BATCH_SIZE, BATCH_CLIENTS, ROUNDS, RETIRE_ROWS, RETIRE_AGE_DAYS, RETENTION_DAYS },
    publish,
    retire,
    seconds
  })
})

runMain(main)
