/**
 * `outbox dlq`: inspect and redrive dead letters (`@outbox/sql/DeadLetters`).
 *
 * - `outbox dlq list [filters] [--limit N] [--after ID] [--json]`
 * - `outbox dlq count [filters] [--json]`
 * - `outbox dlq show ID [--json]` (an event id or a tracking id)
 * - `outbox dlq redrive --reason "..." --by NAME [filters | --id ID ... | --all]
 *   [--limit N] [--batch-size N] [--dry-run] [--json]`
 * - `outbox dlq history [--event ID] [--limit N] [--json]`
 *
 * Filters: `--event-type T` and `--aggregate-type A` (repeatable),
 * `--aggregate-id X`, `--error TEXT` (in `last_error`, case-insensitive),
 * `--since DATE`, `--until DATE` (dead-lettered in `[since, until)`), and
 * `--id ID` (repeatable). A redrive without `--reason` or `--by` fails with
 * `BlindRedrive` (exit 1) and changes nothing.
 *
 * @internal
 */
import * as DeadLetters from "@outbox/sql/DeadLetters"
import * as Argument from "effect/cli/Argument"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Progress from "./progress.ts"
import { formatTable, json as jsonFlag, print } from "./shared.ts"

const json = jsonFlag("text")

const filterFlags = {
  eventType: Flag.String("event-type").pipe(Flag.atLeast(0), Flag.withDescription("only this event type (repeatable)")),
  aggregateType: Flag.String("aggregate-type").pipe(
    Flag.atLeast(0),
    Flag.withDescription("only this aggregate type (repeatable)")
  ),
  aggregateId: Flag.String("aggregate-id").pipe(Flag.optional, Flag.withDescription("only this aggregate id")),
  error: Flag.String("error").pipe(Flag.optional, Flag.withDescription("last_error contains this text (case-insensitive)")),
  since: Flag.String("since").pipe(Flag.optional, Flag.withDescription("dead-lettered at or after (ISO date or time)")),
  until: Flag.String("until").pipe(Flag.optional, Flag.withDescription("dead-lettered before (ISO date or time)")),
  id: Flag.String("id").pipe(Flag.atLeast(0), Flag.withDescription("only this event id (repeatable)"))
}

interface FilterOptions {
  readonly eventType: ReadonlyArray<string>
  readonly aggregateType: ReadonlyArray<string>
  readonly aggregateId: Option.Option<string>
  readonly error: Option.Option<string>
  readonly since: Option.Option<string>
  readonly until: Option.Option<string>
  readonly id: ReadonlyArray<string>
}

const parseId = (value: string, what = "event id") =>
  /^\d{1,19}$/.test(value.trim())
    ? Effect.succeed(BigInt(value.trim()))
    : Effect.fail(
      new DeadLetters.DeadLetterError({ reason: "InvalidFilter", message: `not an ${what}: ${JSON.stringify(value)}` })
    )

const parseDate = (value: string, flag: string) => {
  const date = new Date(value)
  return Number.isNaN(date.getTime())
    ? Effect.fail(
      new DeadLetters.DeadLetterError({ reason: "InvalidFilter", message: `--${flag}: not a date: ${JSON.stringify(value)}` })
    )
    : Effect.succeed(date)
}

const toFilter = (o: FilterOptions) =>
  Effect.gen(function*() {
    const ids = yield* Effect.forEach(o.id, (id) => parseId(id))
    const since = Option.isSome(o.since) ? yield* parseDate(o.since.value, "since") : undefined
    const until = Option.isSome(o.until) ? yield* parseDate(o.until.value, "until") : undefined
    return {
      ...(ids.length > 0 ? { ids } : {}),
      ...(o.eventType.length > 0 ? { eventTypes: o.eventType } : {}),
      ...(o.aggregateType.length > 0 ? { aggregateTypes: o.aggregateType } : {}),
      ...(Option.isSome(o.aggregateId) ? { aggregateId: o.aggregateId.value } : {}),
      ...(Option.isSome(o.error) ? { errorContains: o.error.value } : {}),
      ...(since !== undefined ? { since } : {}),
      ...(until !== undefined ? { until } : {})
    } satisfies DeadLetters.Filter
  })

const iso = (d: Date | null) => (d === null ? "-" : d.toISOString())

const oneLine = (text: string | null, max = 60) => {
  if (text === null) return "-"
  const flat = text.replace(/\s+/g, " ").trim()
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat
}

const summaryTable = (events: ReadonlyArray<DeadLetters.DeadLetterSummary>) =>
  formatTable(
    ["id", "event type", "aggregate", "retries", "dead-lettered at", "last error"],
    events.map((e) => [
      String(e.id),
      e.eventType,
      `${e.aggregateType}/${e.aggregateId}`,
      `${e.retryCount}/${e.maxRetries}`,
      iso(e.deadLetteredAt),
      oneLine(e.lastError)
    ])
  )

const countsLine = (counts: DeadLetters.Counts) =>
  `${counts.total} dead letter(s)${
    counts.byEventType.length > 0 ? `: ${counts.byEventType.map((c) => `${c.eventType} ${c.count}`).join(", ")}` : ""
  }`

const withService = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.provide(effect, DeadLetters.layerConfig)

const list = Command.make("list", {
  ...filterFlags,
  limit: Flag.Int("limit").pipe(Flag.withDefault(50), Flag.withDescription("at most this many (default 50)")),
  after: Flag.String("after").pipe(Flag.optional, Flag.withDescription("only ids greater than this (paging)")),
  json
}, (options) =>
  withService(Effect.gen(function*() {
    const dlq = yield* DeadLetters.DeadLetters
    const filter = yield* toFilter(options)
    const afterId = Option.isSome(options.after) ? yield* parseId(options.after.value) : undefined
    const events = yield* dlq.list(filter, { limit: options.limit, afterId })
    const counts = yield* dlq.count(filter)
    if (options.json) return yield* print({ ...counts, events })
    if (events.length > 0) yield* Console.log(summaryTable(events))
    yield* Console.log(
      `${events.length > 0 ? "\n" : ""}${countsLine(counts)}${
        events.length < counts.total ? ` (showing ${events.length}${afterId === undefined ? "" : ` after ${afterId}`})` : ""
      }`
    )
  }))).pipe(Command.withDescription("list dead letters (filters: --event-type, --aggregate-type, --error, --since, ...)"))

const count = Command.make("count", { ...filterFlags, json }, (options) =>
  withService(Effect.gen(function*() {
    const dlq = yield* DeadLetters.DeadLetters
    const counts = yield* dlq.count(yield* toFilter(options))
    if (options.json) return yield* print(counts)
    yield* Console.log(countsLine(counts))
  }))).pipe(Command.withDescription("count dead letters by event type"))

const show = Command.make("show", {
  id: Argument.String("id").pipe(Argument.withDescription("an event id, or a tracking id (UUID)")),
  json
}, (options) =>
  withService(Effect.gen(function*() {
    const dlq = yield* DeadLetters.DeadLetters
    const e = yield* dlq.show(options.id)
    if (options.json) return yield* print(e)
    const fields: ReadonlyArray<readonly [string, string]> = [
      ["id", String(e.id)],
      ["tracking id", e.trackingId],
      ["status", e.status],
      ["event type", e.eventType],
      ["aggregate", `${e.aggregateType}/${e.aggregateId}`],
      ["retries", `${e.retryCount} of ${e.maxRetries}`],
      ["created at", iso(e.createdAt)],
      ["dead-lettered at", iso(e.deadLetteredAt)],
      ["available at", iso(e.availableAt)],
      ["locked until", iso(e.lockedUntil)],
      ["last error", e.lastError ?? "-"]
    ]
    const width = Math.max(...fields.map(([k]) => k.length))
    yield* Console.log(fields.map(([k, v]) => `${k.padEnd(width)}  ${v}`).join("\n"))
    yield* Console.log(`\npayload:\n${JSON.stringify(e.payload, null, 2)}`)
    yield* Console.log(`\nmetadata:\n${JSON.stringify(e.metadata, null, 2)}`)
    yield* Console.log(
      e.redrives.length === 0
        ? "\nredrives: none"
        : `\nredrives:\n${
          e.redrives.map((r) => {
            const before = r.previous.find((p) => p.id === String(e.id))
            return `  ${iso(r.at)}  by ${r.operator} (${r.dbUser}): ${r.reason}${
              before?.last_error ? `\n    error before: ${oneLine(before.last_error, 200)}` : ""
            }`
          }).join("\n")
        }`
    )
  }))).pipe(Command.withDescription("show one event in full: payload, last error, retries, timestamps, redrives"))

const redrive = Command.make("redrive", {
  reason: Flag.String("reason").pipe(Flag.optional, Flag.withDescription("root-cause note (required, recorded)")),
  by: Flag.String("by").pipe(Flag.optional, Flag.withDescription("operator name (required, recorded)")),
  ...filterFlags,
  all: Flag.Boolean("all").pipe(Flag.withDefault(false), Flag.withDescription("redrive every dead letter (no filter)")),
  limit: Flag.Int("limit").pipe(Flag.optional, Flag.withDescription("at most this many events (lowest ids first)")),
  batchSize: Flag.Int("batch-size").pipe(Flag.optional, Flag.withDescription("events per transaction (default 500)")),
  dryRun: Flag.Boolean("dry-run").pipe(Flag.withDefault(false), Flag.withDescription("show what would be redriven; change nothing")),
  json
}, (options) =>
  withService(Effect.gen(function*() {
    const dlq = yield* DeadLetters.DeadLetters
    const progress = Progress.make(options.json)
    const result = yield* dlq.redrive({
      by: Option.getOrUndefined(options.by),
      reason: Option.getOrUndefined(options.reason),
      filter: yield* toFilter(options),
      all: options.all,
      limit: Option.getOrUndefined(options.limit),
      batchSize: Option.getOrUndefined(options.batchSize),
      dryRun: options.dryRun,
      onBatch: (p) => progress.report(`redriven ${p.redriven} of ${p.matched} event(s), ${p.batches} batch(es)`)
    })
    yield* progress.done
    if (options.json) return yield* print(result)
    const notDeadLetters = result.notDeadLetters.length > 0
      ? `\nnot dead letters (left alone): ${result.notDeadLetters.join(", ")}`
      : ""
    if (result._tag === "DryRun") {
      if (result.events.length > 0) yield* Console.log(`${summaryTable(result.events)}\n`)
      return yield* Console.log(
        `dry run: ${result.matched} event(s) would be redriven in ${result.batches} batch(es); nothing changed${notDeadLetters}`
      )
    }
    yield* Console.log(
      `${
        result.redriven === 0
          ? `nothing redriven (${result.matched} matched)`
          : `redriven ${result.redriven} of ${result.matched} matched event(s) in ${result.batches} batch(es) (redrive ${result.redriveId})`
      }${
        result.skipped.length > 0 ? `\nskipped (no longer dead letters): ${result.skipped.join(", ")}` : ""
      }${notDeadLetters}`
    )
  }))).pipe(Command.withDescription("return dead letters to PENDING (needs --reason and --by; --dry-run to preview)"))

const history = Command.make("history", {
  event: Flag.String("event").pipe(Flag.optional, Flag.withDescription("only redrives of this event id")),
  limit: Flag.Int("limit").pipe(Flag.withDefault(50)),
  json
}, (options) =>
  withService(Effect.gen(function*() {
    const dlq = yield* DeadLetters.DeadLetters
    const eventId = Option.isSome(options.event) ? yield* parseId(options.event.value) : undefined
    const entries = yield* dlq.history({ limit: options.limit, eventId })
    if (options.json) return yield* print(entries)
    if (entries.length === 0) return yield* Console.log("no redrives")
    yield* Console.log(formatTable(
      ["at", "redrive", "batch", "events", "by", "db user", "reason"],
      entries.map((e) => [iso(e.at), e.redriveId, String(e.batch), String(e.eventCount), e.operator, e.dbUser, oneLine(e.reason)])
    ))
  }))).pipe(Command.withDescription("the redrive log, newest first"))

/**
 * The `dlq` command.
 *
 * @internal
 */
export const dlq = Command.make("dlq").pipe(
  Command.withDescription("dead letters: list, count, show, redrive (governed), history"),
  Command.withSubcommands([list, count, show, redrive, history])
)
