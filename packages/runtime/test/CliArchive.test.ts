import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import { assert, describe, layer } from "@effect/vitest"
import * as ArchiveStorage from "@outbox/core/ArchiveStorage"
import * as FileArchiveStorage from "@outbox/sql/FileArchiveStorage"
import * as OutboxMigrations from "@outbox/sql/OutboxMigrations"
import * as PartitionArchive from "@outbox/sql/PartitionArchive"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Layer from "effect/Layer"
import * as Path from "effect/Path"
import * as SqlClient from "effect/sql/SqlClient"
import { outbox as run } from "./fixtures/cli.ts"

const outbox = (...args: Array<string>) => run(args)

const Live = OutboxMigrations.layer.pipe(
  Layer.provideMerge(TestDatabase.layer),
  Layer.provideMerge(Layer.mergeAll(NodeFileSystem.layer, NodePath.layer)),
  Layer.orDie
)

/**
 * `name` partitioned by day with 2026-01-01 (3 rows) and 2026-01-02 (2 rows),
 * both archived into a new temporary directory and then dropped, as
 * retention mode `archive` leaves them.
 */
const archived = (name: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const fs = yield* FileSystem.FileSystem
    const directory = yield* fs.makeTempDirectoryScoped({ prefix: "outbox-cli-archive-" })
    const storage = yield* FileArchiveStorage.make({ directory })
    yield* sql.unsafe(`CREATE TABLE ${name} (id bigint GENERATED ALWAYS AS IDENTITY, created_at timestamptz NOT NULL,
      body text, doc jsonb) PARTITION BY RANGE (created_at)`)
    for (const d of [1, 2]) {
      const partition = `${name}_p2026010${d}`
      yield* sql.unsafe(`CREATE TABLE ${partition} PARTITION OF ${name} FOR VALUES FROM ('2026-01-0${d}') TO ('2026-01-0${d + 1}')`)
    }
    yield* sql.unsafe(`INSERT INTO ${name} (created_at, body, doc) VALUES
      ('2026-01-01T01:00:00Z', 'a', '{"n": 1}'), ('2026-01-01T02:00:00Z', 'b', NULL), ('2026-01-01T03:00:00Z', 'ü😀', '[1]'),
      ('2026-01-02T01:00:00Z', 'd', NULL), ('2026-01-02T02:00:00Z', 'e', '{}')`)
    // what the first partition held, to compare restored rows with
    yield* sql.unsafe(`CREATE TABLE ${name}_expected AS SELECT * FROM ${name}_p20260101`)
    for (const d of [1, 2]) {
      const partition = `${name}_p2026010${d}`
      yield* PartitionArchive.archive({
        parent: `public.${name}`,
        partition: `public.${partition}`,
        from: new Date(`2026-01-0${d}T00:00:00Z`),
        to: new Date(`2026-01-0${d + 1}T00:00:00Z`)
      }).pipe(Effect.provideService(ArchiveStorage.ArchiveStorage, storage))
      yield* sql.unsafe(`ALTER TABLE ${name} DETACH PARTITION ${partition}`)
      yield* sql.unsafe(`DROP TABLE ${partition}`)
    }
    return directory
  })

const count = (table: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(table)}`, (rows) => rows[0]!.n))

const exists = (table: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    Effect.map(sql<{ t: string | null }>`SELECT to_regclass(${table})::text AS t`, (rows) => rows[0]!.t !== null))

layer(Live, { timeout: "180 seconds", excludeTestServices: true })("npx outbox archive", (it) => {
  describe("list and verify", () => {
    it.effect("list shows the archives; verify passes them, and exits 1 naming a tampered, missing or unknown one", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const path = yield* Path.Path
        const dir = yield* archived("cli_arc")

        const listed = yield* outbox("archive", "list", "--dir", dir)
        assert.strictEqual(listed.code, 0, listed.stderr)
        assert.match(listed.stdout, /^public\.cli_arc_p20260101\s+public\.cli_arc\s+2026-01-01\s+2026-01-02\s+3\s/m)
        assert.match(listed.stdout, /^public\.cli_arc_p20260102\s+public\.cli_arc\s+2026-01-02\s+2026-01-03\s+2\s/m)
        assert.include(listed.stdout, `2 archive(s) in ${dir}`)
        const listedJson = JSON.parse((yield* outbox("archive", "list", "--dir", dir, "--table", "cli_arc", "--json")).stdout) as Array<
          { key: string; manifest: { rowCount: number } }
        >
        assert.deepStrictEqual(listedJson.map((e) => [e.key, e.manifest.rowCount]), [
          ["public.cli_arc/public.cli_arc_p20260101.manifest.json", 3],
          ["public.cli_arc/public.cli_arc_p20260102.manifest.json", 2]
        ])

        const one = yield* outbox("archive", "verify", "cli_arc_p20260101", "--dir", dir)
        assert.strictEqual(one.code, 0, one.stderr)
        assert.match(one.stdout, /^ok\s+public\.cli_arc\/public\.cli_arc_p20260101\.manifest\.json: 3 row\(s\)/)
        const all = yield* outbox("archive", "verify", "--all", "--dir", dir)
        assert.strictEqual(all.code, 0, all.stderr)
        assert.strictEqual(all.stdout.trim().split("\n").filter((l) => l.startsWith("ok ")).length, 2)

        // one flipped byte in the first archive's data
        const data = path.join(dir, "public.cli_arc", "public.cli_arc_p20260101.jsonl.gz")
        const original = yield* fs.readFile(data)
        const flipped = new Uint8Array(original)
        flipped[Math.floor(flipped.length / 2)]! ^= 0xff
        yield* fs.writeFile(data, flipped)
        const tampered = yield* outbox("archive", "verify", "public.cli_arc_p20260101", "--dir", dir)
        assert.strictEqual(tampered.code, 1)
        assert.match(tampered.stderr, /^outbox: ArchiveError: public\.cli_arc\/public\.cli_arc_p20260101\.jsonl\.gz: SHA-256 is [0-9a-f]{64}, the manifest/)
        assert.notInclude(tampered.stderr, "    at ") // a message, not a stack trace
        const allTampered = yield* outbox("archive", "verify", "--all", "--dir", dir)
        assert.strictEqual(allTampered.code, 1)
        assert.match(allTampered.stdout, /^FAIL\s+public\.cli_arc\/public\.cli_arc_p20260101\.manifest\.json: ChecksumMismatch/m)
        assert.match(allTampered.stdout, /^ok\s+public\.cli_arc\/public\.cli_arc_p20260102/m)
        assert.include(
          allTampered.stderr,
          "outbox: ArchiveCommandError: 1 of 2 archive(s) failed verification: public.cli_arc/public.cli_arc_p20260101.manifest.json (ChecksumMismatch)"
        )

        // the data object gone
        yield* fs.remove(data)
        const missing = yield* outbox("archive", "verify", "cli_arc_p20260101", "--dir", dir)
        assert.strictEqual(missing.code, 1)
        assert.include(missing.stderr, "outbox: ArchiveError: no archive object public.cli_arc/public.cli_arc_p20260101.jsonl.gz")

        // unknown partition, no partition, a directory that does not exist, no --dir
        const unknown = yield* outbox("archive", "verify", "cli_arc_p20991231", "--dir", dir)
        assert.strictEqual(unknown.code, 1)
        assert.include(unknown.stderr, `outbox: ArchiveCommandError: no archive of cli_arc_p20991231 in ${dir}`)
        const neither = yield* outbox("archive", "verify", "--dir", dir)
        assert.strictEqual(neither.code, 1)
        assert.include(neither.stderr, "give one partition to verify, or --all")
        const nowhere = yield* outbox("archive", "verify", "--all", "--dir", path.join(dir, "nope"))
        assert.strictEqual(nowhere.code, 1)
        assert.include(nowhere.stderr, "no such directory")
        const noDir = yield* outbox("archive", "list")
        assert.notStrictEqual(noDir.code, 0)
        assert.include(noDir.stderr + noDir.stdout, "--dir")
      }), { timeout: 120_000 })
  })

  describe("restore", () => {
    it.effect("restores into a table named like the partition, refuses to clobber, and never half-restores a bad archive", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const fs = yield* FileSystem.FileSystem
        const path = yield* Path.Path
        const dir = yield* archived("cli_res")

        const restored = yield* outbox("archive", "restore", "cli_res_p20260101", "--dir", dir)
        assert.strictEqual(restored.code, 0, restored.stderr)
        assert.include(
          restored.stdout,
          "restored 3 row(s) from public.cli_res/public.cli_res_p20260101.manifest.json into public.cli_res_p20260101 (created LIKE public.cli_res)"
        )
        const [diff] = yield* sql<{ n: number }>`
          SELECT (SELECT count(*) FROM (SELECT * FROM cli_res_expected EXCEPT ALL SELECT * FROM cli_res_p20260101) x)::int
               + (SELECT count(*) FROM (SELECT * FROM cli_res_p20260101 EXCEPT ALL SELECT * FROM cli_res_expected) y)::int AS n`
        assert.strictEqual(diff!.n, 0)

        // again: the table holds rows now, so it is refused and nothing is added
        const again = yield* outbox("archive", "restore", "cli_res_p20260101", "--dir", dir)
        assert.strictEqual(again.code, 1)
        assert.include(again.stderr, "outbox: ArchiveCommandError: public.cli_res_p20260101 already holds 3 row(s): restore refuses")
        assert.strictEqual(yield* count("cli_res_p20260101"), 3)

        // into an existing empty table, as JSON
        yield* sql`CREATE TABLE cli_res_empty (LIKE cli_res)`
        const into = yield* outbox("archive", "restore", "public.cli_res_p20260102", "--dir", dir, "--into", "cli_res_empty", "--json")
        assert.strictEqual(into.code, 0, into.stderr)
        assert.deepStrictEqual(JSON.parse(into.stdout), {
          key: "public.cli_res/public.cli_res_p20260102.manifest.json",
          into: "cli_res_empty",
          created: false,
          rows: 2
        })

        // a tampered archive: exit 1, and the table it would have created is not left behind
        const data = path.join(dir, "public.cli_res", "public.cli_res_p20260102.jsonl.gz")
        const flipped = new Uint8Array(yield* fs.readFile(data))
        flipped[flipped.length - 3]! ^= 0xff
        yield* fs.writeFile(data, flipped)
        const bad = yield* outbox("archive", "restore", "cli_res_p20260102", "--dir", dir, "--into", "cli_res_new")
        assert.strictEqual(bad.code, 1)
        assert.include(bad.stderr, "outbox: ArchiveError:")
        assert.include(bad.stderr, "SHA-256")
        assert.isFalse(yield* exists("cli_res_new"))

        // a hostile table name is a typed error, never SQL
        const hostile = yield* outbox("archive", "restore", "cli_res_p20260101", "--dir", dir, "--into", `x"; DROP TABLE cli_res; --`)
        assert.strictEqual(hostile.code, 1)
        assert.include(hostile.stderr, "InvalidIdentifier")
        assert.isTrue(yield* exists("cli_res"))
      }), { timeout: 120_000 })
  })
})
