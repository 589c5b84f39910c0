/**
 * The archive storage port: cold storage for retired partitions.
 *
 * Retention mode "archive" writes a partition's rows here before the
 * partition is dropped. An archive is two objects under string keys: the data
 * (gzip-compressed JSON lines) and a small JSON {@link ArchiveManifest}
 * (table, bounds, row count, SHA-256 of the data) from which the archive can
 * be verified and restored.
 *
 * The port only moves bytes under keys, so it fits a directory
 * (`@outbox/sql/FileArchiveStorage`), an object store (S3, GCS, Azure Blob)
 * or a test double ({@link layerMemory}, which is also the template to copy
 * for an object-storage adapter).
 *
 * **Keys** are `/`-separated relative paths such as
 * `outbox/outbox_p20240101.jsonl.gz`: no empty segments, no `.` or `..`
 * segments, no leading `/`, no backslash or NUL, no segment starting with `.`
 * (reserved for temporary files). {@link validateKey} checks this, and every
 * implementation should call it.
 *
 * **Size limit**: `put` and `get` take and return whole byte arrays, so one
 * object must fit in memory. Archives are compressed (JSON lines of a typical
 * outbox row compress 5–10×), so a partition of a few million rows is fine;
 * beyond that, retire partitions at a finer grain.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"

/**
 * What went wrong with an archive.
 *
 * - `NotFound`: no object under the key.
 * - `InvalidKey`: the key is refused (see the module header).
 * - `Io`: the backend failed (disk, network, permissions).
 * - `InvalidManifest`: the manifest is not valid JSON or not an {@link ArchiveManifest}.
 * - `ChecksumMismatch`: the data's SHA-256 differs from the manifest's.
 * - `RowCountMismatch`: the data holds a different number of rows than the manifest says.
 * - `CorruptData`: the data cannot be decompressed although its checksum matches.
 *
 * @category errors
 * @since 0.1.0
 */
export const ArchiveErrorReason = Schema.Literals([
  "NotFound",
  "InvalidKey",
  "Io",
  "InvalidManifest",
  "ChecksumMismatch",
  "RowCountMismatch",
  "CorruptData"
])

/**
 * @category errors
 * @since 0.1.0
 */
export type ArchiveErrorReason = typeof ArchiveErrorReason.Type

/**
 * An archive operation failed; `reason` names the problem and `key` the
 * object concerned.
 *
 * @category errors
 * @since 0.1.0
 */
export class ArchiveError extends Schema.TaggedError<ArchiveError>("@outbox/core/ArchiveError")("ArchiveError", {
  reason: ArchiveErrorReason,
  key: Schema.String,
  message: Schema.String,
  cause: Schema.optional(Schema.Unknown)
}) {
  /**
   * Whether retrying may help (only backend failures).
   *
   * @since 0.1.0
   */
  get isRetryable(): boolean {
    return this.reason === "Io"
  }
}

/**
 * The manifest of one archived partition, stored as JSON next to the data.
 *
 * - `table`: the parent (partitioned) table, as given to the archiver;
 * - `partition`: the archived partition;
 * - `from` / `to`: the partition bounds (ISO 8601, `from` inclusive, `to` exclusive);
 * - `rowCount`: number of rows (= lines) in the data;
 * - `sha256`: lower-case hex SHA-256 of the stored (compressed) data object;
 * - `dataKey`: the key of the data object.
 *
 * @category models
 * @since 0.1.0
 */
export const ArchiveManifest = Schema.Struct({
  version: Schema.Literal(1),
  table: Schema.String,
  partition: Schema.String,
  from: Schema.String,
  to: Schema.String,
  rowCount: Schema.Natural,
  sha256: Schema.String.check(Schema.isPattern(/^[0-9a-f]{64}$/)),
  compression: Schema.Literal("gzip"),
  format: Schema.Literal("jsonl"),
  createdAt: Schema.String,
  dataKey: Schema.String
})

/**
 * @category models
 * @since 0.1.0
 */
export type ArchiveManifest = typeof ArchiveManifest.Type

const ManifestJson = Schema.fromJsonString(ArchiveManifest, { space: 2 })

/**
 * Serialises a manifest (pretty-printed JSON, UTF-8).
 *
 * @category codecs
 * @since 0.1.0
 */
export const encodeManifest = (manifest: ArchiveManifest): Uint8Array =>
  new TextEncoder().encode(`${Schema.encodeSync(ManifestJson)(manifest)}\n`)

/**
 * Parses a manifest read from storage; anything that is not a valid
 * {@link ArchiveManifest} fails with reason `InvalidManifest`.
 *
 * @category codecs
 * @since 0.1.0
 */
export const decodeManifest = (key: string, bytes: Uint8Array): Effect.Effect<ArchiveManifest, ArchiveError> =>
  Effect.mapError(
    Schema.decodeUnknownEffect(ManifestJson)(new TextDecoder("utf-8", { fatal: false }).decode(bytes)),
    (cause) => new ArchiveError({ reason: "InvalidManifest", key, message: `invalid manifest ${key}: ${cause.message}`, cause })
  )

/**
 * Checks a key against the rules in the module header. Implementations
 * call it first, so a key can never escape the storage root.
 *
 * @category validation
 * @since 0.1.0
 */
export const validateKey = (key: string): Effect.Effect<string, ArchiveError> => {
  const refuse = (why: string) =>
    Effect.fail(new ArchiveError({ reason: "InvalidKey", key, message: `invalid archive key ${JSON.stringify(key)}: ${why}` }))
  if (key.length === 0) return refuse("it is empty")
  if (key.length > 1024) return refuse("it is longer than 1024 characters")
  if (key.includes("\\") || key.includes("\u0000")) return refuse("it contains a backslash or NUL")
  if (key.startsWith("/")) return refuse("it is absolute")
  for (const segment of key.split("/")) {
    if (segment === "") return refuse("it has an empty segment")
    if (segment === "." || segment === "..") return refuse("it has a '.' or '..' segment")
    if (segment.startsWith(".")) return refuse("a segment starts with '.' (reserved for temporary files)")
  }
  return Effect.succeed(key)
}

/**
 * Validates a list prefix: the empty prefix lists everything; otherwise the
 * prefix must be a valid key or a valid key followed by `/`.
 *
 * @category validation
 * @since 0.1.0
 */
export const validatePrefix = (prefix: string): Effect.Effect<string, ArchiveError> =>
  prefix === "" ? Effect.succeed(prefix) : Effect.as(validateKey(prefix.endsWith("/") ? prefix.slice(0, -1) : prefix), prefix)

/**
 * Cold storage for archives: bytes under `/`-separated keys.
 *
 * `put` replaces any previous object atomically (readers see the old or the
 * new bytes, never a mix). `list` returns the keys starting with `prefix`
 * (plain string prefix, as object stores do), sorted.
 *
 * @category services
 * @since 0.1.0
 */
export class ArchiveStorage extends Context.Service<ArchiveStorage, {
  readonly put: (key: string, bytes: Uint8Array) => Effect.Effect<void, ArchiveError>
  readonly get: (key: string) => Effect.Effect<Uint8Array, ArchiveError>
  readonly list: (prefix: string) => Effect.Effect<ReadonlyArray<string>, ArchiveError>
  readonly exists: (key: string) => Effect.Effect<boolean, ArchiveError>
}>()("@outbox/core/ArchiveStorage") {}

/**
 * An in-memory storage, for tests and as the template of an object-storage
 * adapter. Each build of the layer starts empty; bytes are copied on the
 * way in and out (`new Uint8Array(bytes)`, not `slice`, which only makes a
 * view of a Node `Buffer`), so callers cannot alter stored objects by
 * mutating arrays.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerMemory: Layer.Layer<ArchiveStorage> = Layer.effect(
  ArchiveStorage,
  Effect.gen(function*() {
    const objects = yield* Ref.make(new Map<string, Uint8Array>())
    const notFound = (key: string) => new ArchiveError({ reason: "NotFound", key, message: `no archive object ${key}` })
    return ArchiveStorage.of({
      put: (key, bytes) =>
        Effect.flatMap(validateKey(key), () =>
          Ref.update(objects, (map) => {
            const next = new Map(map)
            next.set(key, new Uint8Array(bytes))
            return next
          })),
      get: (key) =>
        Effect.flatMap(validateKey(key), () =>
          Effect.flatMap(Ref.get(objects), (map) => {
            const bytes = map.get(key)
            return bytes === undefined ? Effect.fail(notFound(key)) : Effect.succeed(new Uint8Array(bytes))
          })),
      list: (prefix) =>
        Effect.flatMap(validatePrefix(prefix), () =>
          Effect.map(Ref.get(objects), (map) => [...map.keys()].filter((key) => key.startsWith(prefix)).sort())),
      exists: (key) => Effect.flatMap(validateKey(key), () => Effect.map(Ref.get(objects), (map) => map.has(key)))
    })
  })
)
