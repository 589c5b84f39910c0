/**
 * `ArchiveStorage` in a local directory (or a mounted volume).
 *
 * Each key maps to a file under `directory` (`a/b.jsonl.gz` →
 * `<directory>/a/b.jsonl.gz`). Keys are validated by
 * `ArchiveStorage.validateKey` and resolved strictly inside the directory, so
 * no key can reach outside it. Writes are atomic: the bytes go to a hidden
 * temporary file in the target's directory, are flushed with `fsync`, and the
 * file is renamed over the target, so a reader (or a crash) sees the old
 * object or the new one, never a torn one.
 *
 * Uses Effect's `FileSystem` and `Path` services; in Node provide them with
 * `NodeServices.layer` (or `NodeFileSystem.layer` + `NodePath.layer`) from
 * `@effect/platform-node`.
 *
 * @since 0.1.0
 */
import { ArchiveError, ArchiveStorage, validateKey, validatePrefix } from "@outbox/core/ArchiveStorage"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Path from "effect/Path"
import type * as PlatformError from "effect/PlatformError"
import * as Random from "effect/Random"

/**
 * Options of {@link make} and {@link layer}.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /** The root directory; created on the first write if missing. */
  readonly directory: string
}

const toArchiveError = (key: string, operation: string) => (error: PlatformError.PlatformError): ArchiveError =>
  new ArchiveError({
    reason: error.reason._tag === "NotFound" ? "NotFound" : "Io",
    key,
    message: error.reason._tag === "NotFound"
      ? `no archive object ${key}`
      : `archive ${operation} of ${key} failed: ${error.message}`,
    cause: error
  })

/**
 * Builds the storage over `options.directory`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options) {
  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  const root = path.resolve(options.directory)

  const resolve = (key: string): Effect.Effect<string, ArchiveError> =>
    Effect.flatMap(validateKey(key), () =>
      Option.match(path.resolveWithin(root, key), {
        onNone: () =>
          Effect.fail(new ArchiveError({ reason: "InvalidKey", key, message: `archive key ${key} resolves outside ${root}` })),
        onSome: Effect.succeed
      }))

  const put = Effect.fn("FileArchiveStorage.put")(function*(key: string, bytes: Uint8Array) {
    const target = yield* resolve(key)
    const directory = path.dirname(target)
    const nonce = yield* Random.nextIntBetween(0, 0x7fffffff)
    const temporary = path.join(directory, `.${path.basename(target)}.${nonce.toString(36)}.tmp`)
    yield* Effect.gen(function*() {
      yield* fs.makeDirectory(directory, { recursive: true })
      yield* Effect.scoped(
        Effect.flatMap(fs.open(temporary, { flag: "wx" }), (file) => Effect.andThen(file.writeAll(bytes), file.sync))
      )
      yield* fs.rename(temporary, target)
    }).pipe(
      Effect.onError(() => Effect.ignore(fs.remove(temporary, { force: true }))),
      Effect.mapError(toArchiveError(key, "write"))
    )
  })

  const get = Effect.fn("FileArchiveStorage.get")(function*(key: string) {
    const target = yield* resolve(key)
    return yield* Effect.mapError(fs.readFile(target), toArchiveError(key, "read"))
  })

  const exists = Effect.fn("FileArchiveStorage.exists")(function*(key: string) {
    const target = yield* resolve(key)
    return yield* fs.stat(target).pipe(
      Effect.map((info) => info.type === "File"),
      Effect.catchIf((error) => error.reason._tag === "NotFound", () => Effect.succeed(false)),
      Effect.mapError(toArchiveError(key, "stat"))
    )
  })

  // Walks `dir` (whose key prefix is `dirKey`, "" for the root), collecting
  // the files whose key starts with `prefix`. Hidden entries (temporary
  // files) are skipped; only subdirectories that can hold a match are entered.
  const walk = (dir: string, dirKey: string, prefix: string): Effect.Effect<Array<string>, PlatformError.PlatformError> =>
    Effect.flatMap(fs.readDirectoryEntries(dir), (entries) =>
      Effect.map(
        Effect.forEach(entries, (entry): Effect.Effect<Array<string>, PlatformError.PlatformError> => {
          if (entry.name.startsWith(".")) return Effect.succeed([])
          const key = `${dirKey}${entry.name}`
          if (entry.type === "File") return Effect.succeed(key.startsWith(prefix) ? [key] : [])
          if (entry.type === "Directory" && (`${key}/`.startsWith(prefix) || prefix.startsWith(`${key}/`))) {
            return walk(path.join(dir, entry.name), `${key}/`, prefix)
          }
          return Effect.succeed([])
        }),
        (nested) => nested.flat()
      ))

  const list = Effect.fn("FileArchiveStorage.list")(function*(prefix: string) {
    yield* validatePrefix(prefix)
    // start at the deepest directory named entirely by the prefix
    const slash = prefix.lastIndexOf("/")
    const dirKey = slash < 0 ? "" : prefix.slice(0, slash + 1)
    const start = dirKey === "" ? root : yield* resolve(dirKey.slice(0, -1))
    const keys = yield* walk(start, dirKey, prefix).pipe(
      Effect.catchIf((error) => error.reason._tag === "NotFound", () => Effect.succeed<Array<string>>([])),
      Effect.mapError(toArchiveError(prefix, "list"))
    )
    return keys.sort()
  })

  return ArchiveStorage.of({ put, get, list, exists })
})

/**
 * The storage as a layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options): Layer.Layer<ArchiveStorage, never, FileSystem.FileSystem | Path.Path> =>
  Layer.effect(ArchiveStorage, make(options))
