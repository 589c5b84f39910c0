/**
 * The environment variables of `@outbox/sql`, read here and nowhere else in
 * the package: the outbox table's name, the audit trail switch and the
 * store's start-up and online-migration options, as `Config` values that
 * the modules' `layerConfig` constructors (and the runtime) read, plus
 * `variables`, their catalog (name, default, meaning).
 *
 * Why one module: `OUTBOX_TABLE` was read by the store, dead letters and
 * health, and `ENABLE_AUDIT` by the migrations and the runtime, each with
 * its own default; one definition keeps them agreeing, and the catalog
 * (from which the README's configuration table is generated) complete.
 *
 * @since 0.1.0
 */
import type { Variable } from "@outbox/core/OutboxConfig"
import * as Config from "effect/Config"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as OutboxTables from "./OutboxTables.ts"
import type { Options as StoreOptions } from "./PgOutboxStore.ts"

/**
 * `OUTBOX_TABLE` (default `outbox`): the partitioned outbox table, as
 * written (validated where it is used, see `tables`).
 *
 * @category config
 * @since 0.1.0
 */
export const table: Config.Config<string> = Config.String("OUTBOX_TABLE").pipe(Config.withDefault("outbox"))

/**
 * The names of every outbox object (`OutboxTables`) for `OUTBOX_TABLE`: one
 * value to hand to the SQL modules. A name that is not a plain identifier
 * (or whose derived names would pass PostgreSQL's 63-byte limit) fails here,
 * with a `ConfigError` naming the variable, rather than at the first query.
 *
 * @category config
 * @since 0.1.0
 */
export const tables: Config.Config<OutboxTables.OutboxTables> = table.pipe(
  Config.mapEffect((name) =>
    OutboxTables.make(name).pipe(
      Effect.mapError((e) =>
        new Config.ConfigError(new ConfigProvider.SourceError({ message: `OUTBOX_TABLE: ${e.message}`, cause: e }))
      )
    )
  )
)

/**
 * `ENABLE_AUDIT` (default `false`): whether the migrations install the
 * audit trail (and the runtime seals it).
 *
 * @category config
 * @since 0.1.0
 */
export const audit: Config.Config<boolean> = Config.Boolean("ENABLE_AUDIT").pipe(Config.withDefault(false))

/**
 * `OUTBOX_RUN_MIGRATIONS` (default `true`): whether the store applies the
 * migrations at start.
 *
 * @category config
 * @since 0.1.0
 */
export const runMigrations: Config.Config<boolean> = Config.Boolean("OUTBOX_RUN_MIGRATIONS").pipe(Config.withDefault(true))

/**
 * The online migration (`OnlineMigration`): `OUTBOX_MIGRATION_LEGACY_TABLE`
 * (unset: none) and its flag `OUTBOX_MIGRATION_DUAL_WRITE` (default `false`).
 *
 * @category config
 * @since 0.1.0
 */
export const legacy: Config.Config<{ readonly table: string; readonly dualWrite: boolean } | undefined> = Config.all({
  legacyTable: Config.String("OUTBOX_MIGRATION_LEGACY_TABLE").pipe(Config.option),
  dualWrite: Config.Boolean("OUTBOX_MIGRATION_DUAL_WRITE").pipe(Config.withDefault(false))
}).pipe(Config.map(({ dualWrite, legacyTable }) => Option.isSome(legacyTable) ? { table: legacyTable.value, dualWrite } : undefined))

/**
 * `OUTBOX_COMPLETED` (default `keep`): what completing an event does to its
 * row, `keep` (status COMPLETED) or `delete` (see `PgOutboxStore.Options`).
 *
 * @category config
 * @since 0.1.0
 */
export const completed: Config.Config<"keep" | "delete"> = Config.schema(
  Schema.Literals(["keep", "delete"]),
  "OUTBOX_COMPLETED"
).pipe(Config.withDefault("keep" as const))

/**
 * `OUTBOX_CLAIM_HORIZON` (default `true`): whether the unordered claims read
 * only the partitions from the claim horizon on (see
 * `PgOutboxStore.Options.claimHorizon`).
 *
 * @category config
 * @since 0.1.0
 */
export const claimHorizon: Config.Config<boolean> = Config.Boolean("OUTBOX_CLAIM_HORIZON").pipe(Config.withDefault(true))

/**
 * `OUTBOX_SETTLE_COMMIT` (default `asynchronous`): how settlements commit
 * (a lease's settling transitions, the transaction claim's commit), `asynchronous` (without waiting for the WAL flush) or
 * `synchronous` (see `PgOutboxStore.Options.settleCommit`).
 *
 * @category config
 * @since 0.1.0
 */
export const settleCommit: Config.Config<"asynchronous" | "synchronous"> = Config.schema(
  Schema.Literals(["asynchronous", "synchronous"]),
  "OUTBOX_SETTLE_COMMIT"
).pipe(Config.withDefault("asynchronous" as const))

/**
 * `PgOutboxStore.Options` from the environment: `OUTBOX_TABLE`, the online
 * migration's variables, `OUTBOX_RUN_MIGRATIONS`, `OUTBOX_CLAIM_HORIZON`, `OUTBOX_SETTLE_COMMIT` and `OUTBOX_COMPLETED` (the
 * time source stays the default, the database clock). `OUTBOX_COMPLETED=delete`
 * with `ENABLE_AUDIT=true` fails here, naming both: the audit trail and
 * inspection need completed rows kept.
 *
 * @category config
 * @since 0.1.0
 */
export const store: Config.Config<StoreOptions> = Config.all({ tables, legacy, runMigrations, completed, audit, claimHorizon, settleCommit }).pipe(
  Config.mapEffect(({ audit, claimHorizon, completed, legacy, runMigrations, settleCommit, tables }) =>
    audit && completed === "delete"
      ? Effect.fail(
        new Config.ConfigError(
          new ConfigProvider.SourceError({
            message:
              "OUTBOX_COMPLETED=delete with ENABLE_AUDIT=true: the audit trail needs completed rows kept (OUTBOX_COMPLETED=keep)"
          })
        )
      )
      : Effect.succeed<StoreOptions>({
        table: tables.outbox,
        tables,
        legacy,
        runMigrations,
        completed,
        claimHorizon,
        settleCommit
      })
  )
)

/**
 * Every variable this module reads, with its default as the docs write it
 * (`undefined`: none) and what it does: the package's part of the runtime's
 * catalog.
 *
 * @category config
 * @since 0.1.0
 */
export const variables: ReadonlyArray<Variable> = [
  {
    name: "OUTBOX_TABLE",
    default: "`outbox`",
    description: "the partitioned outbox table (store, dead letters, health, partition maintenance)"
  },
  {
    name: "OUTBOX_RUN_MIGRATIONS",
    default: "`true`",
    description: "`false`: the store does not migrate at start (least-privilege roles; run `npx outbox migrate` as the owner)"
  },
  {
    name: "OUTBOX_MIGRATION_LEGACY_TABLE",
    default: undefined,
    description: "during an online migration: the plain outbox being migrated into `OUTBOX_TABLE`"
  },
  {
    name: "OUTBOX_MIGRATION_DUAL_WRITE",
    default: "`false`",
    description: "during an online migration: write both tables and claim their union (the switch-over flag)"
  },
  {
    name: "OUTBOX_COMPLETED",
    default: "`keep`",
    description:
      "`keep` (completed rows stay, status COMPLETED: audit trail, inspection) or `delete` (completion deletes the row: less bloat; refused with `ENABLE_AUDIT`)"
  },
  {
    name: "OUTBOX_CLAIM_HORIZON",
    default: "`true`",
    description:
      "unordered claims skip the partitions below the oldest one with unfinished rows (taken every 10 s; a row committed below it waits up to 10 s); `false`: every claim reads every partition"
  },
  {
    name: "OUTBOX_SETTLE_COMMIT",
    default: "`asynchronous`",
    description:
      "how settlements commit (a lease's completion, retry, dead letter and release; the transaction claim's commit): `asynchronous` (no wait for the WAL flush; a server crash can lose one, and its events are then redelivered) or `synchronous`"
  },
  {
    name: "ENABLE_AUDIT",
    default: "`false`",
    description: "install (migrations) and seal (relay) the tamper-evident audit trail"
  }
]
