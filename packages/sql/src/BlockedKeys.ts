/**
 * Blocked ordering keys: under per-key ordering (`OUTBOX_ORDERING=key`,
 * `OutboxStore.Ordering`) a key whose head cannot be claimed holds back
 * every later event of that key. Other keys keep flowing, so a stuck key
 * can go unnoticed. This module lists such keys, and what waits behind
 * them, for `outbox keys blocked`, `OutboxHealth` (check `BlockedKeys`) and
 * the gauge `outbox_blocked_keys`.
 *
 * A key's *head* is its lowest-id PENDING/FAILED event (with `hold`: its
 * lowest dead letter, when that is lower). A key is blocked, with a reason:
 *
 * | reason | the head | until |
 * |---|---|---|
 * | `backoff` | FAILED, waiting out its retry delay (`available_at > now()`) | `availableAt` |
 * | `scheduled` | PENDING, published for later (`available_at > now()`) | `availableAt` |
 * | `dead_letter_held` | only with `hold` (`OUTBOX_ORDERING_DEAD_LETTER=hold`): a dead letter with a lower id than the key's first PENDING/FAILED event | a redrive (or a delete) |
 *
 * A key with an event in flight (PROCESSING) is not listed, whatever waits
 * behind: that is the normal state of an ordered key, not a blocked one. A key whose dead letters
 * have nothing queued behind them is not listed either: it holds nothing back.
 *
 * **How long.** The table has no first-failure timestamp, so the age given is
 * the head's (`headAgeSeconds`, now − its `created_at`): how long the head
 * has existed, an upper bound of how long the key has been stuck on it.
 * For a held key, `deadLetteredAt` says when the head was dead-lettered.
 *
 * **`hold` is a parameter** because the database does not know the relay's
 * `OUTBOX_ORDERING_DEAD_LETTER`: the caller says which rule the relay runs.
 *
 * **Cost.** The statements start from the rows that can block: PENDING/FAILED
 * rows not yet due (a scan of the claimable partial index: proportional to
 * the backlog, not to the table) and, with `hold`, the dead letters (the
 * `<outbox>_ordering_dead_idx` partial index). Each candidate is checked to
 * be its key's head with one descent of `<outbox>_ordering_idx` (the key
 * hash, then the id: the expression of migration `0008_ordering`, verbatim,
 * as the ordered claim uses it). Events behind a head are counted along
 * the same index, up to `queuedBehindCap`. The keys in flight are read once
 * from the leased partial index (bounded by the events in flight).
 *
 * **Gotchas**: keys are told apart by their 64-bit hash, as the claim tells
 * them apart; in the rare collision two keys show as one (the key text is
 * the head's). Ages come from the database clock (`now()`), as in
 * `OutboxHealth`.
 *
 * **Example**
 * ```ts
 * const keys = yield* BlockedKeys.BlockedKeys
 * const counts = yield* keys.count({ hold: true })
 * const oldest = yield* keys.list({ hold: true, limit: 20 })
 * ```
 *
 * @since 0.1.0
 */
import type { StoreError } from "@outbox/core/OutboxError"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as SqlClient from "effect/sql/SqlClient"
import type { Fragment } from "effect/sql/Statement"
import * as HealthCheck from "./HealthCheck.ts"
import * as Identifier from "./Identifier.ts"
import * as Ordering0008 from "./migrations/0008_ordering.ts"
import * as OutboxTables from "./OutboxTables.ts"
import * as SqlEnv from "./SqlEnv.ts"

// ---------------------------------------------------------------------------
// models
// ---------------------------------------------------------------------------

/**
 * Why a key is blocked (see the module's header).
 *
 * @category models
 * @since 0.1.0
 */
export type Reason = "backoff" | "scheduled" | "dead_letter_held"

/**
 * Every reason, in the order reports list them (the `reason` label values of
 * `outbox_blocked_keys`).
 *
 * @category constants
 * @since 0.1.0
 */
export const reasons: ReadonlyArray<Reason> = ["backoff", "scheduled", "dead_letter_held"]

/**
 * Events behind a head are counted up to this many (a count of this value
 * reads "at least"), so that one key's backlog does not make a list slow.
 *
 * @category constants
 * @since 0.1.0
 */
export const queuedBehindCap = 1000

/**
 * One blocked key and its head. Ids are text (as in `OutboxHealth`'s stuck
 * leases), so a report containing it serializes with `JSON.stringify`.
 *
 * @category models
 * @since 0.1.0
 */
export interface BlockedKey {
  /** The ordering key: the head's `ordering_key`, else `<aggregate_type>:<aggregate_id>`. */
  readonly key: string
  readonly reason: Reason
  /** The head's event id. */
  readonly headId: string
  readonly trackingId: string
  readonly eventType: string
  readonly status: "PENDING" | "FAILED" | "DEAD_LETTER"
  readonly retryCount: number
  readonly maxRetries: number
  readonly lastError: string | null
  /** The head's creation. */
  readonly createdAt: Date
  /**
   * now − the head's `created_at`, in seconds: how long the head has
   * existed. The table records no first failure, so this is an upper bound
   * of how long the key has been blocked, not a measure of it.
   */
  readonly headAgeSeconds: number
  /** When the head becomes due (`backoff`, `scheduled`); `null` for `dead_letter_held` (held until a redrive). */
  readonly availableAt: Date | null
  /** When the head was dead-lettered (`dead_letter_held`), else `null`. */
  readonly deadLetteredAt: Date | null
  /** PENDING/FAILED events of the key after the head, counted up to `queuedBehindCap`. */
  readonly queuedBehind: number
}

/**
 * Blocked keys counted by reason.
 *
 * @category models
 * @since 0.1.0
 */
export interface Counts {
  readonly backoff: number
  readonly scheduled: number
  /** 0 unless counted with `hold`. */
  readonly deadLetterHeld: number
  /**
   * The largest `headAgeSeconds` among the keys blocked by a failure
   * (`backoff`, `dead_letter_held`), 0 when none: what `OutboxHealth`'s
   * check judges. Scheduled keys wait because their producer asked for it.
   */
  readonly oldestFailedHeadAgeSeconds: number
}

/**
 * Options of `list`.
 *
 * @category models
 * @since 0.1.0
 */
export interface ListOptions {
  /** Also the keys held by a dead letter (the relay runs `OUTBOX_ORDERING_DEAD_LETTER=hold`). */
  readonly hold: boolean
  /** At most this many keys, the oldest heads first (default 100, at most 10 000). */
  readonly limit?: number | undefined
}

/**
 * Options of `count`.
 *
 * @category models
 * @since 0.1.0
 */
export interface CountOptions {
  /** Also count the keys held by a dead letter. */
  readonly hold: boolean
  /**
   * Read at most this many backlog rows (the first by id) and this many dead
   * letters, so that a gauge sampled every few seconds stays cheap however
   * large the backlog grows (`OutboxHealth`'s `snapshotMaxRows`). A key's
   * head among the first rows by id is its head overall, so a cap only
   * misses keys whose rows all come later. Default: no cap (exact).
   */
  readonly maxRows?: number | undefined
}

/**
 * What the reads need: a client and the outbox table (validated, unquoted),
 * as `HealthCheck.MeasureContext` has them.
 *
 * @category models
 * @since 0.1.0
 */
export interface ReadContext {
  readonly sql: SqlClient.SqlClient
  readonly table: string
}

/**
 * A `limit` or `maxRows` that cannot work. Nothing was read.
 *
 * @category errors
 * @since 0.1.0
 */
export class InvalidBlockedKeysOptions
  extends Schema.TaggedError<InvalidBlockedKeysOptions>("@outbox/sql/InvalidBlockedKeysOptions")(
    "InvalidBlockedKeysOptions",
    { option: Schema.String, message: Schema.String }
  )
{}

// ---------------------------------------------------------------------------
// statements
// ---------------------------------------------------------------------------

/** A row of `list`. */
const BlockedKeyRow = Schema.Struct({
  key: Schema.String,
  reason: Schema.Literals(["backoff", "scheduled", "dead_letter_held"]),
  headId: Schema.String,
  trackingId: Schema.String,
  eventType: Schema.String,
  status: Schema.Literals(["PENDING", "FAILED", "DEAD_LETTER"]),
  retryCount: Schema.Number,
  maxRetries: Schema.Number,
  lastError: Schema.NullOr(Schema.String),
  createdAt: Schema.Date,
  headAgeSeconds: Schema.Number,
  availableAt: Schema.NullOr(Schema.Date),
  deadLetteredAt: Schema.NullOr(Schema.Date),
  queuedBehind: Schema.Number
}).pipe(Schema.encodeKeys({
  headId: "head_id",
  trackingId: "tracking_id",
  eventType: "event_type",
  retryCount: "retry_count",
  maxRetries: "max_retries",
  lastError: "last_error",
  createdAt: "created_at",
  headAgeSeconds: "head_age_seconds",
  availableAt: "available_at",
  deadLetteredAt: "dead_lettered_at",
  queuedBehind: "queued_behind"
}))

/** A row of `count`. */
const CountsRow = Schema.Struct({
  backoff: Schema.Number,
  scheduled: Schema.Number,
  deadLetterHeld: Schema.Number,
  oldestFailedHeadAgeSeconds: Schema.Number
}).pipe(Schema.encodeKeys({
  deadLetterHeld: "dead_letter_held",
  oldestFailedHeadAgeSeconds: "oldest_failed_head_age_seconds"
}))

/**
 * The CTEs up to `blocked (k, id, created_at, reason)`: one row per blocked
 * key, its head's identity and why.
 */
const blockedCtes = (sql: SqlClient.SqlClient, T: Fragment, hold: boolean, maxRows: number | undefined) => {
  // the indexed expression of 0008_ordering, verbatim: the probes descend <outbox>_ordering_idx / _ordering_dead_idx
  const k = (alias: string) => sql.literal(Ordering0008.keyHash(alias))
  const cap = maxRows === undefined ? sql.literal("") : sql.literal(`ORDER BY o.id LIMIT ${maxRows}`)
  /** The key `alias.k`'s head: its lowest PENDING/FAILED id (one index descent). */
  const head = (alias: string) =>
    sql`(SELECT p.id FROM ${T} p
         WHERE p.status IN ('PENDING', 'FAILED') AND ${k("p")} = ${sql.literal(alias)}.k
         ORDER BY ${k("p")}, p.id LIMIT 1)`
  /** The key `alias.k`'s lowest dead letter (one index descent). */
  const lowestDead = (alias: string) =>
    sql`(SELECT d.id FROM ${T} d
         WHERE d.status = 'DEAD_LETTER' AND ${k("d")} = ${sql.literal(alias)}.k
         ORDER BY ${k("d")}, d.id LIMIT 1)`
  const waiting = sql`inflight AS MATERIALIZED (
      -- keys with an event in flight are flowing, not blocked (the leased rows: a batch per worker)
      SELECT DISTINCT ${k("o")} AS k FROM ${T} o WHERE o.status = 'PROCESSING'
    ), not_due AS (
      -- of each key, its lowest row not yet due: the only one that can be the key's head
      SELECT DISTINCT ON (s.k) s.k, s.id, s.created_at, s.status
      FROM (SELECT ${k("o")} AS k, o.id, o.created_at, o.status, o.available_at FROM ${T} o
            WHERE o.status IN ('PENDING', 'FAILED') ${cap}) s
      WHERE s.available_at > now()
      ORDER BY s.k, s.id
    ), waiting AS (
      SELECT n.k, n.id, n.created_at,
             (CASE n.status WHEN 'FAILED' THEN 'backoff' ELSE 'scheduled' END)::text AS reason
      FROM not_due n
      WHERE n.id = ${head("n")} AND NOT EXISTS (SELECT 1 FROM inflight i WHERE i.k = n.k)${
    hold ? sql`
        -- a lower dead letter holds the key: it is listed as held, below
        AND coalesce(${lowestDead("n")} > n.id, true)` : sql.literal("")
  }
    )`
  if (!hold) return sql`${waiting}, blocked AS (SELECT w.k, w.id, w.created_at, w.reason FROM waiting w)`
  return sql`${waiting}, held AS (
      SELECT dl.k, dl.id, dl.created_at, 'dead_letter_held'::text AS reason
      FROM (SELECT DISTINCT ON (s.k) s.k, s.id, s.created_at
            FROM (SELECT ${k("o")} AS k, o.id, o.created_at FROM ${T} o WHERE o.status = 'DEAD_LETTER' ${cap}) s
            ORDER BY s.k, s.id) dl
      -- held: the key's first PENDING/FAILED event comes after its lowest dead letter
      WHERE ${head("dl")} > dl.id AND NOT EXISTS (SELECT 1 FROM inflight i WHERE i.k = dl.k)
    ), blocked AS (
      SELECT w.k, w.id, w.created_at, w.reason FROM waiting w
      UNION ALL
      SELECT h.k, h.id, h.created_at, h.reason FROM held h
    )`
}

const positiveInt = (option: string, value: number, max: number): Effect.Effect<number, InvalidBlockedKeysOptions> =>
  Number.isInteger(value) && value >= 1 && value <= max
    ? Effect.succeed(value)
    : Effect.fail(new InvalidBlockedKeysOptions({ option, message: `an integer from 1 to ${max}, got ${value}` }))

/**
 * The blocked keys, the oldest heads first, at most `limit` (not checked:
 * the service checks it), each with its head and the number of events
 * queued behind it. Errors as `StoreError`, like `OutboxHealth`'s reads.
 *
 * @category reads
 * @since 0.1.0
 */
export const read = (
  context: ReadContext,
  options: { readonly hold: boolean; readonly limit: number }
): Effect.Effect<ReadonlyArray<BlockedKey>, StoreError> => {
  const sql = context.sql.withoutTransforms()
  const T = sql.literal(Identifier.quote(context.table))
  const k = (alias: string) => sql.literal(Ordering0008.keyHash(alias))
  return sql`
    WITH ${blockedCtes(sql, T, options.hold, undefined)}
    SELECT o.key, b.reason, b.id::text AS head_id, o.tracking_id::text AS tracking_id, o.event_type, o.status,
           o.retry_count, o.max_retries, o.last_error, o.created_at,
           greatest(extract(epoch FROM now() - o.created_at), 0)::float8 AS head_age_seconds,
           CASE WHEN b.reason = 'dead_letter_held' THEN NULL ELSE o.available_at END AS available_at,
           CASE WHEN b.reason = 'dead_letter_held' THEN o.processed_at END AS dead_lettered_at,
           (SELECT count(*) FROM (
              SELECT 1 FROM ${T} q
              WHERE q.status IN ('PENDING', 'FAILED') AND ${k("q")} = b.k AND q.id > b.id
              ORDER BY ${k("q")}, q.id LIMIT ${sql.literal(String(queuedBehindCap))}) x)::float8 AS queued_behind
    FROM (SELECT * FROM blocked ORDER BY created_at, id LIMIT ${sql.literal(String(Math.trunc(options.limit)))}) b
    CROSS JOIN LATERAL (
      SELECT ${sql.literal(Ordering0008.effectiveKey("r"))} AS key, r.tracking_id, r.event_type, r.status, r.retry_count,
             r.max_retries, r.last_error, r.created_at, r.available_at, r.processed_at
      FROM ${T} r WHERE r.id = b.id AND r.created_at = b.created_at) o
    ORDER BY b.created_at, b.id`.pipe(HealthCheck.decodeRows("blockedKeys.list", BlockedKeyRow))
}

/**
 * The blocked keys counted by reason (one statement; `maxRows` not checked:
 * the service checks it).
 *
 * @category reads
 * @since 0.1.0
 */
export const readCounts = (context: ReadContext, options: CountOptions): Effect.Effect<Counts, StoreError> => {
  const sql = context.sql.withoutTransforms()
  const T = sql.literal(Identifier.quote(context.table))
  const maxRows = options.maxRows === undefined ? undefined : Math.trunc(options.maxRows)
  return sql`
    WITH ${blockedCtes(sql, T, options.hold, maxRows)}
    SELECT count(*) FILTER (WHERE reason = 'backoff')::float8 AS backoff,
           count(*) FILTER (WHERE reason = 'scheduled')::float8 AS scheduled,
           count(*) FILTER (WHERE reason = 'dead_letter_held')::float8 AS dead_letter_held,
           coalesce(greatest(extract(epoch FROM now() - min(created_at) FILTER (WHERE reason <> 'scheduled')), 0), 0)::float8
             AS oldest_failed_head_age_seconds
    FROM blocked`.pipe(HealthCheck.decodeRow("blockedKeys.count", CountsRow))
}

// ---------------------------------------------------------------------------
// service
// ---------------------------------------------------------------------------

/**
 * Options of `make` / `layer`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /** The outbox table (default `outbox`); ignored when `tables` is given. */
  readonly table?: string | undefined
  /** The names of the outbox objects (`OutboxTables`). Default: those of `table`. */
  readonly tables?: OutboxTables.OutboxTables | undefined
}

/**
 * The blocked keys of one outbox table.
 *
 * @category services
 * @since 0.1.0
 */
export class BlockedKeys extends Context.Service<BlockedKeys, {
  /** The blocked keys, the oldest heads first (`read`). */
  readonly list: (options: ListOptions) => Effect.Effect<ReadonlyArray<BlockedKey>, StoreError | InvalidBlockedKeysOptions>
  /** The blocked keys counted by reason (`readCounts`). */
  readonly count: (options: CountOptions) => Effect.Effect<Counts, StoreError | InvalidBlockedKeysOptions>
}>()("@outbox/sql/BlockedKeys") {}

/**
 * Builds the service over a `SqlClient` (needs migration `0008_ordering`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const sql = yield* SqlClient.SqlClient
  const tables = options.tables ?? (yield* OutboxTables.make(options.table ?? "outbox").pipe(
    Effect.mapError((e) => new InvalidBlockedKeysOptions({ option: "table", message: e.message }))
  ))
  const context: ReadContext = { sql, table: tables.outbox }

  const list = Effect.fn("BlockedKeys.list")(function*(options: ListOptions) {
    const limit = yield* positiveInt("limit", options.limit ?? 100, 10_000)
    const keys = yield* read(context, { hold: options.hold, limit })
    yield* Effect.annotateCurrentSpan({ "outbox.blocked_keys.listed": keys.length })
    return keys
  })

  const count = Effect.fn("BlockedKeys.count")(function*(options: CountOptions) {
    const maxRows = options.maxRows === undefined ? undefined : yield* positiveInt("maxRows", options.maxRows, Number.MAX_SAFE_INTEGER)
    return yield* readCounts(context, { hold: options.hold, maxRows })
  })

  return BlockedKeys.of({ list, count })
})

/**
 * The service as a layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options = {}): Layer.Layer<BlockedKeys, InvalidBlockedKeysOptions, SqlClient.SqlClient> =>
  Layer.effect(BlockedKeys, make(options))

/**
 * The service for the outbox table named by `OUTBOX_TABLE` (default
 * `outbox`), the table the relay reads.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerConfig: Layer.Layer<BlockedKeys, InvalidBlockedKeysOptions | Config.ConfigError, SqlClient.SqlClient> =
  Layer.effect(BlockedKeys, Effect.flatMap(SqlEnv.tables, (tables) => make({ tables })))
