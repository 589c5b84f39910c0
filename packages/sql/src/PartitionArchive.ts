/**
 * Archives a partition to cold storage, verifies an archive, restores it.
 *
 * Retention mode "archive" calls {@link archive} before it drops a partition.
 * An archive is two objects in the `ArchiveStorage`:
 *
 * - `<parent>/<partition>.jsonl.gz`: the rows, one JSON object per line,
 *   gzip-compressed (a concatenation of gzip members, one per batch, which
 *   every gzip reader accepts);
 * - `<parent>/<partition>.manifest.json`: an `ArchiveManifest` (table,
 *   bounds, row count, SHA-256 of the data object). It is written after the
 *   data, so a manifest never points to missing data.
 *
 * Rows are serialised server-side with `row_to_json`, which uses each type's
 * own text output (timestamps with microseconds and offset, exact
 * `numeric`, shortest round-trip `float8`, `json` text kept verbatim,
 * `bytea` as hex; a raw newline, which only a `json` value's whitespace can
 * hold, becomes a space so that a row is always one line), and are read
 * through a cursor in batches within one snapshot. {@link restore} turns them
 * back into rows with `json_populate_recordset`, so the values round-trip
 * exactly into a table of the same shape (a `json` value's line breaks come
 * back as spaces). The row text is never parsed in JavaScript.
 *
 * **Gotchas**
 *
 * - The archive is a snapshot: rows written to the partition after it and
 *   before the drop are not in it. Detach the partition (or lock it) first:
 *   `archive` reads the partition by its own name, attached or not, and can
 *   run inside the caller's transaction (it then uses a savepoint).
 * - The compressed archive is built in memory, and verify/restore hold the
 *   decompressed data in memory (see `ArchiveStorage`'s size limit).
 *
 * @since 0.1.0
 */
import {
  ArchiveError,
  type ArchiveManifest,
  ArchiveStorage,
  decodeManifest,
  encodeManifest
} from "@outbox/core/ArchiveStorage"
import * as DateTime from "effect/DateTime"
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"
import { createHash } from "node:crypto"
import * as Zlib from "node:zlib"
import * as Identifier from "./Identifier.ts"
import { digestOfLines, lineOf } from "./internal/archiveRows.ts"

/**
 * What to archive: the parent table and the partition (plain names,
 * optionally schema-qualified) and the partition's bounds (`from`
 * inclusive, `to` exclusive), recorded in the manifest.
 *
 * @category models
 * @since 0.1.0
 */
export interface ArchiveRequest {
  readonly parent: string
  readonly partition: string
  readonly from: Date
  readonly to: Date
  /** Rows per cursor fetch and gzip member (default 1000). */
  readonly batchSize?: number | undefined
}

/**
 * The outcome of a successful {@link verify}.
 *
 * @category models
 * @since 0.1.0
 */
export interface Verified {
  readonly manifestKey: string
  readonly manifest: ArchiveManifest
  /** Rows found in the data (equal to `manifest.rowCount`). */
  readonly rowCount: number
  /** Size of the stored (compressed) data object. */
  readonly compressedBytes: number
  /** Size of the decompressed JSON lines. */
  readonly uncompressedBytes: number
  /**
   * An order-independent digest of the rows (`<count>:<sum of row hashes>`),
   * which archive retention compares with the detached partition's before
   * it drops it.
   */
  readonly digest: string
}

/**
 * The key of an archive's data object.
 *
 * @category keys
 * @since 0.1.0
 */
export const dataKey = (parent: string, partition: string): string => `${parent}/${partition}.jsonl.gz`

/**
 * The key of an archive's manifest.
 *
 * @category keys
 * @since 0.1.0
 */
export const manifestKey = (parent: string, partition: string): string => `${parent}/${partition}.manifest.json`

/**
 * The manifest keys under a prefix (e.g. `"public.outbox/"` for every
 * archived partition of that table), sorted.
 *
 * @category queries
 * @since 0.1.0
 */
export const listManifests = (prefix = ""): Effect.Effect<ReadonlyArray<string>, ArchiveError, ArchiveStorage> =>
  Effect.flatMap(ArchiveStorage, (storage) =>
    Effect.map(storage.list(prefix), (keys) => keys.filter((key) => key.endsWith(".manifest.json"))))

const DEFAULT_BATCH = 1000
const CURSOR = "outbox_partition_archive"
const NEWLINE = 0x0a

const sha256 = (bytes: Uint8Array): string => createHash("sha256").update(bytes).digest("hex")

const gzip = (input: Uint8Array): Effect.Effect<Uint8Array> =>
  Effect.callback<Uint8Array>((resume) => {
    Zlib.gzip(input, (error, output) => resume(error === null ? Effect.succeed(output) : Effect.die(error)))
  })

const gunzip = (key: string, input: Uint8Array): Effect.Effect<Buffer, ArchiveError> =>
  Effect.callback<Buffer, ArchiveError>((resume) => {
    Zlib.gunzip(input, (error, output) =>
      resume(
        error === null
          ? Effect.succeed(output)
          : Effect.fail(
            new ArchiveError({ reason: "CorruptData", key, message: `${key} is not valid gzip: ${error.message}`, cause: error })
          )
      ))
  })

const countLines = (data: Buffer): number => {
  let count = 0
  for (let at = data.indexOf(NEWLINE); at !== -1; at = data.indexOf(NEWLINE, at + 1)) count++
  return count
}

const isoOf = (date: Date, field: string): Effect.Effect<string> =>
  Number.isFinite(date.getTime())
    ? Effect.succeed(date.toISOString())
    : Effect.die(new RangeError(`PartitionArchive.archive: ${field} is an invalid Date`))

const checkBatchSize = (batchSize: number | undefined): Effect.Effect<number> =>
  batchSize === undefined
    ? Effect.succeed(DEFAULT_BATCH)
    : Number.isInteger(batchSize) && batchSize >= 1 && batchSize <= 100_000
    ? Effect.succeed(batchSize)
    : Effect.die(new RangeError(`PartitionArchive: batchSize must be an integer in 1..100000, got ${batchSize}`))

/**
 * Writes every row of `partition` to the `ArchiveStorage` as compressed JSON
 * lines, then its manifest, and returns the manifest. Re-archiving the same
 * partition replaces the previous archive.
 *
 * Invalid `Date` bounds or `batchSize` are defects.
 *
 * @category archiving
 * @since 0.1.0
 */
export const archive = Effect.fn("PartitionArchive.archive")(function*(request: ArchiveRequest) {
  const sql = yield* SqlClient.SqlClient
  const storage = yield* ArchiveStorage
  yield* Identifier.validateQualified(request.parent, "table")
  const partition = yield* Identifier.validateQualified(request.partition, "partition")
  const from = yield* isoOf(request.from, "from")
  const to = yield* isoOf(request.to, "to")
  const batchSize = yield* checkBatchSize(request.batchSize)
  yield* Effect.annotateCurrentSpan({ "outbox.partition.table": request.parent, "outbox.partition.name": request.partition })

  const { members, rowCount } = yield* sql.withTransaction(Effect.gen(function*() {
    yield* sql.unsafe(
      `DECLARE ${CURSOR} NO SCROLL CURSOR FOR SELECT ${lineOf("t")} AS line FROM ${
        Identifier.quoteQualified(partition)
      } AS t`
    )
    const members: Array<Uint8Array> = []
    let rowCount = 0
    while (true) {
      const rows = yield* sql.unsafe<{ readonly line: string }>(`FETCH FORWARD ${batchSize} FROM ${CURSOR}`)
      if (rows.length > 0) {
        let chunk = ""
        for (const row of rows) chunk += `${row.line}\n`
        members.push(yield* gzip(Buffer.from(chunk, "utf8")))
        rowCount += rows.length
      }
      if (rows.length < batchSize) break
    }
    yield* sql.unsafe(`CLOSE ${CURSOR}`)
    // an empty partition still gets a valid (empty) gzip file
    if (members.length === 0) members.push(yield* gzip(new Uint8Array(0)))
    return { members, rowCount }
  }))

  const data = Buffer.concat(members)
  const keys = {
    data: dataKey(request.parent, request.partition),
    manifest: manifestKey(request.parent, request.partition)
  }
  const manifest: ArchiveManifest = {
    version: 1,
    table: request.parent,
    partition: request.partition,
    from,
    to,
    rowCount,
    sha256: sha256(data),
    compression: "gzip",
    format: "jsonl",
    createdAt: DateTime.formatIso(yield* DateTime.now),
    dataKey: keys.data
  }
  yield* storage.put(keys.data, data)
  yield* storage.put(keys.manifest, encodeManifest(manifest))
  yield* Effect.annotateCurrentSpan({ "outbox.archive.rows": rowCount, "outbox.archive.bytes": data.length })
  return manifest
})

// Reads an archive and checks it: manifest valid, checksum, gzip, row count.
const load = Effect.fnUntraced(function*(key: string) {
  const storage = yield* ArchiveStorage
  const manifest = yield* decodeManifest(key, yield* storage.get(key))
  const compressed = yield* storage.get(manifest.dataKey)
  const actual = sha256(compressed)
  if (actual !== manifest.sha256) {
    return yield* new ArchiveError({
      reason: "ChecksumMismatch",
      key: manifest.dataKey,
      message: `${manifest.dataKey}: SHA-256 is ${actual}, the manifest ${key} says ${manifest.sha256}`
    })
  }
  const data = yield* gunzip(manifest.dataKey, compressed)
  if (data.length > 0 && data[data.length - 1] !== NEWLINE) {
    return yield* new ArchiveError({
      reason: "CorruptData",
      key: manifest.dataKey,
      message: `${manifest.dataKey}: the last line is not terminated`
    })
  }
  const rowCount = countLines(data)
  if (rowCount !== manifest.rowCount) {
    return yield* new ArchiveError({
      reason: "RowCountMismatch",
      key: manifest.dataKey,
      message: `${manifest.dataKey}: holds ${rowCount} rows, the manifest ${key} says ${manifest.rowCount}`
    })
  }
  return { manifest, data, compressedBytes: compressed.length }
})

/**
 * Re-reads an archive and checks it against its manifest: the data's
 * SHA-256, that it decompresses, and its row count. Fails with an
 * `ArchiveError` whose `reason` names the problem (`NotFound`,
 * `InvalidManifest`, `ChecksumMismatch`, `CorruptData`, `RowCountMismatch`).
 *
 * @category archiving
 * @since 0.1.0
 */
export const verify = Effect.fn("PartitionArchive.verify")(function*(manifestKey: string) {
  const loaded = yield* load(manifestKey)
  const verified: Verified = {
    manifestKey,
    manifest: loaded.manifest,
    rowCount: loaded.manifest.rowCount,
    compressedBytes: loaded.compressedBytes,
    uncompressedBytes: loaded.data.length,
    digest: digestOfLines(loaded.data)
  }
  return verified
})

/**
 * Verifies an archive (as {@link verify}) and inserts its rows into `into`,
 * a table of the same shape (same column names and compatible types; e.g.
 * `CREATE TABLE x (LIKE parent)`, or the parent itself), in one transaction.
 * Columns are matched by name; generated columns are recomputed, identity
 * columns keep the archived values (`OVERRIDING SYSTEM VALUE`). Returns the
 * number of rows inserted.
 *
 * @category archiving
 * @since 0.1.0
 */
export const restore = Effect.fn("PartitionArchive.restore")(function*(
  manifestKey: string,
  options: { readonly into: string; readonly batchSize?: number | undefined }
) {
  const sql = yield* SqlClient.SqlClient
  const target = yield* Identifier.validateQualified(options.into, "table")
  const batchSize = yield* checkBatchSize(options.batchSize)
  const { data } = yield* load(manifestKey)
  const table = Identifier.quoteQualified(target)

  return yield* sql.withTransaction(Effect.gen(function*() {
    const columns = yield* sql<{ readonly name: string }>`
      SELECT attname AS name FROM pg_attribute
       WHERE attrelid = ${table}::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''
       ORDER BY attnum`
    const list = columns.map((column) => Identifier.quote(column.name)).join(", ")
    const insert =
      `INSERT INTO ${table} (${list}) OVERRIDING SYSTEM VALUE SELECT ${list} FROM json_populate_recordset(NULL::${table}, $1::json)`
    let restored = 0
    let start = 0
    while (start < data.length) {
      // the end of the batch: just past the batchSize-th newline from start
      let end = start
      let lines = 0
      while (lines < batchSize && end < data.length) {
        end = data.indexOf(NEWLINE, end) + 1
        lines++
      }
      const text = data.toString("utf8", start, end - 1)
      yield* sql.unsafe(insert, [`[${text.replaceAll("\n", ",")}]`])
      restored += lines
      start = end
    }
    return restored
  }))
})
