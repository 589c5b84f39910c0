/**
 * `outbox audit`: the tamper-evident audit trail (`@outbox/sql/AuditTrail`).
 *
 * - `outbox audit verify [--retention-years N] [--max-unsealed-age S] [--json]`:
 *   walks the hash chain; exits 1 (`AuditChainBroken`) naming the first
 *   altered, missing or reordered link, or (`AuditUnsealed`) when a row has
 *   waited for its seal longer than S seconds (default 60: twelve of the
 *   sealer's default 5 s intervals), since an unsealed row can be altered
 *   without trace and an old one means no sealer is running.
 * - `outbox audit show --event ID | --tracking-id UUID [--json]`: every
 *   audit row of one event, in order ("who changed event X").
 * - `outbox audit seal [--json]`: seals every committed row and records the
 *   retention checkpoints (the relay does it on a schedule; this is for cron
 *   or before a verification).
 *
 * @internal
 */
import * as AuditTrail from "@outbox/sql/AuditTrail"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import { formatTable, json as jsonFlag, print } from "./shared.ts"

/**
 * The chain is broken: the process exits with status 1.
 *
 * @internal
 */
export class AuditChainBroken extends Schema.TaggedError<AuditChainBroken>("@outbox/runtime/AuditChainBroken")("AuditChainBroken", {
  kind: Schema.Literals(["altered", "missing", "reordered"]),
  position: Schema.String,
  message: Schema.String
}) {}

/**
 * A row has waited for its seal too long (the sealer is not running): the
 * process exits with status 1.
 *
 * @internal
 */
export class AuditUnsealed extends Schema.TaggedError<AuditUnsealed>("@outbox/runtime/AuditUnsealed")("AuditUnsealed", {
  unsealed: Schema.Number,
  oldestSeconds: Schema.Number,
  message: Schema.String
}) {}

const json = jsonFlag("text")

const short = (hash: string | undefined | null) => (hash == null ? "-" : `${hash.slice(0, 16)}…`)

const verify = Command.make("verify", {
  retentionYears: Flag.Int("retention-years").pipe(
    Flag.withDefault(7),
    Flag.withDescription("rows younger than this must all be there (the audit log's retention)")
  ),
  maxUnsealedAge: Flag.Int("max-unsealed-age").pipe(
    Flag.withDefault(60),
    Flag.withDescription("seconds a row may wait for its seal before verify fails (the sealer runs every 5 s by default)")
  ),
  json
}, (options) =>
  Effect.gen(function*() {
    if (options.retentionYears < 1) {
      return yield* new AuditTrail.AuditError({
        reason: "InvalidArgument",
        operation: "verify",
        message: `--retention-years must be at least 1, got ${options.retentionYears}`
      })
    }
    const audit = yield* AuditTrail.make
    const result = yield* audit.verify({ retention: { amount: options.retentionYears, unit: "years" } })
    if (options.json) yield* print(result)
    else {
      const from = result.start.from === "genesis" ? "the genesis row" : `the retention checkpoint of ${result.start.boundary.toISOString()}`
      if (result.broken === undefined) {
        yield* Console.log(
          `audit chain: OK, ${result.checked} sealed row(s) verified from ${from} (positions ${result.firstPosition}..${result.head.position})`
        )
      } else {
        const b = result.broken
        yield* Console.log(`audit chain: BROKEN at position ${b.position} (${b.kind})`)
        yield* Console.log(`  ${b.message}`)
        yield* Console.log(`  audit id: ${b.auditId ?? "-"}   expected hash: ${short(b.expectedHash)}   found hash: ${short(b.foundHash)}`)
        yield* Console.log(`  ${result.checked} row(s) verified from ${from} before it`)
      }
      yield* Console.log(`head: position ${result.head.position}, hash ${result.head.hash}`)
      if (result.unsealed > 0) {
        yield* Console.log(
          `${result.unsealed} row(s) not sealed yet (not covered by this verification), the oldest recorded ${
            Math.round(result.oldestUnsealedSeconds ?? 0)
          } s ago`
        )
      }
    }
    if (result.broken !== undefined) {
      return yield* new AuditChainBroken({
        kind: result.broken.kind,
        position: String(result.broken.position),
        message: `the audit chain is broken at position ${result.broken.position} (${result.broken.kind})`
      })
    }
    const oldest = result.oldestUnsealedSeconds
    if (oldest !== undefined && oldest > options.maxUnsealedAge) {
      return yield* new AuditUnsealed({
        unsealed: result.unsealed,
        oldestSeconds: oldest,
        message: `${result.unsealed} row(s) not sealed, the oldest recorded ${Math.round(oldest)} s ago (over ${options.maxUnsealedAge} s): ` +
          "unsealed rows can be altered without trace; is the sealer running (the relay with ENABLE_AUDIT=true, or `outbox audit seal`)?"
      })
    }
  })).pipe(Command.withDescription("verify the audit trail's hash chain (exit 1 when it is broken or rows wait too long for their seal)"))

const show = Command.make("show", {
  event: Flag.String("event").pipe(Flag.optional, Flag.withDescription("an event id")),
  trackingId: Flag.String("tracking-id").pipe(Flag.optional, Flag.withDescription("an event's tracking id (UUID)")),
  json
}, (options) =>
  Effect.gen(function*() {
    const audit = yield* AuditTrail.make
    const key = Option.isSome(options.event)
      ? /^\d{1,19}$/.test(options.event.value.trim()) && Option.isNone(options.trackingId)
        ? { eventId: BigInt(options.event.value.trim()) }
        : undefined
      : Option.isSome(options.trackingId)
      ? { trackingId: options.trackingId.value.trim() }
      : undefined
    if (key === undefined) {
      return yield* new AuditTrail.AuditError({
        reason: "InvalidArgument",
        operation: "show",
        message: Option.isSome(options.event) && Option.isSome(options.trackingId)
          ? "give --event or --tracking-id, not both"
          : Option.isSome(options.event)
          ? `not an event id: ${JSON.stringify(options.event.value)}`
          : "give --event ID or --tracking-id UUID"
      })
    }
    const rows = yield* audit.history(key)
    if (options.json) return yield* print(rows)
    if (rows.length === 0) return yield* Console.log("no audit rows for this event")
    yield* Console.log(formatTable(
      ["audit id", "recorded at", "operation", "status", "changed", "db user", "application", "actor", "reason", "chain"],
      rows.map((r) => [
        String(r.auditId),
        r.recordedAt.toISOString(),
        r.operation,
        r.operation === "UPDATE" ? `${r.oldStatus} -> ${r.newStatus}` : (r.newStatus ?? r.oldStatus ?? ""),
        (r.changedColumns ?? []).join(","),
        r.dbUser,
        r.applicationName ?? "",
        r.actor ?? "",
        r.reason ?? "",
        r.chainPosition === null ? "unsealed" : String(r.chainPosition)
      ]),
      [8, 9]
    ))
    const errors = rows.filter((r) => r.lastError !== null)
    for (const r of errors) yield* Console.log(`  audit id ${r.auditId}: last_error ${JSON.stringify(r.lastError)}`)
  })).pipe(Command.withDescription("every audit row of one event, in order (who changed it, when, why)"))

const seal = Command.make("seal", { json }, (options) =>
  Effect.gen(function*() {
    const audit = yield* AuditTrail.make
    const sealed = yield* audit.sealAll()
    const checkpoints = yield* audit.checkpoint()
    const head = yield* audit.head
    if (options.json) return yield* print({ sealed, checkpoints, head })
    yield* Console.log(`sealed ${sealed} row(s), ${checkpoints} retention checkpoint(s); head at position ${head.position}`)
  })).pipe(Command.withDescription("seal committed audit rows now and record retention checkpoints"))

/**
 * `outbox audit verify | show | seal`.
 *
 * @internal
 */
export const audit = Command.make("audit").pipe(
  Command.withDescription("the tamper-evident audit trail (ENABLE_AUDIT=true)"),
  Command.withSubcommands([verify, show, seal])
)
