import { PgClient } from "@effect/sql-pg"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import { assert, describe, layer } from "@effect/vitest"
import * as ArchiveStorage from "@outbox/core/ArchiveStorage"
import * as PartitionPolicy from "@outbox/core/PartitionPolicy"
import * as FileArchiveStorage from "@outbox/sql/FileArchiveStorage"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PartitionArchive from "@outbox/sql/PartitionArchive"
import * as PartitionManager from "@outbox/sql/PartitionManager"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Layer from "effect/Layer"
import type * as Path from "effect/Path"
import * as Redacted from "effect/Redacted"
import * as Ref from "effect/Ref"
import * as Reactivity from "effect/reactivity/Reactivity"
import type * as Scope from "effect/Scope"
import * as SqlClient from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"

const Live = PartitionManager.layer.pipe(
  Layer.provideMerge(OutboxMigrations.layer),
  Layer.provideMerge(TestDatabase.layer),
  Layer.provideMerge(Layer.mergeAll(NodeFileSystem.layer, NodePath.layer)),
  Layer.orDie
)

type Env =
  | PartitionManager.PartitionManager
  | SqlClient.SqlClient
  | TestDatabase.TestDatabase
  | FileSystem.FileSystem
  | Path.Path
  | Scope.Scope

// the client is built outside the test services; each test gets its own TestClock
const test = <A, E>(effect: Effect.Effect<A, E, Env>) =>
  Effect.provide(Effect.scoped(effect), TestClock.layer())

/**
 * `name`, partitioned by day on created_at (with a DEFAULT partition unless
 * `withDefault` is false), with partitions for 2026-01-01 .. 2026-01-06, and
 * rows on Jan 1 (3, one with a pretty-printed `json` value), Jan 2 (2, one
 * PENDING: protected) and Jan 3 (1).
 */
const seed = (name: string, withDefault = true) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.unsafe(`CREATE TABLE ${name} (
      id bigint GENERATED ALWAYS AS IDENTITY, created_at timestamptz NOT NULL, status text NOT NULL,
      body text, doc json, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)`)
    if (withDefault) yield* sql.unsafe(`CREATE TABLE ${name}_default PARTITION OF ${name} DEFAULT`)
    for (let d = 1; d <= 6; d++) {
      yield* sql.unsafe(
        `CREATE TABLE ${name}_p2026010${d} PARTITION OF ${name} FOR VALUES FROM ('2026-01-0${d}') TO ('2026-01-0${d + 1}')`
      )
    }
    yield* sql.unsafe(`INSERT INTO ${name} (created_at, status, body, doc) VALUES
      ('2026-01-01T10:00:00.123456Z', 'COMPLETED', 'first ünïcødé 😀', '{"a": 1}'),
      ('2026-01-01T11:00:00Z', 'DEAD_LETTER', E'line\\nbreak', E'{\\n  "pretty": [1,\\n 2]\\n}'),
      ('2026-01-01T12:00:00Z', 'COMPLETED', NULL, NULL),
      ('2026-01-02T10:00:00Z', 'COMPLETED', 'done', NULL),
      ('2026-01-02T11:00:00Z', 'PENDING', 'still to deliver', NULL),
      ('2026-01-03T10:00:00Z', 'COMPLETED', 'third', '[]')`)
  })

const policyFor = (table: string) =>
  PartitionPolicy.make({
    table,
    column: "created_at",
    interval: "daily",
    premake: 0,
    retention: { amount: 7, unit: "days" },
    retentionMode: "archive",
    protect: { column: "status", doneValues: ["COMPLETED", "DEAD_LETTER"] }
  })

/** 2026-01-11 09:00: the cutoff is 2026-01-04 09:00, so Jan 1, 2 and 3 are past retention. */
const LATER = Date.UTC(2026, 0, 11, 9)

const exists = (table: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(sql<{ t: string | null }>`SELECT to_regclass(${table})::text AS t`, (rows) => rows[0]!.t !== null))

const count = (table: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(table)}`, (rows) => rows[0]!.n))

/** Whether `partition` is attached to `parent`. */
const attached = (parent: string, partition: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(
      sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_inherits
                         WHERE inhparent = to_regclass(${parent}) AND inhrelid = to_regclass(${partition})`,
      (rows) => rows[0]!.n === 1
    ))

/** Rows of `a` not in `b` plus rows of `b` not in `a` (json compared as jsonb: its line breaks are whitespace). */
const difference = (a: string, b: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => {
    const cols = sql.literal("id, created_at, status, body, doc::jsonb")
    return Effect.map(
      sql<{ n: number }>`
        SELECT (SELECT count(*) FROM (SELECT ${cols} FROM ${sql(a)} EXCEPT ALL SELECT ${cols} FROM ${sql(b)}) x)::int
             + (SELECT count(*) FROM (SELECT ${cols} FROM ${sql(b)} EXCEPT ALL SELECT ${cols} FROM ${sql(a)}) y)::int AS n`,
      (rows) => rows[0]!.n
    )
  })

/** A FileArchiveStorage over a temporary directory removed with the test's scope. */
const tempStorage = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const directory = yield* fs.makeTempDirectoryScoped({ prefix: "outbox-archive-retention-" })
  return { directory, storage: yield* FileArchiveStorage.make({ directory }) }
})

/** `storage` with `put` replaced. */
const withPut = (
  storage: ArchiveStorage.ArchiveStorage["Service"],
  put: ArchiveStorage.ArchiveStorage["Service"]["put"]
): ArchiveStorage.ArchiveStorage["Service"] => ArchiveStorage.ArchiveStorage.of({ ...storage, put })

const maintainWith = (storage: ArchiveStorage.ArchiveStorage["Service"], policy: PartitionPolicy.PartitionPolicy) =>
  Effect.flatMap(PartitionManager.PartitionManager, (manager) =>
    manager.maintain(policy).pipe(Effect.provideService(ArchiveStorage.ArchiveStorage, storage)))

layer(Live, { timeout: "120 seconds", excludeTestServices: true })("PartitionManager: retention mode archive", (it) => {
  describe("with FileArchiveStorage", () => {
    it.effect("archives each partition past retention, verifies it, drops it; the archive restores the rows", () =>
      test(Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const { storage } = yield* tempStorage
        yield* seed("arc_events")
        // what the partitions hold before retention, to compare the restored rows with
        yield* sql`CREATE TABLE arc_before AS SELECT * FROM arc_events
                   WHERE created_at < '2026-01-02' OR created_at >= '2026-01-03' AND created_at < '2026-01-04'`
        yield* TestClock.setTime(LATER)

        const steps: Array<PartitionManager.MaintenanceStep> = []
        const manager = yield* PartitionManager.PartitionManager
        const report = yield* manager.maintain(policyFor("arc_events"), {
          onStep: (step) => Effect.sync(() => steps.push(step))
        }).pipe(Effect.provideService(ArchiveStorage.ArchiveStorage, storage))
        assert.deepStrictEqual(report.failed, [])
        assert.deepStrictEqual(report.retired, [
          { partition: "arc_events_p20260101", action: "archived", detach: "locking" },
          { partition: "arc_events_p20260103", action: "archived", detach: "locking" }
        ])
        // the partition holding a PENDING row is neither archived nor dropped
        assert.deepStrictEqual(report.blocked, [{ partition: "arc_events_p20260102", unfinished: 1 }])
        assert.deepStrictEqual(steps.filter((s) => s.step === "retire").map((s) => s.outcome), ["done", "blocked", "done"])
        assert.isFalse(yield* exists("arc_events_p20260101"))
        assert.isFalse(yield* exists("arc_events_p20260103"))
        assert.isTrue(yield* attached("arc_events", "arc_events_p20260102"))
        assert.strictEqual(yield* count("arc_events"), 2)

        // one archive per retired partition, each verifies
        const provide = Effect.provideService(ArchiveStorage.ArchiveStorage, storage)
        const keys = yield* provide(PartitionArchive.listManifests("public.arc_events/"))
        assert.deepStrictEqual(keys, [
          "public.arc_events/public.arc_events_p20260101.manifest.json",
          "public.arc_events/public.arc_events_p20260103.manifest.json"
        ])
        const verified = yield* provide(Effect.forEach(keys, PartitionArchive.verify))
        assert.deepStrictEqual(verified.map((v) => v.rowCount), [3, 1])
        assert.strictEqual(verified[0]!.manifest.from, "2026-01-01T00:00:00.000Z")
        assert.strictEqual(verified[0]!.manifest.createdAt, "2026-01-11T09:00:00.000Z")

        // restored, they are the rows the partitions held (the pretty-printed json included)
        yield* sql`CREATE TABLE arc_restored (LIKE arc_events)`
        for (const key of keys) yield* provide(PartitionArchive.restore(key, { into: "arc_restored" }))
        assert.strictEqual(yield* count("arc_restored"), 4)
        assert.strictEqual(yield* difference("arc_before", "arc_restored"), 0)
        // the comparison is able to fail
        yield* sql`UPDATE arc_restored SET body = 'edited' WHERE id = 1`
        assert.strictEqual(yield* difference("arc_before", "arc_restored"), 2)

        // delivered at last: the next run archives and drops it too
        yield* sql`UPDATE arc_events SET status = 'COMPLETED' WHERE id = 5`
        const next = yield* maintainWith(storage, policyFor("arc_events"))
        assert.deepStrictEqual(next.retired.map((r) => r.partition), ["arc_events_p20260102"])
        assert.strictEqual((yield* provide(PartitionArchive.listManifests("public.arc_events/"))).length, 3)
      })))

    it.effect("without a DEFAULT partition the detach is CONCURRENTLY", () =>
      test(Effect.gen(function*() {
        const { storage } = yield* tempStorage
        yield* seed("arc_plain", false)
        yield* TestClock.setTime(LATER)
        const report = yield* maintainWith(storage, policyFor("arc_plain"))
        assert.deepStrictEqual(report.failed, [])
        assert.deepStrictEqual(report.retired, [
          { partition: "arc_plain_p20260101", action: "archived", detach: "concurrently" },
          { partition: "arc_plain_p20260103", action: "archived", detach: "concurrently" }
        ])
        assert.isFalse(yield* exists("arc_plain_p20260101"))
        const key = PartitionArchive.manifestKey("public.arc_plain", "public.arc_plain_p20260101")
        const verified = yield* PartitionArchive.verify(key).pipe(Effect.provideService(ArchiveStorage.ArchiveStorage, storage))
        assert.strictEqual(verified.rowCount, 3)
      })))

    it.effect("three maintainers at once archive and drop each partition exactly once", () =>
      test(Effect.gen(function*() {
        const { storage } = yield* tempStorage
        yield* seed("arc_race")
        yield* TestClock.setTime(LATER)
        const puts = yield* Ref.make<Array<string>>([])
        const counting = withPut(storage, (key, bytes) => Effect.andThen(Ref.update(puts, (p) => [...p, key]), storage.put(key, bytes)))
        const policy = policyFor("arc_race")
        const reports = yield* Effect.all([maintainWith(counting, policy), maintainWith(counting, policy), maintainWith(counting, policy)], {
          concurrency: "unbounded"
        })
        assert.deepStrictEqual(reports.flatMap((r) => r.failed), [])
        assert.deepStrictEqual(reports.flatMap((r) => r.retired.map((x) => x.partition)).sort(), [
          "arc_race_p20260101",
          "arc_race_p20260103"
        ])
        // two objects per archive, written once
        assert.strictEqual((yield* Ref.get(puts)).length, 4)
      })))
  })

  describe("never loses a row", () => {
    it.effect("a storage whose write fails: nothing is dropped, the step is reported failed", () =>
      test(Effect.gen(function*() {
        const { storage } = yield* tempStorage
        yield* seed("arc_broken")
        yield* TestClock.setTime(LATER)
        const broken = withPut(storage, (key) =>
          Effect.fail(new ArchiveStorage.ArchiveError({ reason: "Io", key, message: `archive write of ${key} failed: disk full` })))
        const report = yield* maintainWith(broken, policyFor("arc_broken"))
        assert.deepStrictEqual(report.retired, [])
        assert.deepStrictEqual(report.failed.map((f) => [f.partition, f.step]), [
          ["arc_broken_p20260101", "retire"],
          ["arc_broken_p20260103", "retire"]
        ])
        assert.include(report.failed[0]!.message, "disk full")
        assert.isTrue(yield* attached("arc_broken", "arc_broken_p20260101"))
        assert.isTrue(yield* attached("arc_broken", "arc_broken_p20260103"))
        assert.strictEqual(yield* count("arc_broken"), 6)
        assert.deepStrictEqual(yield* storage.list(""), [])

        // the storage is back: the next run archives them
        const healed = yield* maintainWith(storage, policyFor("arc_broken"))
        assert.deepStrictEqual(healed.failed, [])
        assert.strictEqual(healed.retired.length, 2)
      })))

    it.effect("a storage that corrupts what it stores: verification fails, nothing is dropped", () =>
      test(Effect.gen(function*() {
        const { storage } = yield* tempStorage
        yield* seed("arc_lying", false)
        yield* TestClock.setTime(LATER)
        const lying = withPut(storage, (key, bytes) => {
          if (!key.endsWith(".jsonl.gz")) return storage.put(key, bytes)
          const corrupt = new Uint8Array(bytes)
          corrupt[corrupt.length - 5]! ^= 0xff
          return storage.put(key, corrupt)
        })
        const report = yield* maintainWith(lying, policyFor("arc_lying"))
        assert.deepStrictEqual(report.retired, [])
        assert.strictEqual(report.failed.length, 2)
        assert.include(report.failed[0]!.message, "SHA-256")
        assert.isTrue(yield* attached("arc_lying", "arc_lying_p20260101"))
        assert.strictEqual(yield* count("arc_lying"), 6)
      })))

    it.effect("rows changed between the archive and the drop: the partition is kept and re-attached", () =>
      test(Effect.gen(function*() {
        const database = yield* TestDatabase.TestDatabase
        const { storage } = yield* tempStorage
        // before the client below: its pool's timers run on this TestClock and must not see a 56-year jump
        yield* TestClock.setTime(LATER)
        // a second client, outside the maintainer's transaction: another process writing
        const other = yield* PgClient.make({ url: Redacted.make(database.url), maxConnections: 1 }).pipe(
          Effect.provide(Reactivity.layer)
        )
        for (const [table, withDefault] of [["arc_changed", true], ["arc_changed_plain", false]] as const) {
          yield* seed(table, withDefault)
          const changed = yield* Ref.make(false)
          // while the manifest of the first partition is written, another process edits a row of it
          const meddling = withPut(storage, (key, bytes) =>
            Effect.gen(function*() {
              if (key.endsWith(`${table}_p20260101.manifest.json`) && !(yield* Ref.getAndSet(changed, true))) {
                yield* Effect.orDie(other.unsafe(`UPDATE ${table} SET body = 'edited meanwhile' WHERE id = 1`))
              }
              yield* storage.put(key, bytes)
            }))
          const report = yield* maintainWith(meddling, policyFor(table))
          assert.deepStrictEqual(report.failed.map((f) => f.partition), [`${table}_p20260101`], table)
          assert.include(report.failed[0]!.message, "changed while it was archived")
          assert.deepStrictEqual(report.retired.map((r) => r.partition), [`${table}_p20260103`])
          assert.isTrue(yield* attached(table, `${table}_p20260101`), table)
          assert.strictEqual(yield* count(`${table}_p20260101`), 3)

          // the next run archives the edited rows and drops the partition
          const next = yield* maintainWith(storage, policyFor(table))
          assert.deepStrictEqual(next.retired.map((r) => r.partition), [`${table}_p20260101`])
          const sql = yield* SqlClient.SqlClient
          yield* sql.unsafe(`CREATE TABLE ${table}_restored (LIKE ${table})`)
          yield* PartitionArchive.restore(
            PartitionArchive.manifestKey(`public.${table}`, `public.${table}_p20260101`),
            { into: `${table}_restored` }
          ).pipe(Effect.provideService(ArchiveStorage.ArchiveStorage, storage))
          const rows = yield* sql<{ body: string | null }>`SELECT body FROM ${sql(`${table}_restored`)} WHERE id = 1`
          assert.deepStrictEqual(rows.map((r) => r.body), ["edited meanwhile"])
        }
      })))

    it.effect("without an ArchiveStorage nothing is dropped and the step says why", () =>
      test(Effect.gen(function*() {
        yield* seed("arc_nostorage")
        yield* TestClock.setTime(LATER)
        const manager = yield* PartitionManager.PartitionManager
        const report = yield* manager.maintain(policyFor("arc_nostorage"))
        assert.deepStrictEqual(report.retired, [])
        // the configuration error is reported for each partition past retention (the protected one too)
        assert.strictEqual(report.failed.length, 3)
        assert.include(report.failed[0]!.message, "needs an ArchiveStorage")
        assert.strictEqual(yield* count("arc_nostorage"), 6)
      })))
  })
})
