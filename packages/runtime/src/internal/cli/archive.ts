/**
 * `outbox archive`: the archives that retention mode `archive` writes
 * (`@outbox/sql/PartitionArchive`), in a directory (`--dir`, read through
 * `@outbox/sql/FileArchiveStorage`).
 *
 * - `outbox archive list --dir D [--table T] [--json]`: every archive, with
 *   its table, bounds, row count and date, from the manifests.
 * - `outbox archive verify <partition> | --all --dir D [--table T] [--json]`:
 *   re-reads archives and checks each against its manifest (SHA-256, gzip,
 *   row count); exits 1 on a missing, unreadable or altered archive, naming
 *   it and the problem.
 * - `outbox archive restore <partition> --dir D [--into T] [--table T]
 *   [--json]`: verifies the archive and inserts its rows into `T` (default:
 *   a table named like the archived partition), created `LIKE` the archived
 *   table when missing. It refuses a table that already holds rows, so it
 *   never mixes an archive into live data, and it inserts all rows or none.
 *
 * `<partition>` is the partition's name (`outbox_p20260101`), its qualified
 * name (`public.outbox_p20260101`) or the manifest's key; `--table` narrows
 * the search when two tables have partitions of the same name.
 *
 * @internal
 */
import { ArchiveStorage, decodeManifest } from "@outbox/core/ArchiveStorage"
import * as FileArchiveStorage from "@outbox/sql/FileArchiveStorage"
import * as Identifier from "@outbox/sql/Identifier"
import * as PartitionArchive from "@outbox/sql/PartitionArchive"
import * as Argument from "effect/cli/Argument"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as FileSystem from "effect/FileSystem"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as SqlClient from "effect/sql/SqlClient"
import { formatBytes, formatTable, json as jsonFlag, print } from "./shared.ts"

/**
 * An `archive` command cannot do what it was asked (no such archive, an
 * ambiguous name, a target table that holds rows, archives that fail
 * verification): the process exits with status 1 and prints
 * `outbox: ArchiveCommandError: <message>`.
 *
 * @internal
 */
export class ArchiveCommandError extends Schema.TaggedError<ArchiveCommandError>("@outbox/runtime/ArchiveCommandError")(
  "ArchiveCommandError",
  { message: Schema.String }
) {}

const MANIFEST = ".manifest.json"

const dir = Flag.String("dir").pipe(
  Flag.withDescription("the archive directory (the FileArchiveStorage directory the archives were written to)")
)
const table = Flag.String("table").pipe(
  Flag.optional,
  Flag.withDescription("only archives of this table (`outbox` or `public.outbox`)")
)

/** The parent table and partition a manifest key names (`<parent>/<partition>.manifest.json`). */
const parse = (key: string) => {
  const slash = key.lastIndexOf("/")
  return { parent: key.slice(0, slash), partition: key.slice(slash + 1, -MANIFEST.length) }
}

/** `name` is `qualified` (`schema.name`) or its unqualified part. */
const names = (qualified: string, name: string) =>
  qualified === name || (!name.includes(".") && qualified.slice(qualified.indexOf(".") + 1) === name)

/** Runs `effect` with the storage over `--dir`, refusing a directory that does not exist. */
const withStorage = <A, E, R>(directory: string, effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const info = yield* Effect.option(fs.stat(directory))
    if (Option.isNone(info) || info.value.type !== "Directory") {
      return yield* new ArchiveCommandError({ message: `--dir ${directory}: no such directory` })
    }
    const storage = yield* FileArchiveStorage.make({ directory })
    return yield* Effect.provideService(effect, ArchiveStorage, storage)
  })

/** The manifest keys, of `table` only when given. */
const manifests = (tableName: Option.Option<string>) =>
  Effect.map(
    PartitionArchive.listManifests(),
    (keys) => Option.isNone(tableName) ? keys : keys.filter((key) => names(parse(key).parent, tableName.value))
  )

/** The one manifest key `partition` names (see the module header). */
const resolve = (directory: string, partition: string, tableName: Option.Option<string>) =>
  Effect.gen(function*() {
    const keys = yield* manifests(tableName)
    const matches = partition.endsWith(MANIFEST)
      ? keys.filter((key) => key === partition)
      : keys.filter((key) => names(parse(key).partition, partition))
    if (matches.length === 1) return matches[0]!
    if (matches.length === 0) {
      return yield* new ArchiveCommandError({
        message: `no archive of ${partition} in ${directory}${Option.isSome(tableName) ? ` for table ${tableName.value}` : ""} (see outbox archive list)`
      })
    }
    return yield* new ArchiveCommandError({
      message: `${partition} names ${matches.length} archives (${matches.join(", ")}): give --table or the manifest key`
    })
  })

/** The options every subcommand takes besides its own: `--dir`, `--table`. */
const located = { dir, table }

/**
 * A subcommand over the archives of `--dir`: `config` plus `--dir`, `--table`
 * and `--json` (printing JSON instead of `output`), its handler run with the
 * storage over `--dir` (`withStorage`).
 */
const archiveCommand = <Name extends string, const Config extends Command.Command.Config, E, R>(
  name: Name,
  config: Config,
  output: "a table" | "text",
  run: (
    options: Command.Command.Config.Infer<Config & typeof located & { readonly json: Flag.Flag<boolean> }>
  ) => Effect.Effect<void, E, R>
) =>
  Command.make(name, { ...config, ...located, json: jsonFlag(output) }, (options) =>
    // `options.dir` is the `--dir` of `located`: a generic `Config` hides it from the checker
    withStorage((options as { readonly dir: string }).dir, run(options)))

const day = (iso: string) => iso.replace(/T00:00:00(\.000)?Z$/, "")

const list = archiveCommand("list", {}, "a table", (options) =>
  Effect.gen(function*() {
    const storage = yield* ArchiveStorage
    const keys = yield* manifests(options.table)
    // an unreadable manifest is listed as such: `verify` says more
    const entries = yield* Effect.forEach(keys, (key) =>
      Effect.flatMap(storage.get(key), (bytes) => decodeManifest(key, bytes)).pipe(
        Effect.map((manifest) => ({ key, manifest, problem: undefined })),
        Effect.catch((error) => Effect.succeed({ key, manifest: undefined, problem: error.message }))
      ))
    if (options.json) return yield* print(entries)
    if (entries.length === 0) return yield* Console.log(`no archives in ${options.dir}`)
    yield* Console.log(formatTable(
      ["partition", "table", "from", "to", "rows", "archived at"],
      entries.map((e) =>
        e.manifest === undefined
          ? [parse(e.key).partition, parse(e.key).parent, "", "", "", `unreadable: ${e.problem}`]
          : [e.manifest.partition, e.manifest.table, day(e.manifest.from), day(e.manifest.to), String(e.manifest.rowCount), e.manifest.createdAt]
      ),
      [4]
    ))
    yield* Console.log(`\n${entries.length} archive(s) in ${options.dir}`)
  })).pipe(Command.withDescription("list the archived partitions (from their manifests)"))

const okLine = (v: PartitionArchive.Verified) =>
  `ok    ${v.manifestKey}: ${v.rowCount} row(s), ${formatBytes(v.compressedBytes)} (${formatBytes(v.uncompressedBytes)} uncompressed), sha256 ${v.manifest.sha256}`

const verify = archiveCommand("verify", {
  partition: Argument.String("partition").pipe(
    Argument.optional,
    Argument.withDescription("the archived partition (name, schema.name, or manifest key)")
  ),
  all: Flag.Boolean("all").pipe(Flag.withDefault(false), Flag.withDescription("verify every archive in --dir"))
}, "text", (options) =>
  Effect.gen(function*() {
    if (options.all === Option.isSome(options.partition)) {
      return yield* new ArchiveCommandError({ message: "give one partition to verify, or --all" })
    }
    if (Option.isSome(options.partition)) {
      const key = yield* resolve(options.dir, options.partition.value, options.table)
      const verified = yield* PartitionArchive.verify(key)
      return yield* options.json ? print(verified) : Console.log(okLine(verified))
    }
    const keys = yield* manifests(options.table)
    if (keys.length === 0) {
      return yield* new ArchiveCommandError({ message: `no archives to verify in ${options.dir}` })
    }
    const results = yield* Effect.forEach(keys, (key) => Effect.result(PartitionArchive.verify(key)))
    const failed = results.flatMap((r, i) =>
      r._tag === "Failure" ? [{ key: keys[i]!, reason: r.failure.reason, message: r.failure.message }] : []
    )
    if (options.json) {
      yield* print(results.map((r, i) =>
        r._tag === "Success"
          ? { key: keys[i]!, ok: true, rowCount: r.success.rowCount, sha256: r.success.manifest.sha256 }
          : { key: keys[i]!, ok: false, reason: r.failure.reason, message: r.failure.message }
      ))
    } else {
      for (const [i, r] of results.entries()) {
        yield* Console.log(r._tag === "Success" ? okLine(r.success) : `FAIL  ${keys[i]}: ${r.failure.reason}: ${r.failure.message}`)
      }
    }
    if (failed.length > 0) {
      return yield* new ArchiveCommandError({
        message: `${failed.length} of ${keys.length} archive(s) failed verification: ${failed.map((f) => `${f.key} (${f.reason})`).join(", ")}`
      })
    }
  })).pipe(Command.withDescription("check archives against their manifests (checksum, gzip, row count); exits 1 on a bad one"))

const restore = archiveCommand("restore", {
  partition: Argument.String("partition").pipe(
    Argument.withDescription("the archived partition (name, schema.name, or manifest key)")
  ),
  into: Flag.String("into").pipe(
    Flag.optional,
    Flag.withDescription("the table to restore into (default: the partition's name); created LIKE the archived table if missing, refused if it holds rows")
  )
}, "text", (options) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const storage = yield* ArchiveStorage
    const key = yield* resolve(options.dir, options.partition, options.table)
    const manifest = yield* decodeManifest(key, yield* storage.get(key))
    const into = Option.getOrElse(options.into, () => manifest.partition)
    const target = Identifier.quoteQualified(yield* Identifier.validateQualified(into, "table"))
    const parentTable = Identifier.quoteQualified(yield* Identifier.validateQualified(manifest.table, "table"))
    // one transaction: a bad archive (restore verifies it first) or a refusal leaves no table behind
    const result = yield* sql.withTransaction(Effect.gen(function*() {
      const [found] = yield* sql<{ readonly exists: boolean }>`SELECT to_regclass(${target}) IS NOT NULL AS exists`
      const created = found?.exists !== true
      if (created) {
        const [parent] = yield* sql<{ readonly exists: boolean }>`SELECT to_regclass(${parentTable}) IS NOT NULL AS exists`
        if (parent?.exists !== true) {
          return yield* new ArchiveCommandError({
            message: `${into} does not exist and neither does ${manifest.table} to copy its columns from: create ${into} with the archived table's columns, then restore --into it`
          })
        }
        yield* sql.unsafe(`CREATE TABLE ${target} (LIKE ${parentTable} INCLUDING DEFAULTS)`)
      } else {
        // no writer may add rows between this check and the insert
        yield* sql.unsafe(`LOCK TABLE ${target} IN SHARE ROW EXCLUSIVE MODE`)
        const [rows] = yield* sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM ${sql.literal(target)}`
        if ((rows?.n ?? 0) > 0) {
          return yield* new ArchiveCommandError({
            message: `${into} already holds ${rows!.n} row(s): restore refuses to add archived rows to it (restore --into a new or empty table)`
          })
        }
      }
      const restored = yield* PartitionArchive.restore(key, { into })
      return { key, into, created, rows: restored }
    }))
    if (options.json) return yield* print(result)
    yield* Console.log(
      `restored ${result.rows} row(s) from ${key} into ${into}${result.created ? ` (created LIKE ${manifest.table})` : ""}`
    )
  })).pipe(Command.withDescription("verify an archive and insert its rows into a new or empty table"))

/**
 * The `archive` command.
 *
 * @internal
 */
export const archive = Command.make("archive").pipe(
  Command.withDescription("archived partitions (retention mode archive): list, verify, restore"),
  Command.withSubcommands([list, verify, restore])
)
