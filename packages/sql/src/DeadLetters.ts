/**
 * Dead letters: inspect them, count them, and redrive them under
 * governance.
 *
 * Events the relay gave up on sit in the outbox with status `DEAD_LETTER`
 * (a partial index, `outbox_dead_letter_idx`, keeps them isolated and cheap
 * to find). This module lists them with filters, counts them by event type,
 * shows one in full, and **redrives** them: back to `PENDING` with
 * `retry_count = 0`, no backoff, no lease and no `last_error`.
 *
 * **Governance**: a redrive needs an operator name (`by`) and a root-cause
 * note (`reason`); without either it fails with {@link BlindRedrive} and
 * changes nothing. Every batch of a redrive is recorded in
 * `outbox_redrive_log` (append-only: operator, reason, the filter as JSON,
 * the event ids, and each event's previous `last_error` and `retry_count`)
 * in the same transaction as the update, and the transaction carries
 * `outbox.actor` / `outbox.reason` (`set_config(..., true)`), which the audit
 * trail's triggers copy into their rows when it is enabled.
 *
 * **Fencing**: the update only touches rows that are still `DEAD_LETTER`
 * (locked `FOR UPDATE` first): an event redriven or changed by someone else
 * in between is reported in `skipped`, never updated twice.
 *
 * **Large sets**: the matching ids are read first (no lock), then redriven in
 * batches of `batchSize` (default 500), one short transaction per batch, so
 * a redrive of a million dead letters never holds a million row locks.
 *
 * **Gotchas**: the plan (ids and partition keys of every match) is held in
 * memory, about 50 bytes per event; use `limit` for slices. Inside a caller's
 * transaction the batches become savepoints of that one transaction, so call
 * `redrive` outside any transaction. During an online migration in
 * dual-write mode the legacy row is not mirrored.
 *
 * **Example**
 * ```ts
 * const dlq = yield* DeadLetters.DeadLetters
 * const report = yield* dlq.redrive({
 *   by: "alice",
 *   reason: "INC-123: webhook endpoint certificate renewed",
 *   filter: { eventTypes: ["OrderPaid"], errorContains: "certificate" }
 * })
 * ```
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as SqlClient from "effect/sql/SqlClient"
import type { Fragment } from "effect/sql/Statement"
import { randomUUID } from "node:crypto"
import * as Identifier from "./Identifier.ts"
import * as OutboxTables from "./OutboxTables.ts"
import * as SqlEnv from "./SqlEnv.ts"
import { fromSql } from "./internal/sqlError.ts"

// ---------------------------------------------------------------------------
// errors

/**
 * A redrive without an operator name (`by`) or a root-cause note (`reason`)
 * (missing, or only whitespace). Nothing was changed.
 *
 * @category errors
 * @since 0.1.0
 */
export class BlindRedrive extends Schema.TaggedError<BlindRedrive>("@outbox/sql/BlindRedrive")("BlindRedrive", {
  /** What was missing. */
  missing: Schema.Array(Schema.Literals(["by", "reason"]))
}) {
  override get message(): string {
    const what = this.missing.map((m) => (m === "by" ? "an operator name (by)" : "a root-cause note (reason)"))
    return `blind redrive refused: ${what.join(" and ")} ${
      what.length > 1 ? "are" : "is"
    } required; nothing was redriven`
  }
}

/**
 * `show` found no outbox event with this id (or tracking id).
 *
 * @category errors
 * @since 0.1.0
 */
export class DeadLetterNotFound
  extends Schema.TaggedError<DeadLetterNotFound>("@outbox/sql/DeadLetterNotFound")("DeadLetterNotFound", {
    id: Schema.String
  })
{
  override get message(): string {
    return `no outbox event ${this.id}`
  }
}

/**
 * A dead-letter operation failed: an invalid filter or option (nothing was
 * done), or the database. A redrive that fails after some batches were
 * committed says so in `message` and carries its `redriveId`.
 *
 * @category errors
 * @since 0.1.0
 */
export class DeadLetterError extends Schema.TaggedError<DeadLetterError>("@outbox/sql/DeadLetterError")("DeadLetterError", {
  reason: Schema.Literals(["InvalidFilter", "InvalidOption", "Unfiltered", "Database"]),
  message: Schema.String,
  /** For a redrive that failed part-way: the id of its log rows. */
  redriveId: Schema.optional(Schema.String),
  cause: Schema.optional(Schema.Unknown)
}) {}

// ---------------------------------------------------------------------------
// models

/**
 * Which dead letters. All criteria are combined with AND; an empty filter
 * matches every dead letter.
 *
 * @category models
 * @since 0.1.0
 */
export interface Filter {
  /** Only these event ids. */
  readonly ids?: ReadonlyArray<bigint> | undefined
  /** Only these event types. */
  readonly eventTypes?: ReadonlyArray<string> | undefined
  /** Only these aggregate types. */
  readonly aggregateTypes?: ReadonlyArray<string> | undefined
  /** Only this aggregate id. */
  readonly aggregateId?: string | undefined
  /** `last_error` contains this text (case-insensitive). */
  readonly errorContains?: string | undefined
  /** Dead-lettered at or after (`processed_at`). */
  readonly since?: Date | undefined
  /** Dead-lettered before (`processed_at`). */
  readonly until?: Date | undefined
}

/**
 * One dead letter in a list (no payload).
 *
 * @category models
 * @since 0.1.0
 */
export interface DeadLetterSummary {
  readonly id: bigint
  readonly trackingId: string
  readonly aggregateType: string
  readonly aggregateId: string
  readonly eventType: string
  readonly retryCount: number
  readonly maxRetries: number
  readonly createdAt: Date
  /** When it was dead-lettered (`processed_at`). */
  readonly deadLetteredAt: Date | null
  readonly lastError: string | null
}

/**
 * One redrive that touched an event, from `outbox_redrive_log`.
 *
 * @category models
 * @since 0.1.0
 */
export interface RedriveEntry {
  /** The log row. */
  readonly logId: bigint
  /** Shared by the batches of one redrive. */
  readonly redriveId: string
  readonly batch: number
  readonly at: Date
  readonly operator: string
  readonly reason: string
  /** The filter of the redrive, as recorded. */
  readonly filter: unknown
  readonly eventIds: ReadonlyArray<bigint>
  readonly eventCount: number
  /** The database role that ran it. */
  readonly dbUser: string
  /** Each event's `last_error`, `retry_count` and dead-letter time before the redrive. */
  readonly previous: ReadonlyArray<{
    readonly id: string
    readonly event_type: string
    readonly retry_count: number
    readonly last_error: string | null
    readonly dead_lettered_at: string | null
  }>
}

/**
 * An outbox event in full, with the redrives that touched it. `status` is
 * `DEAD_LETTER` unless it was redriven (or never was a dead letter).
 *
 * @category models
 * @since 0.1.0
 */
export interface DeadLetterDetail extends DeadLetterSummary {
  readonly status: string
  readonly payload: unknown
  readonly metadata: unknown
  readonly availableAt: Date | null
  readonly lockedUntil: Date | null
  readonly redrives: ReadonlyArray<RedriveEntry>
}

/**
 * Dead letters counted by event type.
 *
 * @category models
 * @since 0.1.0
 */
export interface Counts {
  readonly total: number
  /** Largest first. */
  readonly byEventType: ReadonlyArray<{ readonly eventType: string; readonly count: number }>
}

/**
 * A redrive request. `by` and `reason` are required (see
 * {@link BlindRedrive}); the filter must be non-empty unless `all` is set.
 *
 * @category models
 * @since 0.1.0
 */
export interface RedriveRequest {
  /** Who redrives (an operator name, recorded). */
  readonly by: string | undefined
  /** Why: the root cause that was fixed (recorded). */
  readonly reason: string | undefined
  readonly filter?: Filter | undefined
  /** Redrive every dead letter when the filter is empty (refused otherwise). */
  readonly all?: boolean | undefined
  /** At most this many events (lowest ids first). */
  readonly limit?: number | undefined
  /** Events per transaction (default 500, at most 10 000). */
  readonly batchSize?: number | undefined
  /** Report what would be redriven, change nothing. */
  readonly dryRun?: boolean | undefined
  /** Called after each committed batch (for progress output). */
  readonly onBatch?:
    | ((progress: { readonly batches: number; readonly redriven: number; readonly matched: number }) => Effect.Effect<void>)
    | undefined
}

/**
 * What a dry run would redrive.
 *
 * @category models
 * @since 0.1.0
 */
export interface RedrivePlan {
  readonly _tag: "DryRun"
  readonly matched: number
  /** Exactly the events a redrive would return to PENDING now, by id. */
  readonly events: ReadonlyArray<DeadLetterSummary>
  /** Requested `ids` that are not dead letters (missing, or another status). */
  readonly notDeadLetters: ReadonlyArray<bigint>
  /** Transactions the redrive would take. */
  readonly batches: number
}

/**
 * What a redrive did.
 *
 * @category models
 * @since 0.1.0
 */
export interface RedriveReport {
  readonly _tag: "Redriven"
  /** Shared by the redrive's log rows. */
  readonly redriveId: string
  /** Dead letters that matched when the redrive started. */
  readonly matched: number
  /** Returned to PENDING. */
  readonly redriven: number
  /** Matched, but no longer dead letters when their batch ran: not touched. */
  readonly skipped: ReadonlyArray<bigint>
  /** Requested `ids` that were not dead letters (missing, or another status). */
  readonly notDeadLetters: ReadonlyArray<bigint>
  /** Transactions committed. */
  readonly batches: number
  /** `outbox_redrive_log` rows written (one per batch that changed something). */
  readonly logIds: ReadonlyArray<bigint>
}

/**
 * @category models
 * @since 0.1.0
 */
export type RedriveResult = RedrivePlan | RedriveReport

/**
 * Options of `list`.
 *
 * @category models
 * @since 0.1.0
 */
export interface ListOptions {
  /** At most this many (default 100, at most 10 000). */
  readonly limit?: number | undefined
  /** Only ids greater than this (keyset paging). */
  readonly afterId?: bigint | undefined
}

/**
 * Options of `make` / `layer`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /** The outbox table (default `outbox`); ignored when `tables` is given. */
  readonly table?: string | undefined
  /**
   * The names of the outbox objects (`OutboxTables`): the outbox table and
   * the redrive log (`outbox_redrive_log`). Default: those of `table`.
   */
  readonly tables?: OutboxTables.OutboxTables | undefined
}

/**
 * The dead-letter service.
 *
 * @category services
 * @since 0.1.0
 */
export class DeadLetters extends Context.Service<DeadLetters, {
  /** Dead letters matching `filter`, by id. */
  readonly list: (
    filter?: Filter,
    options?: ListOptions
  ) => Effect.Effect<ReadonlyArray<DeadLetterSummary>, DeadLetterError>
  /** Dead letters matching `filter`, counted by event type. */
  readonly count: (filter?: Filter) => Effect.Effect<Counts, DeadLetterError>
  /** One event in full (by id, or tracking id when a UUID string), with its redrives. */
  readonly show: (id: bigint | string) => Effect.Effect<DeadLetterDetail, DeadLetterNotFound | DeadLetterError>
  /** Redrives (or, with `dryRun`, plans a redrive of) the matching dead letters. */
  readonly redrive: (request: RedriveRequest) => Effect.Effect<RedriveResult, BlindRedrive | DeadLetterError>
  /** The redrive log, newest first. */
  readonly history: (options?: {
    readonly limit?: number | undefined
    readonly eventId?: bigint | undefined
  }) => Effect.Effect<ReadonlyArray<RedriveEntry>, DeadLetterError>
}>()("@outbox/sql/DeadLetters") {}

// ---------------------------------------------------------------------------
// implementation

interface SummaryRow {
  readonly id: bigint
  readonly tracking_id: string
  readonly aggregate_type: string
  readonly aggregate_id: string
  readonly event_type: string
  readonly retry_count: number
  readonly max_retries: number
  readonly created_at: Date
  readonly processed_at: Date | null
  readonly last_error: string | null
}

interface DetailRow extends SummaryRow {
  readonly status: string
  readonly payload: unknown
  readonly metadata: unknown
  readonly available_at: Date | null
  readonly locked_until: Date | null
}

interface LogRow {
  readonly id: bigint
  readonly redrive_id: string
  readonly batch: number
  readonly at: Date
  readonly operator: string
  readonly reason: string
  readonly filter: unknown
  readonly event_ids: ReadonlyArray<bigint | string>
  readonly event_count: number
  readonly db_user: string
  readonly previous: RedriveEntry["previous"]
}

const toSummary = (r: SummaryRow): DeadLetterSummary => ({
  id: r.id,
  trackingId: r.tracking_id,
  aggregateType: r.aggregate_type,
  aggregateId: r.aggregate_id,
  eventType: r.event_type,
  retryCount: r.retry_count,
  maxRetries: r.max_retries,
  createdAt: r.created_at,
  deadLetteredAt: r.processed_at,
  lastError: r.last_error
})

const toEntry = (r: LogRow): RedriveEntry => ({
  logId: r.id,
  redriveId: r.redrive_id,
  batch: r.batch,
  at: r.at,
  operator: r.operator,
  reason: r.reason,
  filter: r.filter,
  eventIds: r.event_ids.map((id) => BigInt(id)),
  eventCount: r.event_count,
  dbUser: r.db_user,
  previous: r.previous
})

const byId = (a: bigint, b: bigint) => (a < b ? -1 : a > b ? 1 : 0)

const bigintArray = (ids: ReadonlyArray<bigint>): string => `{${ids.join(",")}}`

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

const invalid = (reason: "InvalidFilter" | "InvalidOption" | "Unfiltered", message: string) =>
  new DeadLetterError({ reason, message })

const database = fromSql(({ cause, message }) => new DeadLetterError({ reason: "Database", message, cause }))

const validDate = (d: Date | undefined) => d === undefined || !Number.isNaN(d.getTime())

/** Checks a filter; returns it with duplicate ids removed. */
const checkFilter = (filter: Filter): Effect.Effect<Filter, DeadLetterError> => {
  if (filter.ids !== undefined && filter.ids.some((id) => id < 0n)) {
    return Effect.fail(invalid("InvalidFilter", "ids must be non-negative"))
  }
  for (const [name, list] of [["eventTypes", filter.eventTypes], ["aggregateTypes", filter.aggregateTypes]] as const) {
    if (list !== undefined && list.some((v) => v.trim() === "")) {
      return Effect.fail(invalid("InvalidFilter", `${name} must not contain an empty name`))
    }
  }
  if (!validDate(filter.since) || !validDate(filter.until)) {
    return Effect.fail(invalid("InvalidFilter", "since/until must be valid dates"))
  }
  if (filter.since !== undefined && filter.until !== undefined && filter.since.getTime() >= filter.until.getTime()) {
    return Effect.fail(invalid("InvalidFilter", "since must be before until"))
  }
  return Effect.succeed(filter.ids === undefined ? filter : { ...filter, ids: Array.from(new Set(filter.ids)).sort(byId) })
}

const isEmpty = (f: Filter) =>
  f.ids === undefined && f.eventTypes === undefined && f.aggregateTypes === undefined && f.aggregateId === undefined &&
  f.errorContains === undefined && f.since === undefined && f.until === undefined

/** The filter as recorded in the log (JSON: ids as strings, dates as ISO). */
const filterJson = (f: Filter, request: RedriveRequest) =>
  JSON.stringify({
    ...(f.ids !== undefined ? { ids: f.ids.map(String) } : {}),
    ...(f.eventTypes !== undefined ? { eventTypes: f.eventTypes } : {}),
    ...(f.aggregateTypes !== undefined ? { aggregateTypes: f.aggregateTypes } : {}),
    ...(f.aggregateId !== undefined ? { aggregateId: f.aggregateId } : {}),
    ...(f.errorContains !== undefined ? { errorContains: f.errorContains } : {}),
    ...(f.since !== undefined ? { since: f.since.toISOString() } : {}),
    ...(f.until !== undefined ? { until: f.until.toISOString() } : {}),
    ...(request.all === true ? { all: true } : {}),
    ...(request.limit !== undefined ? { limit: request.limit } : {})
  })

const positiveInt = (value: number | undefined, name: string, fallback: number, max: number) => {
  if (value === undefined) return Effect.succeed(fallback)
  if (!Number.isInteger(value) || value < 1 || value > max) {
    return Effect.fail(invalid("InvalidOption", `${name} must be an integer from 1 to ${max} (got ${value})`))
  }
  return Effect.succeed(value)
}

/**
 * Builds the service.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const tables = options.tables ?? (yield* OutboxTables.make(options.table ?? "outbox").pipe(
    Effect.mapError((e) => new DeadLetterError({ reason: "InvalidOption", message: e.message, cause: e }))
  ))
  const T = sql.literal(Identifier.quote(tables.outbox))
  const redriveLog = sql.literal(Identifier.quote(tables.redriveLog))

  /** The WHERE clause of a filter (status DEAD_LETTER included). */
  const where = (f: Filter): Fragment => {
    const clauses: Array<Fragment> = [sql`status = 'DEAD_LETTER'`]
    if (f.ids !== undefined) clauses.push(sql`id = ANY(${bigintArray(f.ids)}::bigint[])`)
    if (f.eventTypes !== undefined) {
      clauses.push(f.eventTypes.length === 0 ? sql`false` : sql`event_type IN ${sql.in(f.eventTypes)}`)
    }
    if (f.aggregateTypes !== undefined) {
      clauses.push(f.aggregateTypes.length === 0 ? sql`false` : sql`aggregate_type IN ${sql.in(f.aggregateTypes)}`)
    }
    if (f.aggregateId !== undefined) clauses.push(sql`aggregate_id = ${f.aggregateId}`)
    if (f.errorContains !== undefined) {
      clauses.push(sql`strpos(lower(coalesce(last_error, '')), lower(${f.errorContains})) > 0`)
    }
    if (f.since !== undefined) clauses.push(sql`processed_at >= ${f.since}`)
    if (f.until !== undefined) clauses.push(sql`processed_at < ${f.until}`)
    return sql.and(clauses)
  }

  const summaryColumns = sql.literal(
    "id, tracking_id, aggregate_type, aggregate_id, event_type, retry_count, max_retries, created_at, processed_at, last_error"
  )

  const list = Effect.fn("DeadLetters.list")(function*(filter: Filter = {}, options: ListOptions = {}) {
    const checked = yield* checkFilter(filter)
    const limit = yield* positiveInt(options.limit, "limit", 100, 10_000)
    const after = options.afterId === undefined ? sql`true` : sql`id > ${options.afterId}`
    const rows = yield* sql<SummaryRow>`
      SELECT ${summaryColumns} FROM ${T}
      WHERE ${where(checked)} AND ${after}
      ORDER BY id
      LIMIT ${sql.literal(String(limit))}`.pipe(Effect.mapError(database("list")))
    return rows.map(toSummary)
  })

  const count = Effect.fn("DeadLetters.count")(function*(filter: Filter = {}) {
    const checked = yield* checkFilter(filter)
    const rows = yield* sql<{ event_type: string; n: number }>`
      SELECT event_type, count(*)::int AS n FROM ${T}
      WHERE ${where(checked)}
      GROUP BY event_type
      ORDER BY n DESC, event_type`.pipe(Effect.mapError(database("count")))
    return {
      total: rows.reduce((sum, r) => sum + r.n, 0),
      byEventType: rows.map((r) => ({ eventType: r.event_type, count: r.n }))
    } satisfies Counts
  })

  const historyOf = (eventId: bigint | undefined, limit: number) =>
    sql<LogRow>`
      SELECT id, redrive_id::text AS redrive_id, batch, at, operator, reason, filter, event_ids, event_count, db_user, previous
      FROM ${redriveLog}
      WHERE ${eventId === undefined ? sql`true` : sql`event_ids @> ARRAY[${eventId}]::bigint[]`}
      ORDER BY id DESC
      LIMIT ${sql.literal(String(limit))}`.pipe(
      Effect.map((rows) => rows.map(toEntry)),
      Effect.mapError(database("history"))
    )

  const history = Effect.fn("DeadLetters.history")(function*(
    options: { readonly limit?: number | undefined; readonly eventId?: bigint | undefined } = {}
  ) {
    const limit = yield* positiveInt(options.limit, "limit", 100, 10_000)
    return yield* historyOf(options.eventId, limit)
  })

  const show = Effect.fn("DeadLetters.show")(function*(id: bigint | string) {
    const key = typeof id === "bigint" ? id : /^\d+$/.test(id) ? BigInt(id) : id
    if (typeof key === "string" && !UUID.test(key)) {
      return yield* invalid("InvalidFilter", `not an event id or a tracking id (UUID): ${JSON.stringify(key)}`)
    }
    const rows = yield* sql<DetailRow>`
      SELECT ${summaryColumns}, status, payload, metadata, available_at, locked_until FROM ${T}
      WHERE ${typeof key === "bigint" ? sql`id = ${key}` : sql`tracking_id = ${key}::uuid`}`.pipe(
      Effect.mapError(database("show"))
    )
    const r = rows[0]
    if (r === undefined) return yield* new DeadLetterNotFound({ id: String(key) })
    const redrives = yield* historyOf(r.id, 1000)
    return {
      ...toSummary(r),
      status: r.status,
      payload: r.payload,
      metadata: r.metadata,
      availableAt: r.available_at,
      lockedUntil: r.locked_until,
      redrives
    } satisfies DeadLetterDetail
  })

  /** Requested ids that are not among the matches. */
  const notDeadLettersOf = (f: Filter, matched: ReadonlyArray<bigint>): ReadonlyArray<bigint> => {
    if (f.ids === undefined) return []
    const found = new Set(matched)
    return f.ids.filter((id) => !found.has(id))
  }

  /** Redrives one batch in its own transaction; the ids updated and the log row. */
  const redriveBatch = (options: {
    readonly redriveId: string
    readonly batch: number
    readonly by: string
    readonly reason: string
    readonly filter: string
    readonly rows: ReadonlyArray<{ readonly id: bigint; readonly created_at: Date }>
  }) => {
    const ids = options.rows.map((r) => r.id)
    let min = Infinity
    let max = -Infinity
    for (const r of options.rows) {
      const t = r.created_at.getTime()
      if (t < min) min = t
      if (t > max) max = t
    }
    // JavaScript dates keep milliseconds, PostgreSQL microseconds: widen by 1 ms each side
    const from = new Date(min - 1)
    const to = new Date(max + 1)
    return sql.withTransaction(Effect.gen(function*() {
      // read by the audit trail's triggers (when enabled) for this transaction only
      yield* sql`SELECT set_config('outbox.actor', ${options.by}, true), set_config('outbox.reason', ${options.reason}, true)`
      const [result] = yield* sql<{ ids: ReadonlyArray<bigint | string> | null; log_id: bigint | null }>`
        WITH target AS (
          SELECT id, created_at, event_type, retry_count, last_error, processed_at FROM ${T}
          WHERE id = ANY(${bigintArray(ids)}::bigint[]) AND created_at >= ${from} AND created_at < ${to}
            AND status = 'DEAD_LETTER'
          ORDER BY id
          FOR UPDATE
        ), updated AS (
          UPDATE ${T} o
          SET status = 'PENDING', retry_count = 0, last_error = NULL, available_at = NULL, processed_at = NULL,
              locked_until = NULL, lock_token = NULL
          FROM target t
          WHERE o.id = t.id AND o.created_at = t.created_at AND o.status = 'DEAD_LETTER'
          RETURNING o.id, t.event_type, t.retry_count, t.last_error, t.processed_at
        ), logged AS (
          INSERT INTO ${redriveLog} (redrive_id, batch, operator, reason, filter, event_ids, event_count, previous)
          SELECT ${options.redriveId}::uuid, ${options.batch}, ${options.by}, ${options.reason}, ${options.filter}::jsonb,
                 array_agg(id ORDER BY id), count(*),
                 jsonb_agg(jsonb_build_object(
                   'id', id::text, 'event_type', event_type, 'retry_count', retry_count, 'last_error', last_error,
                   'dead_lettered_at', processed_at) ORDER BY id)
          FROM updated
          HAVING count(*) > 0
          RETURNING id
        )
        SELECT (SELECT array_agg(id ORDER BY id) FROM updated) AS ids, (SELECT id FROM logged) AS log_id`
      return {
        ids: (result?.ids ?? []).map((id) => BigInt(id)),
        logId: result?.log_id ?? null
      }
    }))
  }

  const redrive = Effect.fn("DeadLetters.redrive")(function*(request: RedriveRequest) {
    const by = request.by?.trim() ?? ""
    const reason = request.reason?.trim() ?? ""
    const missing = [...(by === "" ? ["by" as const] : []), ...(reason === "" ? ["reason" as const] : [])]
    if (missing.length > 0) return yield* new BlindRedrive({ missing })

    const filter = yield* checkFilter(request.filter ?? {})
    if (isEmpty(filter) && request.all !== true) {
      return yield* invalid(
        "Unfiltered",
        "a redrive needs a filter (ids, event types, aggregate, error text, time range) or all: true"
      )
    }
    const batchSize = yield* positiveInt(request.batchSize, "batchSize", 500, 10_000)
    const limit = request.limit === undefined
      ? undefined
      : yield* positiveInt(request.limit, "limit", 0, Number.MAX_SAFE_INTEGER)
    const limitClause = limit === undefined ? sql`` : sql`LIMIT ${sql.literal(String(limit))}`

    if (request.dryRun === true) {
      const rows = yield* sql<SummaryRow>`
        SELECT ${summaryColumns} FROM ${T} WHERE ${where(filter)} ORDER BY id ${limitClause}`.pipe(
        Effect.mapError(database("redrive (dry run)"))
      )
      const events = rows.map(toSummary)
      return {
        _tag: "DryRun",
        matched: events.length,
        events,
        notDeadLetters: notDeadLettersOf(filter, events.map((e) => e.id)),
        batches: Math.ceil(events.length / batchSize)
      } satisfies RedrivePlan
    }

    // the plan: ids (and partition keys) only, no locks; each batch re-checks under lock
    const planned = yield* sql<{ id: bigint; created_at: Date }>`
      SELECT id, created_at FROM ${T} WHERE ${where(filter)} ORDER BY id ${limitClause}`.pipe(
      Effect.mapError(database("redrive"))
    )
    const redriveId = yield* Effect.sync(() => randomUUID())
    const recorded = filterJson(filter, request)
    const skipped: Array<bigint> = []
    const logIds: Array<bigint> = []
    let redriven = 0
    let batches = 0
    for (let start = 0; start < planned.length; start += batchSize) {
      const rows = planned.slice(start, start + batchSize)
      const result = yield* redriveBatch({ redriveId, batch: batches + 1, by, reason, filter: recorded, rows }).pipe(
        Effect.mapError((error) =>
          new DeadLetterError({
            reason: "Database",
            message: `redrive ${redriveId} failed in batch ${batches + 1} (${redriven} event(s) already redriven in ${batches} committed batch(es)): ${error.reason._tag}${
              error.reason.message ? `: ${error.reason.message}` : ""
            }`,
            redriveId,
            cause: error
          })
        )
      )
      batches++
      redriven += result.ids.length
      if (result.logId !== null) logIds.push(result.logId)
      if (request.onBatch) yield* request.onBatch({ batches, redriven, matched: planned.length })
      if (result.ids.length < rows.length) {
        const done = new Set(result.ids)
        for (const r of rows) if (!done.has(r.id)) skipped.push(r.id)
      }
    }
    yield* Effect.annotateCurrentSpan({ "outbox.redrive_id": redriveId, "outbox.redriven": redriven })
    return {
      _tag: "Redriven",
      redriveId,
      matched: planned.length,
      redriven,
      skipped,
      notDeadLetters: notDeadLettersOf(filter, planned.map((r) => r.id)),
      batches,
      logIds
    } satisfies RedriveReport
  })

  return DeadLetters.of({ list, count, show, redrive, history })
})

/**
 * The service as a layer (needs the `0003_redrive_log` migration of
 * `OutboxMigrations`).
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options = {}): Layer.Layer<DeadLetters, DeadLetterError, SqlClient.SqlClient> =>
  Layer.effect(DeadLetters, make(options))

/**
 * The service for the outbox table named by `OUTBOX_TABLE` (default
 * `outbox`), as the relay reads it.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerConfig: Layer.Layer<DeadLetters, DeadLetterError | Config.ConfigError, SqlClient.SqlClient> = Layer
  .effect(
    DeadLetters,
    Effect.gen(function*() {
      const table = yield* SqlEnv.table
      return yield* make({ table })
    })
  )
