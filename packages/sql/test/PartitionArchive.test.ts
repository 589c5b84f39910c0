import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import { assert, describe, layer } from "@effect/vitest"
import * as ArchiveStorage from "@outbox/core/ArchiveStorage"
import * as FileArchiveStorage from "@outbox/sql/FileArchiveStorage"
import * as PartitionArchive from "@outbox/sql/PartitionArchive"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Layer from "effect/Layer"
import * as Path from "effect/Path"
import * as SqlClient from "effect/sql/SqlClient"
import { TestClock } from "effect/testing"
import * as Zlib from "node:zlib"

const TestLive = Layer.mergeAll(TestDatabase.layer, NodeFileSystem.layer, NodePath.layer).pipe(Layer.orDie)

const ROWS = 3000
const FROM = new Date("2024-01-01T00:00:00.000Z")
const TO = new Date("2024-01-02T00:00:00.000Z")

/**
 * A range-partitioned table `<name>` with daily partitions `<name>_p20240101`
 * (ROWS rows of awkward values) and `<name>_p20240102` (5 rows that must not
 * be archived).
 */
const seed = (name: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const t = sql(name)
    yield* sql`
      CREATE TABLE ${t} (
        id bigint GENERATED ALWAYS AS IDENTITY,
        created_at timestamptz NOT NULL,
        topic text,
        payload jsonb,
        amount numeric,
        ratio float8,
        big bigint,
        raw json,
        blob bytea,
        tags text[],
        doubled numeric GENERATED ALWAYS AS (amount * 2) STORED
      ) PARTITION BY RANGE (created_at)`
    yield* sql`CREATE TABLE ${sql(`${name}_p20240101`)} PARTITION OF ${t} FOR VALUES FROM ('2024-01-01') TO ('2024-01-02')`
    yield* sql`CREATE TABLE ${sql(`${name}_p20240102`)} PARTITION OF ${t} FOR VALUES FROM ('2024-01-02') TO ('2024-01-03')`
    yield* sql`
      INSERT INTO ${t} (created_at, topic, payload, amount, ratio, big, raw, blob, tags)
      SELECT '2024-01-01T00:00:00Z'::timestamptz + g * interval '17 seconds' + g * interval '1 microsecond',
             CASE WHEN g % 7 = 0 THEN NULL
                  ELSE format('topic "%s" it''s ünïcødé 😀 \\ back', g) || chr(10) || 'line' || chr(8232) || chr(9) END,
             CASE WHEN g % 5 = 0 THEN NULL
                  ELSE jsonb_build_object('n', g, 'q', 'a"b''c', 'arr', jsonb_build_array(1, 'x', NULL), 'u', 'ü😀') END,
             CASE WHEN g % 3 = 0 THEN NULL ELSE round(g::numeric / 7, 30) END,
             CASE WHEN g = 1 THEN 'NaN'::float8 WHEN g = 2 THEN '-Infinity'::float8 ELSE g * 0.1::float8 END,
             9223372036854775807 - g,
             CASE WHEN g % 4 = 0 THEN NULL ELSE ('{"z": 1,   "a": ' || g || ', "z": 2}')::json END,
             decode(md5(g::text), 'hex'),
             ARRAY['a', NULL, 'b"c', g::text]
        FROM generate_series(1, ${ROWS}) AS g`
    yield* sql`
      INSERT INTO ${t} (created_at, topic)
      SELECT '2024-01-02T00:00:00Z'::timestamptz + g * interval '1 hour', 'next day' FROM generate_series(1, 5) AS g`
  })

/** Rows of `a` not in `b` plus rows of `b` not in `a` (json compared as text, which it is stored as). */
const difference = (a: string, b: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const cols = sql.literal("id, created_at, topic, payload, amount, ratio, big, raw::text, blob, tags, doubled")
    const rows = yield* sql<{ n: number }>`
      SELECT (SELECT count(*) FROM (SELECT ${cols} FROM ${sql(a)} EXCEPT ALL SELECT ${cols} FROM ${sql(b)}) x)::int
           + (SELECT count(*) FROM (SELECT ${cols} FROM ${sql(b)} EXCEPT ALL SELECT ${cols} FROM ${sql(a)}) y)::int AS n`
    return rows[0]!.n
  })

const countOf = (table: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const rows = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM ${sql(table)}`
    return rows[0]!.n
  })

const gunzipText = (bytes: Uint8Array) => Zlib.gunzipSync(bytes).toString("utf8")
const gzipText = (text: string) => new Uint8Array(Zlib.gzipSync(Buffer.from(text, "utf8")))
const sha256Hex = (bytes: Uint8Array) =>
  Effect.promise(() => crypto.subtle.digest("SHA-256", bytes)).pipe(
    Effect.map((digest) => Buffer.from(digest).toString("hex"))
  )

/** A temporary directory (removed with the test's scope) and a FileArchiveStorage over it. */
const tempStorage = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const directory = yield* fs.makeTempDirectoryScoped({ prefix: "outbox-archive-" })
  const storage = yield* FileArchiveStorage.make({ directory })
  return { directory, storage }
})

layer(TestLive, { timeout: "120 seconds" })("PartitionArchive", (it) => {
  describe("with FileArchiveStorage", () => {
    it.effect("archives a partition, verifies it and restores it exactly", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const path = yield* Path.Path
        const sql = yield* SqlClient.SqlClient
        const { directory, storage } = yield* tempStorage
        yield* seed("ev_file")
        yield* TestClock.adjust("1 hour")

        const manifest = yield* PartitionArchive.archive({
          parent: "ev_file",
          partition: "ev_file_p20240101",
          from: FROM,
          to: TO
        }).pipe(Effect.provideService(ArchiveStorage.ArchiveStorage, storage))
        assert.strictEqual(manifest.rowCount, ROWS)
        assert.strictEqual(manifest.table, "ev_file")
        assert.strictEqual(manifest.partition, "ev_file_p20240101")
        assert.strictEqual(manifest.from, "2024-01-01T00:00:00.000Z")
        assert.strictEqual(manifest.to, "2024-01-02T00:00:00.000Z")
        assert.strictEqual(manifest.createdAt, "1970-01-01T01:00:00.000Z") // from Clock
        assert.strictEqual(manifest.dataKey, "ev_file/ev_file_p20240101.jsonl.gz")

        // both objects are plain files under the directory, no temporary files left behind
        const files = (yield* fs.readDirectory(path.join(directory, "ev_file"))).sort()
        assert.deepStrictEqual(files, ["ev_file_p20240101.jsonl.gz", "ev_file_p20240101.manifest.json"])
        const data = yield* fs.readFile(path.join(directory, "ev_file", "ev_file_p20240101.jsonl.gz"))
        assert.strictEqual(manifest.sha256, yield* sha256Hex(data))
        const lines = gunzipText(data).split("\n")
        assert.strictEqual(lines.length, ROWS + 1)
        assert.strictEqual(lines[ROWS], "")
        const manifestOnDisk = JSON.parse(
          yield* fs.readFileString(path.join(directory, "ev_file", "ev_file_p20240101.manifest.json"))
        )
        assert.deepStrictEqual(manifestOnDisk, { ...manifest })

        const key = PartitionArchive.manifestKey("ev_file", "ev_file_p20240101")
        const verified = yield* PartitionArchive.verify(key).pipe(
          Effect.provideService(ArchiveStorage.ArchiveStorage, storage)
        )
        assert.strictEqual(verified.rowCount, ROWS)
        assert.strictEqual(verified.compressedBytes, data.length)
        assert.isAbove(verified.uncompressedBytes, verified.compressedBytes)
        assert.deepStrictEqual(
          yield* PartitionArchive.listManifests("ev_file/").pipe(
            Effect.provideService(ArchiveStorage.ArchiveStorage, storage)
          ),
          [key]
        )

        // into a plain copy (identity and generated columns become ordinary columns)
        yield* sql`CREATE TABLE ev_file_copy (LIKE ev_file)`
        const restored = yield* PartitionArchive.restore(key, { into: "ev_file_copy", batchSize: 700 }).pipe(
          Effect.provideService(ArchiveStorage.ArchiveStorage, storage)
        )
        assert.strictEqual(restored, ROWS)
        assert.strictEqual(yield* countOf("ev_file_copy"), ROWS)
        assert.strictEqual(yield* difference("ev_file_p20240101", "ev_file_copy"), 0)

        // into a copy with identity and generated columns: ids kept, generated values recomputed
        yield* sql`CREATE TABLE ev_file_full (LIKE ev_file INCLUDING ALL)`
        assert.strictEqual(
          yield* PartitionArchive.restore(key, { into: "ev_file_full" }).pipe(
            Effect.provideService(ArchiveStorage.ArchiveStorage, storage)
          ),
          ROWS
        )
        assert.strictEqual(yield* difference("ev_file_p20240101", "ev_file_full"), 0)

        // the comparison is able to fail: one changed value is two differing rows
        yield* sql`UPDATE ev_file_copy SET topic = topic || '!' WHERE id = 10`
        assert.strictEqual(yield* difference("ev_file_p20240101", "ev_file_copy"), 2)
      }))

    it.effect("verify and restore name the problem when the archive was tampered with", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const path = yield* Path.Path
        const sql = yield* SqlClient.SqlClient
        const { directory, storage } = yield* tempStorage
        const provide = Effect.provideService(ArchiveStorage.ArchiveStorage, storage)
        yield* seed("ev_tamper")
        const manifest = yield* provide(
          PartitionArchive.archive({ parent: "ev_tamper", partition: "ev_tamper_p20240101", from: FROM, to: TO })
        )
        const key = PartitionArchive.manifestKey("ev_tamper", "ev_tamper_p20240101")
        const dataFile = path.join(directory, manifest.dataKey)
        const manifestFile = path.join(directory, key)
        const original = yield* fs.readFile(dataFile)
        const originalManifest = yield* fs.readFileString(manifestFile)
        assert.strictEqual((yield* provide(PartitionArchive.verify(key))).rowCount, ROWS)

        // one flipped byte
        const flipped = new Uint8Array(original)
        flipped[Math.floor(flipped.length / 2)]! ^= 0xff
        yield* fs.writeFile(dataFile, flipped)
        const flippedError = yield* Effect.flip(provide(PartitionArchive.verify(key)))
        assert.strictEqual(flippedError.reason, "ChecksumMismatch")
        assert.strictEqual(flippedError.key, manifest.dataKey)

        // one dropped line
        const lines = gunzipText(original).split("\n")
        const shorter = gzipText([...lines.slice(0, 10), ...lines.slice(11)].join("\n"))
        yield* fs.writeFile(dataFile, shorter)
        assert.strictEqual((yield* Effect.flip(provide(PartitionArchive.verify(key)))).reason, "ChecksumMismatch")

        // ... with a manifest whose checksum was updated to match: the row count gives it away
        yield* fs.writeFileString(manifestFile, JSON.stringify({ ...manifest, sha256: yield* sha256Hex(shorter) }))
        const shortError = yield* Effect.flip(provide(PartitionArchive.verify(key)))
        assert.strictEqual(shortError.reason, "RowCountMismatch")
        assert.include(shortError.message, `holds ${ROWS - 1} rows`)

        // restore refuses a bad archive and inserts nothing
        yield* sql`CREATE TABLE ev_tamper_copy (LIKE ev_tamper)`
        const restoreError = yield* Effect.flip(provide(PartitionArchive.restore(key, { into: "ev_tamper_copy" })))
        assert.strictEqual(restoreError._tag, "ArchiveError")
        assert.strictEqual(yield* countOf("ev_tamper_copy"), 0)

        // intact data, manifest with a wrong row count
        yield* fs.writeFile(dataFile, original)
        yield* fs.writeFileString(manifestFile, JSON.stringify({ ...manifest, rowCount: ROWS + 1 }))
        assert.strictEqual((yield* Effect.flip(provide(PartitionArchive.verify(key)))).reason, "RowCountMismatch")

        // a manifest that is not one
        yield* fs.writeFileString(manifestFile, JSON.stringify({ ...manifest, compression: "zstd" }))
        assert.strictEqual((yield* Effect.flip(provide(PartitionArchive.verify(key)))).reason, "InvalidManifest")
        yield* fs.writeFileString(manifestFile, "{ not json")
        assert.strictEqual((yield* Effect.flip(provide(PartitionArchive.verify(key)))).reason, "InvalidManifest")

        // data that matches its checksum but is not gzip
        const garbage = new TextEncoder().encode("{\"id\": 1}\n")
        yield* fs.writeFile(dataFile, garbage)
        yield* fs.writeFileString(manifestFile, JSON.stringify({ ...manifest, sha256: yield* sha256Hex(garbage), rowCount: 1 }))
        assert.strictEqual((yield* Effect.flip(provide(PartitionArchive.verify(key)))).reason, "CorruptData")

        // missing
        assert.strictEqual(
          (yield* Effect.flip(provide(PartitionArchive.verify("ev_tamper/nope.manifest.json")))).reason,
          "NotFound"
        )

        // restored to its original state, it verifies and restores again
        yield* fs.writeFile(dataFile, original)
        yield* fs.writeFileString(manifestFile, originalManifest)
        assert.strictEqual(yield* provide(PartitionArchive.restore(key, { into: "ev_tamper_copy" })), ROWS)
        assert.strictEqual(yield* difference("ev_tamper_p20240101", "ev_tamper_copy"), 0)
      }))

    it.effect("archives an empty partition and schema-qualified names; refuses bad identifiers", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const { storage } = yield* tempStorage
        const provide = Effect.provideService(ArchiveStorage.ArchiveStorage, storage)
        yield* sql`CREATE SCHEMA arch`
        yield* sql`CREATE TABLE arch.ev (id int, created_at timestamptz NOT NULL) PARTITION BY RANGE (created_at)`
        yield* sql`CREATE TABLE arch.ev_p20240101 PARTITION OF arch.ev FOR VALUES FROM ('2024-01-01') TO ('2024-01-02')`

        const manifest = yield* provide(
          PartitionArchive.archive({ parent: "arch.ev", partition: "arch.ev_p20240101", from: FROM, to: TO })
        )
        assert.strictEqual(manifest.rowCount, 0)
        assert.strictEqual(manifest.dataKey, "arch.ev/arch.ev_p20240101.jsonl.gz")
        const key = PartitionArchive.manifestKey("arch.ev", "arch.ev_p20240101")
        assert.strictEqual((yield* provide(PartitionArchive.verify(key))).rowCount, 0)
        yield* sql`CREATE TABLE arch.ev_copy (LIKE arch.ev)`
        assert.strictEqual(yield* provide(PartitionArchive.restore(key, { into: "arch.ev_copy" })), 0)

        const bad = yield* Effect.flip(provide(
          PartitionArchive.archive({ parent: "arch.ev", partition: "ev\"; DROP TABLE arch.ev; --", from: FROM, to: TO })
        ))
        assert.strictEqual(bad._tag, "InvalidIdentifier")
        const badInto = yield* Effect.flip(provide(PartitionArchive.restore(key, { into: "a.b.c" })))
        assert.strictEqual(badInto._tag, "InvalidIdentifier")
      }))

    it.effect("stores bytes atomically under validated keys", () =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const path = yield* Path.Path
        const { directory, storage } = yield* tempStorage
        const bytes = new TextEncoder().encode("hello")

        yield* storage.put("t/a.json", bytes)
        yield* storage.put("t/a.json", new TextEncoder().encode("hello again")) // replaces
        yield* storage.put("t/sub/b.json", bytes)
        yield* storage.put("u/c.json", bytes)
        assert.strictEqual(new TextDecoder().decode(yield* storage.get("t/a.json")), "hello again")
        assert.isTrue(yield* storage.exists("t/a.json"))
        assert.isFalse(yield* storage.exists("t/missing.json"))
        assert.isFalse(yield* storage.exists("t/sub")) // a directory is not an object
        assert.deepStrictEqual(yield* storage.list(""), ["t/a.json", "t/sub/b.json", "u/c.json"])
        assert.deepStrictEqual(yield* storage.list("t/"), ["t/a.json", "t/sub/b.json"])
        assert.deepStrictEqual(yield* storage.list("t/s"), ["t/sub/b.json"])
        assert.deepStrictEqual(yield* storage.list("nothing/here"), [])
        assert.deepStrictEqual((yield* fs.readDirectory(path.join(directory, "t"))).sort(), ["a.json", "sub"])

        assert.strictEqual((yield* Effect.flip(storage.get("t/missing.json"))).reason, "NotFound")
        for (const key of ["../escape", "t/../../escape", "/etc/passwd", "t//a", "t/./a", "", "t/.hidden", "a\\b"]) {
          const error = yield* Effect.flip(storage.put(key, bytes))
          assert.strictEqual(error.reason, "InvalidKey", key)
        }
        assert.isFalse(yield* fs.exists(path.join(directory, "..", "escape")))
        assert.strictEqual((yield* Effect.flip(storage.list("../"))).reason, "InvalidKey")
      }))
  })

  describe("with ArchiveStorage.layerMemory", () => {
    it.effect("archives, verifies, restores, and detects tampering", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const storage = yield* ArchiveStorage.ArchiveStorage
        yield* seed("ev_mem")
        const manifest = yield* PartitionArchive.archive({
          parent: "ev_mem",
          partition: "ev_mem_p20240101",
          from: FROM,
          to: TO,
          batchSize: 128
        })
        assert.strictEqual(manifest.rowCount, ROWS)
        const key = PartitionArchive.manifestKey("ev_mem", "ev_mem_p20240101")
        assert.deepStrictEqual(yield* storage.list("ev_mem/"), [manifest.dataKey, key])
        assert.strictEqual((yield* PartitionArchive.verify(key)).rowCount, ROWS)

        yield* sql`CREATE TABLE ev_mem_copy (LIKE ev_mem)`
        assert.strictEqual(yield* PartitionArchive.restore(key, { into: "ev_mem_copy" }), ROWS)
        assert.strictEqual(yield* difference("ev_mem_p20240101", "ev_mem_copy"), 0)
        // the other partition was not archived
        assert.strictEqual(yield* countOf("ev_mem_p20240102"), 5)

        // the stored bytes cannot be changed through a returned array
        const data = yield* storage.get(manifest.dataKey)
        data[0]! ^= 0xff
        assert.strictEqual((yield* PartitionArchive.verify(key)).rowCount, ROWS)

        yield* storage.put(manifest.dataKey, data)
        assert.strictEqual((yield* Effect.flip(PartitionArchive.verify(key))).reason, "ChecksumMismatch")
        data[0]! ^= 0xff
        yield* storage.put(manifest.dataKey, data)
        yield* storage.put(key, ArchiveStorage.encodeManifest({ ...manifest, rowCount: 1 }))
        assert.strictEqual((yield* Effect.flip(PartitionArchive.verify(key))).reason, "RowCountMismatch")
        assert.strictEqual((yield* Effect.flip(storage.get("ev_mem/none"))).reason, "NotFound")
        assert.strictEqual((yield* Effect.flip(storage.put("../x", data))).reason, "InvalidKey")
      }).pipe(Effect.provide(ArchiveStorage.layerMemory)))
  })
})
