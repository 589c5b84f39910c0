/**
 * `outbox migrate-online …`: the online migration from a plain outbox
 * (`@outbox/sql/OnlineMigration`), one subcommand per step.
 *
 * @internal
 */
import * as OnlineMigration from "@outbox/sql/OnlineMigration"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import * as Progress from "./progress.ts"
import { json as jsonFlag, print } from "./shared.ts"

const legacy = Flag.String("legacy").pipe(Flag.withDefault("outbox"), Flag.withDescription("the plain outbox table"))
const table = Flag.String("table").pipe(
  Flag.withDefault("outbox_partitioned"),
  Flag.withDescription("the partitioned table created beside it")
)
const json = jsonFlag("text")
const batchSize = Flag.Int("batch-size").pipe(Flag.withDefault(1000), Flag.withDescription("rows per backfill transaction"))

const status = Command.make("status", { legacy, table, json }, (o) =>
  Effect.gen(function*() {
    const s = yield* OnlineMigration.status(o)
    if (o.json) return yield* print(s)
    yield* Console.log(`${s.legacy} -> ${s.table}: ${s.phase}`)
    if (s.phase === "prepared" || s.phase === "switched") {
      yield* Console.log(`copies: ${s.copies}, legacy rows without a copy: ${s.uncopied} (${s.uncopiedLeased} under a lease)`)
    }
  })).pipe(Command.withDescription("where the migration stands"))

const prepare = Command.make("prepare", {
  legacy,
  table,
  json,
  premakeDays: Flag.Int("premake-days").pipe(Flag.withDefault(3))
}, (o) =>
  Effect.gen(function*() {
    const r = yield* OnlineMigration.prepare(o)
    if (o.json) return yield* print(r)
    yield* Console.log(`${r.table} ready beside ${r.legacy} (${r.partitionsCreated} partition(s) created)`)
    yield* Console.log(`next: run producers and relays with OUTBOX_TABLE=${r.table} OUTBOX_MIGRATION_LEGACY_TABLE=${r.legacy} OUTBOX_MIGRATION_DUAL_WRITE=true, then backfill`)
  })).pipe(Command.withDescription("create the partitioned table beside the plain one"))

const backfill = Command.make("backfill", { legacy, table, json, batchSize }, (o) =>
  Effect.gen(function*() {
    const progress = Progress.make(o.json)
    const r = yield* OnlineMigration.backfill({ ...o, onBatch: (copied) => progress.report(`copied ${copied} row(s)`) })
    yield* progress.done
    if (o.json) return yield* print(r)
    yield* Console.log(`copied ${r.copied} row(s) in ${r.batches} batch(es); ${r.remaining} left under a lease`)
  })).pipe(Command.withDescription("copy legacy rows into the partitioned table, in batches"))

const switchOver = Command.make("switch-over", { legacy, table, json, batchSize }, (o) =>
  Effect.gen(function*() {
    const r = yield* OnlineMigration.switchOver(o)
    if (o.json) return yield* print(r)
    yield* Console.log(`switched: inserts into ${o.legacy} now land in ${o.table}; last backfill copied ${r.copied} row(s)`)
    yield* Console.log(`next: run every process with OUTBOX_TABLE=${o.table} only (rollback is no longer safe once one does), then finish`)
  })).pipe(Command.withDescription("redirect inserts into the plain table and copy what is left"))

const finish = Command.make("finish", { legacy, table, json }, (o) =>
  Effect.gen(function*() {
    const r = yield* OnlineMigration.finish(o)
    if (o.json) return yield* print(r)
    for (const line of r.renamed) yield* Console.log(`renamed ${line}`)
    yield* Console.log(`done: ${o.legacy} is partitioned; a view ${o.table} remains for processes still configured with it`)
  })).pipe(Command.withDescription("give the partitioned table the plain table's name"))

/**
 * The `migrate-online` command.
 *
 * @internal
 */
export const command = Command.make("migrate-online").pipe(
  Command.withDescription("migrate a plain (unpartitioned) outbox to a partitioned one with events flowing"),
  Command.withSubcommands([status, prepare, backfill, switchOver, finish])
)
