import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import { assert, describe, layer } from "@effect/vitest"
import * as ArchiveStorage from "@outbox/core/ArchiveStorage"
import * as OutboxSink from "@outbox/core/OutboxSink"
import * as FileArchiveStorage from "@outbox/sql/FileArchiveStorage"
import * as PartitionArchive from "@outbox/sql/PartitionArchive"
import * as RelayTestKit from "@outbox/testing/RelayTestKit"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Layer from "effect/Layer"
import type * as Path from "effect/Path"
import * as SqlClient from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import * as OutboxLive from "../src/OutboxLive.ts"
import * as OutboxTelemetry from "../src/OutboxTelemetry.ts"
import * as PartitionMaintenance from "../src/PartitionMaintenance.ts"

const Live = Layer.mergeAll(TestDatabase.layer, NodeFileSystem.layer, NodePath.layer).pipe(Layer.orDie)

const DAY = 86_400_000

/** The whole outbox with `archive`; the sink is never called (the events are delivered already). */
const outboxWith = (archive: NonNullable<OutboxLive.Options<never, FileSystem.FileSystem | Path.Path>["archive"]>) =>
  OutboxLive.layer({ archive, telemetry: OutboxTelemetry.layer({ labels: [] }) }).pipe(
    Layer.provide(OutboxSink.layerHandler(() => Effect.die("no event is pending")))
  )

/** Starts the outbox in the current scope and waits for `runs` maintenance runs (the first is 500 ms after start, as staggered). */
const runMaintenance = Effect.fnUntraced(function*(maintenance: PartitionMaintenance.PartitionMaintenance["Service"], runs: number) {
  yield* TestClock.adjust("1 second")
  yield* RelayTestKit.eventually(Effect.map(maintenance.status, (s) => s.runs >= runs))
  return yield* maintenance.status
})

const partitionsOf = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.map(
    sql<{ name: string }>`SELECT name FROM outbox_partition_leaves WHERE parent = 'outbox' AND NOT is_default ORDER BY range_from`,
    (rows) => rows.map((r) => r.name)
  ))

layer(Live, { timeout: "120 seconds", excludeTestServices: true })("OutboxLive with an ArchiveStorage", (it) => {
  describe("the maintenance duty", () => {
    it.effect("keeps an expired outbox partition while the storage fails, then archives, verifies and drops it (storage as a layer, or OUTBOX_ARCHIVE_DIR)", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const fs = yield* FileSystem.FileSystem
        const directory = yield* fs.makeTempDirectoryScoped({ prefix: "outbox-live-archive-" })
        const today = Math.floor(Date.now() / DAY) * DAY
        yield* TestClock.setTime(today + 9 * 3_600_000)
        const old = new Date(today - 20 * DAY + 3_600_000)
        const partition = `outbox_p${new Date(today - 20 * DAY).toISOString().slice(0, 10).replaceAll("-", "")}`

        // 1. a storage (given as a service) whose writes fail: the run fails, the events stay
        const failing = ArchiveStorage.ArchiveStorage.of({
          put: (key) => Effect.fail(new ArchiveStorage.ArchiveError({ reason: "Io", key, message: `write of ${key} failed: bucket unreachable` })),
          get: (key) => Effect.fail(new ArchiveStorage.ArchiveError({ reason: "NotFound", key, message: `no ${key}` })),
          list: () => Effect.succeed([]),
          exists: () => Effect.succeed(false)
        })
        yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(outboxWith(failing))
          // 20 days old, delivered: past the 7 days of retention (it lands in DEFAULT; maintenance gives it a partition)
          yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, created_at, status, processed_at)
                     VALUES ('Order', 'o-1', 'OrderShipped', '{"n": 1}', ${old}, 'COMPLETED', ${old}),
                            ('Order', 'o-2', 'OrderShipped', '{"n": 2}', ${old}, 'DEAD_LETTER', ${old})`
          const status = yield* runMaintenance(Context.get(context, PartitionMaintenance.PartitionMaintenance), 1)
          assert.strictEqual(status.failures, 1)
          assert.include(status.lastError, "bucket unreachable")
          const report = status.lastReports.find((r) => r.table === "outbox")!
          assert.deepStrictEqual(report.retired, [])
          assert.deepStrictEqual(report.failed.map((f) => f.partition), [partition])
        }))
        assert.include(yield* partitionsOf, partition)
        const [kept] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE aggregate_id IN ('o-1', 'o-2')`
        assert.strictEqual(kept!.n, 2)

        // 2. a FileArchiveStorage (given as a layer): archived, verified, dropped
        yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(outboxWith(FileArchiveStorage.layer({ directory })))
          const status = yield* runMaintenance(Context.get(context, PartitionMaintenance.PartitionMaintenance), 1)
          assert.strictEqual(status.failures, 0, status.lastError)
          const report = status.lastReports.find((r) => r.table === "outbox")!
          assert.deepStrictEqual(report.retired, [{ partition, action: "archived", detach: "locking" }])
        }))
        assert.notInclude(yield* partitionsOf, partition)
        const [gone] = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM outbox WHERE aggregate_id IN ('o-1', 'o-2')`
        assert.strictEqual(gone!.n, 0)

        // the archive is on disk, verifies, and gives the events back
        const storage = yield* FileArchiveStorage.make({ directory })
        const provide = Effect.provideService(ArchiveStorage.ArchiveStorage, storage)
        const keys = yield* provide(PartitionArchive.listManifests())
        assert.deepStrictEqual(keys, [`public.outbox/public.${partition}.manifest.json`])
        assert.strictEqual((yield* provide(PartitionArchive.verify(keys[0]!))).rowCount, 2)
        yield* sql`CREATE TABLE outbox_restored (LIKE outbox)`
        assert.strictEqual(yield* provide(PartitionArchive.restore(keys[0]!, { into: "outbox_restored" })), 2)
        const restored = yield* sql<{ aggregate_id: string; status: string }>`
          SELECT aggregate_id, status FROM outbox_restored ORDER BY aggregate_id`
        assert.deepStrictEqual(restored.map((r) => [r.aggregate_id, r.status]), [["o-1", "COMPLETED"], ["o-2", "DEAD_LETTER"]])

        // 3. no `archive` option, OUTBOX_ARCHIVE_DIR set: the file storage there
        const fromEnv = yield* fs.makeTempDirectoryScoped({ prefix: "outbox-live-archive-env-" })
        const older = new Date(today - 19 * DAY + 3_600_000)
        const second = `outbox_p${new Date(today - 19 * DAY).toISOString().slice(0, 10).replaceAll("-", "")}`
        yield* sql`INSERT INTO outbox (aggregate_type, aggregate_id, event_type, payload, created_at, status, processed_at)
                   VALUES ('Order', 'o-3', 'OrderShipped', '{"n": 3}', ${older}, 'COMPLETED', ${older})`
        yield* Effect.scoped(Effect.gen(function*() {
          const context = yield* Layer.build(
            OutboxLive.layer({ telemetry: OutboxTelemetry.layer({ labels: [] }) }).pipe(
              Layer.provide(OutboxSink.layerHandler(() => Effect.die("no event is pending"))),
              Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: { OUTBOX_ARCHIVE_DIR: fromEnv } })))
            )
          )
          const status = yield* runMaintenance(Context.get(context, PartitionMaintenance.PartitionMaintenance), 1)
          assert.strictEqual(status.failures, 0, status.lastError)
          const report = status.lastReports.find((r) => r.table === "outbox")!
          assert.deepStrictEqual(report.retired.map((r) => [r.partition, r.action]), [[second, "archived"]])
        }))
        assert.notInclude(yield* partitionsOf, second)
        const envStorage = yield* FileArchiveStorage.make({ directory: fromEnv })
        const envKeys = yield* Effect.provideService(PartitionArchive.listManifests(), ArchiveStorage.ArchiveStorage, envStorage)
        assert.deepStrictEqual(envKeys, [`public.outbox/public.${second}.manifest.json`])
      }).pipe(Effect.scoped, Effect.provide(TestClock.layer())))
  })
})
