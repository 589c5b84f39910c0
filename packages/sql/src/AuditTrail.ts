/**
 * A tamper-evident audit trail of the outbox (`ENABLE_AUDIT=true`, see
 * `OutboxMigrations.runWith`).
 *
 * **Capture**: statement-level AFTER triggers on the outbox (transition
 * tables) append one `outbox_audit_log` row per changed outbox row, with
 * one `INSERT ... SELECT` per statement: operation, event id, tracking id,
 * old and new status, changed columns, `session_user`, `application_name`,
 * transaction id, time, and `actor` / `reason` from the transaction's
 * `outbox.actor` / `outbox.reason` settings (see {@link annotate}).
 *
 * **Tamper evidence**: rows are appended unsealed, so writers never wait
 * for each other. {@link AuditTrail.seal} (the SQL function
 * `outbox_audit_seal`, under an advisory lock) gives committed rows
 * consecutive chain positions and `hash = sha256(prev_hash ||
 * sha256(canonical content))`. The table refuses UPDATE, DELETE and
 * TRUNCATE (a trigger, and no privilege for anyone but the owner), except
 * the one-time sealing. {@link AuditTrail.verify} walks the chain and names
 * the first broken link.
 *
 * **Retention**: monthly partitions kept 7 years ({@link policy}) and
 * dropped by the partition manager. {@link AuditTrail.checkpoint} records,
 * for each month boundary, the links preceding it, so verification starts
 * from the first retained link after a drop, while a row deleted anywhere
 * in the retained chain is still reported.
 *
 * @since 0.1.0
 */
import * as PartitionPolicy from "@outbox/core/PartitionPolicy"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as SqlClient from "effect/sql/SqlClient"
import * as Identifier from "./Identifier.ts"
import { fromSql } from "./internal/sqlError.ts"
import { canonicalExpression } from "./migrations/audit/0001_create_audit_log.ts"
import * as OutboxTables from "./OutboxTables.ts"

/**
 * An audit operation failed.
 *
 * @category errors
 * @since 0.1.0
 */
export class AuditError extends Schema.TaggedError<AuditError>("@outbox/sql/AuditError")("AuditError", {
  reason: Schema.Literals(["NotInstalled", "InvalidArgument", "Database"]),
  operation: Schema.String,
  message: Schema.String,
  cause: Schema.optional(Schema.Unknown)
}) {}

/**
 * One audit row.
 *
 * @category models
 * @since 0.1.0
 */
export interface AuditRecord {
  readonly auditId: bigint
  readonly recordedAt: Date
  readonly operation: "INSERT" | "UPDATE" | "DELETE" | "TRUNCATE"
  readonly eventId: bigint | null
  readonly eventCreatedAt: Date | null
  readonly trackingId: string | null
  readonly oldStatus: string | null
  readonly newStatus: string | null
  readonly changedColumns: ReadonlyArray<string> | null
  /** `session_user` of the session that changed the outbox. */
  readonly dbUser: string
  readonly applicationName: string | null
  readonly txid: bigint | null
  readonly actor: string | null
  readonly reason: string | null
  readonly lastError: string | null
  /** `null` until sealed. */
  readonly chainPosition: bigint | null
  /** Hex SHA-256, `null` until sealed. */
  readonly hash: string | null
}

/**
 * A row of `v_outbox_dead_letter_activity`.
 *
 * @category models
 * @since 0.1.0
 */
export interface DeadLetterActivity {
  readonly auditId: bigint
  readonly recordedAt: Date
  readonly activity: "DEAD_LETTERED" | "REDRIVEN"
  readonly eventId: bigint | null
  readonly trackingId: string | null
  readonly oldStatus: string | null
  readonly newStatus: string | null
  /** Why it was dead-lettered (`last_error`). */
  readonly error: string | null
  readonly actor: string | null
  readonly reason: string | null
  readonly dbUser: string
}

/**
 * A row of `v_outbox_sox_audit`.
 *
 * @category models
 * @since 0.1.0
 */
export interface SoxSummary {
  /** UTC day, `YYYY-MM-DD`. */
  readonly day: string
  readonly operation: string
  readonly dbUser: string
  readonly changes: number
  readonly events: number
  readonly statusChanges: number
  readonly withActor: number
  readonly unsealed: number
}

/**
 * The first broken or missing link.
 *
 * - `altered`: the row's content or hash is not what was sealed.
 * - `missing`: a position is absent (a deleted row), or rows that
 *   retention must keep are gone.
 * - `reordered`: the row is intact but chained to a row found elsewhere.
 *
 * @category models
 * @since 0.1.0
 */
export interface ChainBreak {
  readonly kind: "altered" | "missing" | "reordered"
  readonly position: bigint
  /** `undefined` when the row itself is gone. */
  readonly auditId: bigint | undefined
  /** Hex SHA-256 the chain expects there. */
  readonly expectedHash: string | undefined
  /** Hex SHA-256 found there. */
  readonly foundHash: string | undefined
  readonly message: string
}

/**
 * What {@link AuditTrail.verify} found.
 *
 * @category models
 * @since 0.1.0
 */
export interface Verification {
  readonly ok: boolean
  /** Where the walk started: the genesis row, or a retention checkpoint. */
  readonly start: { readonly from: "genesis" } | { readonly from: "checkpoint"; readonly boundary: Date }
  readonly firstPosition: bigint
  readonly head: { readonly position: bigint; readonly hash: string }
  /** Sealed rows walked. */
  readonly checked: number
  /** Rows not sealed yet (not covered by the chain). */
  readonly unsealed: number
  /**
   * How long ago (database clock, seconds) the oldest unsealed row was
   * recorded; `undefined` when every row is sealed. An unsealed row can be
   * altered without trace, so one older than a few seal intervals means the
   * sealer is not running (`outbox audit verify` warns about it).
   */
  readonly oldestUnsealedSeconds: number | undefined
  readonly broken: ChainBreak | undefined
}

/**
 * The audit trail.
 *
 * @category services
 * @since 0.1.0
 */
export class AuditTrail extends Context.Service<AuditTrail, {
  /** Seals up to `maxRows` (default 10000) committed rows; returns how many. */
  readonly seal: (options?: { readonly maxRows?: number | undefined }) => Effect.Effect<number, AuditError>
  /** Seals until nothing committed is left unsealed; returns how many. */
  readonly sealAll: (options?: { readonly maxRows?: number | undefined }) => Effect.Effect<number, AuditError>
  /**
   * Records the retention checkpoints of month boundaries older than
   * `now - grace` (default 1 day; a transaction open longer than that across
   * a month boundary would be reported as missing once its month is dropped).
   */
  readonly checkpoint: (options?: { readonly grace?: Duration.Input | undefined }) => Effect.Effect<number, AuditError>
  /**
   * Walks the chain from the genesis row, or from the retention checkpoint
   * of the oldest retained row. With `retention` (default: {@link policy}'s
   * 7 years), rows newer than the retention floor must all be there.
   */
  readonly verify: (options?: { readonly retention?: PartitionPolicy.Retention | undefined }) => Effect.Effect<Verification, AuditError>
  /** "Who changed event X": every audit row of an event, in order. */
  readonly history: (
    key: { readonly eventId: bigint } | { readonly trackingId: string }
  ) => Effect.Effect<ReadonlyArray<AuditRecord>, AuditError>
  /** Dead-letter activity (`v_outbox_dead_letter_activity`), oldest first. */
  readonly deadLetterActivity: (
    options?: { readonly since?: Date | undefined; readonly limit?: number | undefined }
  ) => Effect.Effect<ReadonlyArray<DeadLetterActivity>, AuditError>
  /** The daily summary (`v_outbox_sox_audit`), oldest day first. */
  readonly soxSummary: (options?: { readonly since?: Date | undefined }) => Effect.Effect<ReadonlyArray<SoxSummary>, AuditError>
  /** The last sealed position and hash (publish it elsewhere to anchor the chain). */
  readonly head: Effect.Effect<{ readonly position: bigint; readonly hash: string }, AuditError>
}>()("@outbox/sql/AuditTrail") {}

/**
 * The audit log's partition policy: monthly partitions of
 * `outbox_audit_log.recorded_at`, 2 months ahead, kept 7 years and dropped
 * (`PartitionPolicy.examples.auditLogs`, with `drop` unless `archive` is
 * asked for: archiving needs an `ArchiveStorage`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const policy = (options: {
  readonly retentionYears?: number | undefined
  readonly premake?: number | undefined
  readonly retentionMode?: PartitionPolicy.RetentionMode | undefined
} = {}): PartitionPolicy.PartitionPolicy => ({
  ...PartitionPolicy.examples.auditLogs(OutboxTables.defaults.auditLog, "recorded_at"),
  premake: options.premake ?? 2,
  retention: { amount: options.retentionYears ?? 7, unit: "years" },
  retentionMode: options.retentionMode ?? "drop"
})

/**
 * Names who does what in the current transaction: the audit rows its
 * outbox changes write carry `actor` and `reason`
 * (`set_config('outbox.actor' | 'outbox.reason', value, true)`, so the
 * values end with the transaction). Outside a transaction it has no effect
 * on later statements: run it inside `sql.withTransaction`.
 *
 * @category annotations
 * @since 0.1.0
 */
export const annotate = (options: { readonly actor: string; readonly reason: string }) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql`SELECT set_config('outbox.actor', ${options.actor}, true), set_config('outbox.reason', ${options.reason}, true)`)
    .pipe(Effect.asVoid, Effect.mapError(databaseError("annotate")))

const ZERO = "0".repeat(64)

/** With PostgreSQL's own message (the driver's is generic). */
const databaseError = fromSql(
  ({ cause, message, operation }) => new AuditError({ reason: "Database", operation, message, cause }),
  { detail: "server" }
)

interface LogRow {
  readonly audit_id: bigint
  readonly recorded_at: Date
  readonly operation: AuditRecord["operation"]
  readonly event_id: bigint | null
  readonly event_created_at: Date | null
  readonly tracking_id: string | null
  readonly old_status: string | null
  readonly new_status: string | null
  readonly changed_columns: ReadonlyArray<string> | null
  readonly db_user: string
  readonly application_name: string | null
  readonly txid: bigint | null
  readonly actor: string | null
  readonly reason: string | null
  readonly last_error: string | null
  readonly chain_pos: bigint | null
  readonly hash_hex: string | null
}

const toRecord = (r: LogRow): AuditRecord => ({
  auditId: BigInt(r.audit_id),
  recordedAt: r.recorded_at,
  operation: r.operation,
  eventId: r.event_id === null ? null : BigInt(r.event_id),
  eventCreatedAt: r.event_created_at,
  trackingId: r.tracking_id,
  oldStatus: r.old_status,
  newStatus: r.new_status,
  changedColumns: r.changed_columns,
  dbUser: r.db_user,
  applicationName: r.application_name,
  txid: r.txid === null ? null : BigInt(r.txid),
  actor: r.actor,
  reason: r.reason,
  lastError: r.last_error,
  chainPosition: r.chain_pos === null ? null : BigInt(r.chain_pos),
  hash: r.hash_hex
})

const PAGE = 5000

/** The first instant of the month `retention` before `now` (UTC): the oldest partition retention keeps. */
const retentionFloor = (retention: PartitionPolicy.Retention, now: Date): Date => {
  const cutoff = PartitionPolicy.retentionCutoff(
    PartitionPolicy.make({ table: OutboxTables.defaults.auditLog, column: "recorded_at", interval: "monthly", retention }),
    now
  )!
  return PartitionPolicy.floor("monthly", cutoff)
}

const positiveInt = (operation: string, name: string, value: number) =>
  Number.isInteger(value) && value > 0
    ? Effect.succeed(value)
    : Effect.fail(new AuditError({ reason: "InvalidArgument", operation, message: `${name} must be a positive integer, got ${value}` }))

/**
 * Builds the service over the audit objects of `tables` (`auditLog`,
 * `auditHead`, `auditCheckpoint`); the audit migrations must have run.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeWith = (tables: OutboxTables.OutboxTables) =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    const logTable = sql.literal(Identifier.quote(tables.auditLog))
    const headTable = sql.literal(Identifier.quote(tables.auditHead))
    const checkpointTable = sql.literal(Identifier.quote(tables.auditCheckpoint))

    const installed = (operation: string) =>
      sql<{ ok: boolean }>`SELECT to_regclass(${Identifier.quote(tables.auditHead)}) IS NOT NULL AS ok`.pipe(
        Effect.mapError(databaseError(operation)),
        Effect.flatMap(([row]) =>
          row?.ok === true ? Effect.void : Effect.fail(
            new AuditError({
              reason: "NotInstalled",
              operation,
              message: `${operation}: the audit trail is not installed (migrate with ENABLE_AUDIT=true)`
            })
          )
        )
      )

    const seal = Effect.fn("AuditTrail.seal")(function*(options: { readonly maxRows?: number | undefined } = {}) {
      const maxRows = yield* positiveInt("seal", "maxRows", options.maxRows ?? 10_000)
      const [row] = yield* sql<{ n: number }>`SELECT outbox_audit_seal(${maxRows}) AS n`.pipe(Effect.mapError(databaseError("seal")))
      return row?.n ?? 0
    })

    const sealAll = Effect.fn("AuditTrail.sealAll")(function*(options: { readonly maxRows?: number | undefined } = {}) {
      const maxRows = yield* positiveInt("seal", "maxRows", options.maxRows ?? 10_000)
      let total = 0
      while (true) {
        const n = yield* seal({ maxRows })
        total += n
        if (n < maxRows) return total
      }
    })

    const checkpoint = Effect.fn("AuditTrail.checkpoint")(function*(options: { readonly grace?: Duration.Input | undefined } = {}) {
      const grace = Duration.fromInputUnsafe(options.grace ?? "1 day")
      const now = new Date(yield* Clock.currentTimeMillis)
      const [row] = yield* sql<{ n: number }>`
        SELECT outbox_audit_checkpoint(${now}::timestamptz, ${Duration.toMillis(grace)} * interval '1 millisecond') AS n`.pipe(
        Effect.mapError(databaseError("checkpoint"))
      )
      return row?.n ?? 0
    })

    const headRaw = sql<{ position: bigint; hash: string }>`
      SELECT chain_pos AS position, encode(hash, 'hex') AS hash FROM ${headTable}`.pipe(
      Effect.map(([row]) => ({ position: BigInt(row!.position), hash: row!.hash }))
    )
    const head = headRaw.pipe(Effect.mapError(databaseError("head")))

    interface Checkpoint {
      readonly boundary: Date
      readonly first_pos: bigint
      readonly positions: ReadonlyArray<string>
      readonly hashes: ReadonlyArray<string>
    }
    const checkpointWhere = (at: Date) =>
      sql<Checkpoint>`
        SELECT boundary, first_pos, positions::text[] AS positions,
               ARRAY(SELECT encode(h, 'hex') FROM unnest(hashes) h) AS hashes
        FROM ${checkpointTable} WHERE boundary <= ${at} ORDER BY boundary DESC LIMIT 1`.pipe(
        Effect.map((rows) => rows[0])
      )

    const verify = Effect.fn("AuditTrail.verify")(function*(
      options: { readonly retention?: PartitionPolicy.Retention | undefined } = {}
    ) {
      yield* installed("verify")
      const retention = options.retention ?? policy().retention!
      const now = new Date(yield* Clock.currentTimeMillis)
      return yield* Effect.gen(function*() {
        const top = yield* headRaw
        const [counts] = yield* sql<{ unsealed: number; oldest_unsealed: number | null; genesis: boolean; min_at: Date | null }>`
          SELECT u.unsealed, u.oldest_unsealed,
                 EXISTS (SELECT 1 FROM ${logTable} WHERE chain_pos = 1) AS genesis,
                 (SELECT min(recorded_at) FROM ${logTable} WHERE hash IS NOT NULL) AS min_at
          FROM (SELECT count(*)::int AS unsealed, extract(epoch FROM now() - min(recorded_at))::float8 AS oldest_unsealed
                FROM ${logTable} WHERE hash IS NULL) u`
        const unsealed = counts!.unsealed
        const oldestUnsealedSeconds = counts!.oldest_unsealed === null ? undefined : Math.max(0, counts!.oldest_unsealed)
        const known = new Map<bigint, string>()
        let start: Verification["start"] = { from: "genesis" }
        let expected = 1n
        let prev = ZERO
        let checked = 0
        let firstPosition = 1n
        const result = (broken: ChainBreak | undefined): Verification => ({
          ok: broken === undefined,
          start,
          firstPosition,
          head: top,
          checked,
          unsealed,
          oldestUnsealedSeconds,
          broken
        })

        if (!counts!.genesis && top.position > 0n) {
          const floor = retentionFloor(retention, now)
          const atFloor = yield* checkpointWhere(floor)
          if (atFloor === undefined) {
            return result({
              kind: "missing",
              position: 1n,
              auditId: undefined,
              expectedHash: undefined,
              foundHash: undefined,
              message: `position 1 (the genesis row) is gone, and no retention checkpoint at or before ${floor.toISOString()} allows it`
            })
          }
          const cp = (yield* checkpointWhere(counts!.min_at ?? now)) ?? atFloor
          if (BigInt(cp.first_pos) > BigInt(atFloor.first_pos)) {
            return result({
              kind: "missing",
              position: BigInt(atFloor.first_pos),
              auditId: undefined,
              expectedHash: undefined,
              foundHash: undefined,
              message: `rows recorded from ${atFloor.boundary.toISOString()} (positions ${atFloor.first_pos} to ${
                BigInt(cp.first_pos) - 1n
              }) are gone, but retention keeps everything from ${floor.toISOString()}`
            })
          }
          start = { from: "checkpoint", boundary: cp.boundary }
          cp.positions.forEach((p, i) => known.set(BigInt(p), cp.hashes[i]!))
          expected = BigInt(cp.first_pos)
          prev = expected === 1n ? ZERO : known.get(expected - 1n) ?? ZERO
        }
        firstPosition = expected

        const missing = (position: bigint, found: string | undefined, detail: string): ChainBreak => ({
          kind: "missing",
          position,
          auditId: undefined,
          expectedHash: undefined,
          foundHash: found,
          message: `position ${position} is missing: ${detail}`
        })
        /** Skips positions whose rows retention dropped (their hashes are in the checkpoint). */
        const skipKnown = (upTo: bigint) => {
          while (expected < upTo && known.has(expected)) {
            prev = known.get(expected)!
            expected++
          }
        }

        let lastPos = firstPosition - 1n
        let lastId = -1n
        let previousId: bigint | undefined
        while (true) {
          const page = yield* sql<{ chain_pos: bigint; audit_id: bigint; prev_hash: string; hash: string; computed: string }>`
            SELECT chain_pos, audit_id, encode(prev_hash, 'hex') AS prev_hash, encode(hash, 'hex') AS hash,
                   encode(sha256(prev_hash || sha256(convert_to(${sql.literal(canonicalExpression("l"))}, 'UTF8'))), 'hex') AS computed
            FROM ${logTable} l
            WHERE chain_pos >= ${lastPos} AND (chain_pos, audit_id) > (${lastPos}, ${lastId})
            ORDER BY chain_pos, audit_id
            LIMIT ${PAGE}`
          for (const r of page) {
            const pos = BigInt(r.chain_pos)
            const id = BigInt(r.audit_id)
            if (pos < firstPosition) continue
            skipKnown(pos)
            if (pos > expected) {
              return result(missing(expected, r.prev_hash, `the next row found is at position ${pos} (audit id ${id})`))
            }
            if (pos < expected) {
              return result({
                  kind: "reordered",
                  position: pos,
                  auditId: id,
                  expectedHash: undefined,
                  foundHash: r.hash,
                  message: `audit id ${id} claims position ${pos}, which another row already holds`
                })
            }
            if (r.computed !== r.hash) {
              return result({
                  kind: "altered",
                  position: pos,
                  auditId: id,
                  expectedHash: r.computed,
                  foundHash: r.hash,
                  message: `audit id ${id} at position ${pos} does not match its hash: its content or hash was changed`
                })
            }
            if (r.prev_hash !== prev) {
              const [elsewhere] = yield* sql<{ chain_pos: bigint; audit_id: bigint }>`
                SELECT chain_pos, audit_id FROM ${logTable} WHERE hash = decode(${r.prev_hash}, 'hex') LIMIT 1`
              const broken: ChainBreak = elsewhere !== undefined
                ? {
                  kind: "reordered",
                  position: pos,
                  auditId: id,
                  expectedHash: prev,
                  foundHash: r.prev_hash,
                  message: `audit id ${id} at position ${pos} is chained to the row at position ${elsewhere.chain_pos} (audit id ${elsewhere.audit_id}), not to position ${
                    pos - 1n
                  }`
                }
                : {
                  kind: "altered",
                  position: pos - 1n,
                  auditId: previousId,
                  expectedHash: r.prev_hash,
                  foundHash: prev,
                  message: `the row at position ${pos - 1n} is not the one position ${pos} was chained to: it was rewritten`
                }
              return result(broken)
            }
            prev = r.hash
            previousId = id
            expected++
            checked++
          }
          if (page.length < PAGE) break
          const last = page[page.length - 1]!
          lastPos = BigInt(last.chain_pos)
          lastId = BigInt(last.audit_id)
        }
        skipKnown(top.position + 1n)
        if (expected <= top.position) {
          return result(missing(expected, undefined, `the head is at position ${top.position} but the chain ends at ${expected - 1n}`))
        }
        if (top.position > 0n && prev !== top.hash) {
          return result({
            kind: "altered",
            position: top.position,
            auditId: previousId,
            expectedHash: top.hash,
            foundHash: prev,
            message: `the last sealed row (position ${top.position}) does not hash to the recorded head`
          })
        }
        return result(undefined)
      }).pipe(Effect.mapError(databaseError("verify")))
    })

    const columns = sql`audit_id, recorded_at, operation, event_id, event_created_at, tracking_id::text AS tracking_id,
      old_status, new_status, changed_columns, db_user, application_name, txid, actor, reason, last_error,
      chain_pos, encode(hash, 'hex') AS hash_hex`

    const history = Effect.fn("AuditTrail.history")(function*(key: { readonly eventId: bigint } | { readonly trackingId: string }) {
      if ("trackingId" in key && !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(key.trackingId)) {
        return yield* new AuditError({ reason: "InvalidArgument", operation: "history", message: `not a tracking id (UUID): ${JSON.stringify(key.trackingId)}` })
      }
      const rows = yield* ("eventId" in key
        ? sql<LogRow>`SELECT ${columns} FROM outbox_audit_history(p_event_id => ${key.eventId})`
        : sql<LogRow>`SELECT ${columns} FROM outbox_audit_history(p_tracking_id => ${key.trackingId}::uuid)`).pipe(
          Effect.mapError(databaseError("history"))
        )
      return rows.map(toRecord)
    })

    const deadLetterActivity = Effect.fn("AuditTrail.deadLetterActivity")(function*(
      options: { readonly since?: Date | undefined; readonly limit?: number | undefined } = {}
    ) {
      const limit = yield* positiveInt("deadLetterActivity", "limit", options.limit ?? 1000)
      const rows = yield* sql<{
        audit_id: bigint
        recorded_at: Date
        activity: DeadLetterActivity["activity"]
        event_id: bigint | null
        tracking_id: string | null
        old_status: string | null
        new_status: string | null
        error: string | null
        actor: string | null
        reason: string | null
        db_user: string
      }>`
        SELECT audit_id, recorded_at, activity, event_id, tracking_id::text AS tracking_id, old_status, new_status,
               error, actor, reason, db_user
        FROM v_outbox_dead_letter_activity
        WHERE recorded_at >= ${options.since ?? new Date(0)}
        ORDER BY audit_id
        LIMIT ${limit}`.pipe(Effect.mapError(databaseError("deadLetterActivity")))
      return rows.map((r): DeadLetterActivity => ({
        auditId: BigInt(r.audit_id),
        recordedAt: r.recorded_at,
        activity: r.activity,
        eventId: r.event_id === null ? null : BigInt(r.event_id),
        trackingId: r.tracking_id,
        oldStatus: r.old_status,
        newStatus: r.new_status,
        error: r.error,
        actor: r.actor,
        reason: r.reason,
        dbUser: r.db_user
      }))
    })

    const soxSummary = Effect.fn("AuditTrail.soxSummary")(function*(options: { readonly since?: Date | undefined } = {}) {
      const rows = yield* sql<{
        day: string
        operation: string
        db_user: string
        changes: number
        events: number
        status_changes: number
        with_actor: number
        unsealed: number
      }>`
        SELECT day::text AS day, operation, db_user, changes::int AS changes, events::int AS events,
               status_changes::int AS status_changes, with_actor::int AS with_actor, unsealed::int AS unsealed
        FROM v_outbox_sox_audit
        WHERE day >= (${options.since ?? new Date(0)}::timestamptz AT TIME ZONE 'UTC')::date
        ORDER BY day, operation, db_user`.pipe(Effect.mapError(databaseError("soxSummary")))
      return rows.map((r): SoxSummary => ({
        day: r.day,
        operation: r.operation,
        dbUser: r.db_user,
        changes: r.changes,
        events: r.events,
        statusChanges: r.status_changes,
        withActor: r.with_actor,
        unsealed: r.unsealed
      }))
    })

    return AuditTrail.of({ seal, sealAll, checkpoint, verify, history, deadLetterActivity, soxSummary, head })
  })

/**
 * Builds the service (the audit migrations must have run): `makeWith` of
 * `OutboxTables.defaults`.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = makeWith(OutboxTables.defaults)

/**
 * The service as a layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<AuditTrail, never, SqlClient.SqlClient> = Layer.effect(AuditTrail, make)
