/**
 * Health and statistics of the outbox, read from SQL views that the
 * `0004_health_views` migration creates (so `psql` users see the same numbers):
 *
 * | view / function | what it shows | cost |
 * |---|---|---|
 * | `outbox_stats` | counts by status, oldest pending age, overdue leases, the longest-held lease (`lease_held_seconds`, from `claimed_at`) | exact counts over the claimable, leased and dead-letter partial indexes (proportional to the backlog, not to the table); COMPLETED is an **estimate** (`reltuples` of the partitions minus the exact counts) |
 * | `outbox_throughput(minutes, max_rows)`, `outbox_stats_throughput` (15 min, 100 000 rows) | completed and dead-lettered per minute, from `processed_at` | **bounded**: reads only the newest `max_rows` events by id (a backward primary-key scan); `exact` is false for minutes older than that sample |
 * | `outbox_stats_dead_letters` | dead letters by event type | `outbox_dead_letter_idx` (migration 0003): proportional to the dead letters |
 * | `outbox_health_leases` | PROCESSING rows whose lease expired | the leased partial index |
 * | `outbox_health_partitions` | per range-partitioned table: contiguous horizon from now, whole partitions ahead, gaps, rows in DEFAULT (counted up to 100 000), dead tuples | catalog and `pg_stat_user_tables`, plus a capped count of each DEFAULT partition |
 * | `outbox_health_vacuum` | per partition: live and dead tuples, dead ratio, last (auto)vacuum | `pg_stat_user_tables` |
 * | `outbox_health_xmin` | who holds the xmin horizon: transactions and idle-in-transaction sessions of this database, prepared transactions, replication slots (pid, xid age, age in seconds, query start) | `pg_stat_activity`, `pg_prepared_xacts`, `pg_replication_slots` |
 * | `BlockedKeys` (no view: its statements take the relay's `hold`) | under per-key ordering only (`Options.ordering`): ordering keys whose head waits out a backoff or a schedule, or (with `hold`) sits behind a dead letter, with what is queued behind | the not-yet-due backlog rows and the dead letters, each checked with one descent of `<outbox>_ordering_idx` |
 *
 * Ages are measured with the database clock (`now()`), the clock the store
 * uses by default for leases.
 *
 * The views over the outbox table read the table the migrations were applied
 * for (`outbox`, or `OutboxMigrations.runFor`'s). The service reads the table
 * of its option `table` (`OUTBOX_TABLE` with `layerConfig`): through the
 * views for `outbox`, directly (by the views' own queries) for another, such
 * as the partitioned table of an online migration.
 *
 * `OutboxHealth` offers three operations: `stats` (for humans and
 * `npx outbox stats`), `health` (a level OK / WARN / CRITICAL with named
 * findings, for `npx outbox health` and probes) and `snapshot` (the gauges
 * of the metric catalog, sampled on a schedule: its counts read at most
 * `snapshotMaxRows` rows, so that its cost stops growing with the backlog,
 * where `outbox_stats` counts exactly).
 *
 * @since 0.1.0
 */
import { OutboxConfig } from "@outbox/core/OutboxConfig"
import type { StoreError } from "@outbox/core/OutboxError"
import type { Ordering } from "@outbox/core/OutboxStore"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import * as BlockedKeys from "./BlockedKeys.ts"
import * as HealthCheck from "./HealthCheck.ts"
import * as Identifier from "./Identifier.ts"
import * as HealthChecks from "./internal/healthChecks.ts"
import * as HealthViews from "./migrations/0004_health_views.ts"
import { deadLettersSelect, throughputSelect } from "./migrations/0004_health_views.ts"
import * as OutboxTables from "./OutboxTables.ts"
import * as SqlEnv from "./SqlEnv.ts"

// ---------------------------------------------------------------------------
// migration
// ---------------------------------------------------------------------------

/**
 * Re-applies the `0004_health_views` migration over the table `outbox` (its
 * DDL lives in `src/migrations/0004_health_views.ts`, applied by
 * `OutboxMigrations`).
 *
 * **Gotcha**: PostgreSQL binds a view to the table, not to its name. The
 * statements are `CREATE OR REPLACE`, so running this effect again (it is
 * idempotent) re-points the views after a step that swaps the `outbox`
 * table by renaming.
 *
 * @category migrations
 * @since 0.1.0
 */
export const migration: Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> = HealthViews.migration(
  OutboxTables.defaults
)

// ---------------------------------------------------------------------------
// models
// ---------------------------------------------------------------------------

/**
 * A health level. The CLI exits with 0, 1 or 2.
 *
 * @category models
 * @since 0.1.0
 */
export type Level = "OK" | "WARN" | "CRITICAL"

/**
 * The gauges of the metric catalog, sampled from the database. Every age is
 * 0 when nothing is waiting, leased past its expiry or holding the horizon.
 *
 * @category models
 * @since 0.1.0
 */
export interface Snapshot {
  /** PENDING + FAILED, counted up to `snapshotMaxRows` (default 100 000). */
  readonly pending: number
  readonly processing: number
  readonly oldestPendingAgeSeconds: number
  /** `max(now - locked_until)` over PROCESSING rows whose lease expired. */
  readonly leaseOverdueSeconds: number
  /**
   * `max(now - claimed_at)` over PROCESSING rows: how long the longest-held
   * lease has been held since its claim. Heartbeats renew a lease but do not
   * move `claimed_at`, so a handler that never finishes shows here (and
   * nowhere else: its lease never expires).
   */
  readonly leaseHeldSeconds: number
  /** DEAD_LETTER, counted up to `snapshotMaxRows`. */
  readonly deadLetters: number
  readonly partitions: ReadonlyArray<{
    readonly table: string
    /** Whole partitions after the current one, without a gap. */
    readonly ahead: number
    /** Counted up to 100 000. */
    readonly defaultRows: number
    /** Sum of `n_dead_tup` over the table's partitions. */
    readonly deadTuples: number
  }>
  /**
   * Age of the oldest transaction (or prepared transaction, or replication
   * slot's replay lag) holding the xmin horizon of this database. An
   * inactive slot has no age in seconds (see `health` for its xid age and
   * retained WAL).
   */
  readonly xminHorizonAgeSeconds: number
  /**
   * Blocked ordering keys by reason (`outbox_blocked_keys{reason}`), counted
   * among the first `snapshotMaxRows` backlog rows by id and dead letters;
   * all 0 when the relay does not order by key (`Options.ordering`).
   */
  readonly blockedKeys: BlockedKeys.Counts
}

/**
 * `stats`: counts by status, oldest pending age, throughput, dead letters.
 *
 * @category models
 * @since 0.1.0
 */
export interface Stats {
  readonly at: Date
  readonly counts: {
    readonly pending: number
    readonly failed: number
    readonly processing: number
    readonly deadLetter: number
    /** An estimate: `reltuples` of the partitions minus the exact counts (run ANALYZE for a fresh one). */
    readonly completedEstimate: number
  }
  readonly oldestPendingAgeSeconds: number
  readonly leaseOverdue: number
  readonly leaseOverdueSeconds: number
  /** How long the longest-held lease has been held since its claim (see `Snapshot`). */
  readonly leaseHeldSeconds: number
  readonly throughput: {
    readonly minutes: number
    /** How many of the newest events were read (a bound, not a count). */
    readonly maxRows: number
    /** Completed per minute, averaged over the whole minutes of the window (the current minute excluded). */
    readonly completedPerMinute: number
    readonly perMinute: ReadonlyArray<{
      readonly minute: Date
      readonly completed: number
      readonly deadLettered: number
      /** false when the newest `maxRows` events do not reach back to this minute: the counts are a lower bound. */
      readonly exact: boolean
    }>
  }
  readonly deadLettersByEventType: ReadonlyArray<{
    readonly eventType: string
    readonly count: number
    readonly lastAt: Date | null
  }>
}

/**
 * The names of the findings of the built-in checks (`checks`), derived from
 * the list so that a new check needs no edit here.
 *
 * @category models
 * @since 0.1.0
 */
export type FindingName = (typeof checks)[number]["name"]

/**
 * One problem, with the value measured and the threshold it crossed.
 *
 * @category models
 * @since 0.1.0
 */
export interface Finding extends HealthCheck.Verdict {
  /** The check that found it: a `FindingName`, or the name of a check of a custom list (`Options.checks`). */
  readonly name: FindingName | (string & {})
}

/**
 * A holder of the xmin horizon (`outbox_health_xmin`).
 *
 * @category models
 * @since 0.1.0
 */
export interface XminHolder {
  readonly kind: "transaction" | "idle_in_transaction" | "prepared_transaction" | "replication_slot"
  /** The backend (for a slot: the active walsender), `null` for prepared transactions and inactive slots. */
  readonly pid: number | null
  /** User, prepared transaction gid or slot name. */
  readonly name: string
  readonly applicationName: string | null
  readonly clientAddr: string | null
  readonly state: string | null
  /** Age in transactions (`age(xid)`). */
  readonly xidAge: number | null
  /** Transaction age (now - xact_start), prepared age, or a slot's replay lag; `null` when unknown. */
  readonly ageSeconds: number | null
  readonly transactionStart: Date | null
  readonly queryStart: Date | null
  readonly stateChange: Date | null
  /** Replication slots: WAL kept back by the slot. */
  readonly retainedWalBytes: number | null
  /** The query (transactions), the owner (prepared) or the slot type. */
  readonly detail: string | null
}

/**
 * Partition health of one range-partitioned table (`outbox_health_partitions`).
 *
 * @category models
 * @since 0.1.0
 */
export interface PartitionHealth {
  readonly table: string
  readonly partitions: number
  readonly ahead: number
  /** End of the contiguous partitions from now; `null` when no partition covers now. */
  readonly horizon: Date | null
  readonly horizonSeconds: number
  readonly newest: Date | null
  readonly hasGap: boolean
  readonly defaultPartition: string | null
  readonly defaultRows: number
  readonly deadTuples: number
  readonly liveTuples: number
}

/**
 * Vacuum state of one partition (`outbox_health_vacuum`).
 *
 * @category models
 * @since 0.1.0
 */
export interface PartitionVacuum {
  readonly table: string
  readonly partition: string
  readonly liveTuples: number
  readonly deadTuples: number
  readonly deadRatio: number
  readonly lastAutovacuum: Date | null
  readonly lastVacuum: Date | null
}

/**
 * A lease past its expiry (`outbox_health_leases`).
 *
 * @category models
 * @since 0.1.0
 */
export interface StuckLease {
  readonly id: string
  readonly trackingId: string
  readonly eventType: string
  readonly lockedUntil: Date
  readonly overdueSeconds: number
}

/**
 * One check of the list as it ran: so that a report says what was checked,
 * and against which thresholds, not only what was found.
 *
 * @category models
 * @since 0.1.0
 */
export interface CheckResult {
  readonly name: FindingName | (string & {})
  /** The worst level of its findings (OK when none). */
  readonly level: Level
  /** Its thresholds, as in force (defaults and overrides). */
  readonly thresholds: { readonly [name: string]: HealthCheck.Threshold }
  /** The metric of `/metrics` that follows its value between reports, or `null`. */
  readonly gauge: string | null
}

/**
 * The blocked ordering keys of a report (`BlockedKeys`).
 *
 * @category models
 * @since 0.1.0
 */
export interface BlockedKeysReport {
  /** The ordering they were read under; `null` when the relay does not order by key: nothing was read. */
  readonly ordering: Ordering | null
  /** Counted exactly, by reason. */
  readonly counts: BlockedKeys.Counts
  /** The oldest heads first, at most 20. */
  readonly keys: ReadonlyArray<BlockedKeys.BlockedKey>
}

/**
 * What `health` returns. `level` is the worst level of the findings.
 *
 * @category models
 * @since 0.1.0
 */
export interface HealthReport {
  readonly level: Level
  readonly at: Date
  readonly findings: ReadonlyArray<Finding>
  readonly thresholds: Thresholds
  readonly backlog: {
    readonly pending: number
    readonly processing: number
    readonly oldestPendingAgeSeconds: number
    readonly deadLetters: number
  }
  readonly leases: {
    readonly overdue: number
    readonly overdueSeconds: number
    /** How long the longest-held lease has been held since its claim (see `Snapshot`). */
    readonly heldSeconds: number
    /** The longest overdue, at most 20. */
    readonly stuck: ReadonlyArray<StuckLease>
  }
  /** Keys whose later events wait for their head (under per-key ordering only). */
  readonly blockedKeys: BlockedKeysReport
  readonly partitions: ReadonlyArray<PartitionHealth>
  readonly vacuum: ReadonlyArray<PartitionVacuum>
  readonly xminHorizon: {
    readonly ageSeconds: number
    /** The holder with the largest xid age, or `null`. */
    readonly oldest: XminHolder | null
    readonly holders: ReadonlyArray<XminHolder>
  }
  /** Every check of the list, in list order. */
  readonly checks: ReadonlyArray<CheckResult>
}

/**
 * A WARN and a CRITICAL bound (`HealthCheck.Band`).
 *
 * @category models
 * @since 0.1.0
 */
export type Band = HealthCheck.Band

type UnionToIntersection<U> = (U extends unknown ? (u: U) => void : never) extends (i: infer I) => void ? I : never
type DeclaredThresholds = UnionToIntersection<(typeof checks)[number]["thresholds"]>

/**
 * The thresholds of `health`: those the built-in checks declare (each
 * documented in its check), derived from the list so that a new check's
 * thresholds need no edit here.
 *
 * @category models
 * @since 0.1.0
 */
export type Thresholds = { readonly [K in keyof DeclaredThresholds]: DeclaredThresholds[K] }

/**
 * Options of `make` and `layer`; every field has a default.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /**
   * The outbox table (default `outbox`; `OUTBOX_TABLE` with `layerConfig`):
   * the gauges, counts, throughput, dead letters and stuck leases are read
   * from it. For `outbox` they are read through the views of the migrations
   * (`outbox_stats`…); for another table (during an online migration, or
   * a process configured with the partitioned table's name) the same
   * queries read that table directly.
   */
  readonly table?: string | OutboxTables.OutboxTables | undefined
  /** Range-partitioned tables to report on (default `[table]`), as `regclass` text. */
  readonly tables?: ReadonlyArray<string> | undefined
  /** Throughput window of `stats` in minutes (default 15, at most 1440). */
  readonly throughputMinutes?: number | undefined
  /** How many of the newest events `stats` reads for throughput (default 100 000). */
  readonly throughputMaxRows?: number | undefined
  /**
   * How many backlog rows, and how many dead letters, `snapshot` reads at
   * most (default 100 000), so that sampling the gauges stays cheap however
   * large the backlog grows: past it, the counts stop at this number and the
   * oldest pending age is that of the oldest of the first rows by id.
   * (`stats` and `health` count exactly.)
   */
  readonly snapshotMaxRows?: number | undefined
  /**
   * The relay's per-key ordering (`OUTBOX_ORDERING=key`; `deadLetter` its
   * `OUTBOX_ORDERING_DEAD_LETTER`). Blocked keys exist only under it, and
   * the database does not know it: with it, `health` lists them (check
   * `BlockedKeys`) and `snapshot` counts them (`outbox_blocked_keys`); a
   * dead-lettered head counts as blocking only under `hold`. `"none"`: not
   * read. Default: the relay's, from the `OutboxConfig` service when the
   * service is built beside it (as `OutboxLive` builds it), else `"none"`.
   */
  readonly ordering?: Ordering | "none" | undefined
  /** Overrides of `defaultThresholds`. */
  readonly thresholds?: { readonly [K in keyof Thresholds]?: Thresholds[K] | undefined } | undefined
  /**
   * The checks of `health` (default `checks`): a subset of them, or
   * `[...OutboxHealth.checks, yourCheck]` for a check of your own (its
   * thresholds are its defaults). The report's own measurements (backlog,
   * leases, partitions, vacuum, xmin holders) are read whatever the list.
   */
  readonly checks?: ReadonlyArray<HealthCheck.Any> | undefined
}

/**
 * Options that cannot work (a negative window, a NaN threshold, no table).
 *
 * @category errors
 * @since 0.1.0
 */
export class InvalidHealthOptions extends Schema.TaggedError<InvalidHealthOptions>("@outbox/sql/InvalidHealthOptions")(
  "InvalidHealthOptions",
  { option: Schema.String, message: Schema.String }
) {}

/**
 * Health and statistics of the outbox.
 *
 * @category services
 * @since 0.1.0
 */
export class OutboxHealth extends Context.Service<OutboxHealth, {
  /** Counts by status, oldest pending age, throughput, dead letters by event type. */
  readonly stats: Effect.Effect<Stats, StoreError>
  /** A level with named findings, and the details behind them. */
  readonly health: Effect.Effect<HealthReport, StoreError>
  /** The gauges of the metric catalog (cheap: meant to run every few seconds). */
  readonly snapshot: Effect.Effect<Snapshot, StoreError>
  /**
   * Events redriven (dead letters sent back to PENDING, by any process)
   * that no caller has counted yet; claims them, so each redrive batch is
   * counted by exactly one caller (`outbox_meter_redrives()`, migration
   * `0005_relay_gauges`). The relays' gauge samplers add it to
   * `outbox_events_redriven_total`, so the sum over relays is the cluster's
   * total. Redrives older than a day are never counted. The claim commits
   * with the statement: a reply lost after that (a dropped connection)
   * loses those counts, never an event.
   */
  readonly claimRedriven: Effect.Effect<number, StoreError>
}>()("@outbox/sql/OutboxHealth") {}

// ---------------------------------------------------------------------------
// checks: the list (src/internal/healthChecks.ts), folded
// ---------------------------------------------------------------------------

/**
 * What the built-in checks look at (`evaluate`): the fields the built-in
 * measures (`measures`) read, plus `tables`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Measurements {
  readonly tables: ReadonlyArray<string>
  readonly backlog: HealthReport["backlog"]
  readonly leases: HealthReport["leases"]
  readonly blockedKeys: BlockedKeysReport
  readonly partitions: ReadonlyArray<PartitionHealth>
  readonly vacuum: ReadonlyArray<PartitionVacuum>
  readonly holders: ReadonlyArray<XminHolder>
}

/**
 * The measures of the built-in checks, also read for every report (its
 * backlog, leases, partitions, vacuum and xmin sections), so that a check of
 * your own that names one of them shares its read:
 *
 * - `counts`: `outbox_stats` and the stuck leases of `outbox_health_leases`;
 *   one row, `{ backlog, leases }`.
 * - `blockedKeys`: `BlockedKeys` (counts, and the 20 oldest heads), under
 *   per-key ordering only; one row, `BlockedKeysReport`, or none when the
 *   relay does not order by key.
 * - `partitions`: `outbox_health_partitions`; one row per table of
 *   `Options.tables`, `{ table, partition }` (`partition` undefined when the
 *   table is not range-partitioned).
 * - `vacuum`: `outbox_health_vacuum`; one row per partition.
 * - `holders`: `outbox_health_xmin`; one row per holder of the xmin horizon,
 *   the largest xid age first.
 *
 * @category checks
 * @since 0.1.0
 */
export const measures = HealthChecks.measures

/**
 * The built-in checks (`HealthCheck`), in the order their findings come (per
 * measure, then per row): StuckLease, LongHeldLease, BacklogAge,
 * DeadLetters (`counts`); BlockedKeys (`blockedKeys`); PartitionHorizon,
 * PartitionsAhead (not where the horizon is CRITICAL), RowsInDefault
 * (`partitions`); DeadTuples (`vacuum`); LongTransaction,
 * IdleInTransaction, PreparedTransaction, ReplicationSlot (`holders`).
 *
 * `health` folds this list (or `Options.checks`); `FindingName`,
 * `Thresholds` and `defaultThresholds` derive from it; `outbox health
 * --checks` prints it. A new check is one entry in the list
 * (`src/internal/healthChecks.ts`), plus its view when it reads something
 * new (README, "Adding a health check").
 *
 * @category checks
 * @since 0.1.0
 */
export const checks = HealthChecks.checks

/**
 * The default thresholds: those of the built-in checks (`checks`), each
 * documented in its check.
 *
 * @category constants
 * @since 0.1.0
 */
export const defaultThresholds: Thresholds = HealthCheck.defaultsOf(checks) as Thresholds

/**
 * The findings of the built-in checks for some measurements (pure): the
 * list folded, for each measure, for each of its rows, each of its checks.
 *
 * @category evaluation
 * @since 0.1.0
 */
export const evaluate = (m: Measurements, t: Thresholds): ReadonlyArray<Finding> => HealthCheck.evaluate(checks, m, t)

/**
 * The worst level of some findings.
 *
 * @category evaluation
 * @since 0.1.0
 */
export const levelOfFindings = (findings: ReadonlyArray<Finding>): Level =>
  findings.some((f) => f.level === "CRITICAL") ? "CRITICAL" : findings.length > 0 ? "WARN" : "OK"

// ---------------------------------------------------------------------------
// service
// ---------------------------------------------------------------------------

const validBand = (option: string, band: Band) =>
  Effect.gen(function*() {
    for (const [k, v] of [["warn", band.warn], ["critical", band.critical]] as const) {
      if (v !== undefined && !(Number.isFinite(v) && v >= 0)) {
        return yield* new InvalidHealthOptions({ option: `${option}.${k}`, message: `must be a finite number >= 0, got ${v}` })
      }
    }
  })

const positiveInteger = (option: string, value: number): Effect.Effect<number, InvalidHealthOptions> =>
  Number.isInteger(value) && value >= 1
    ? Effect.succeed(value)
    : Effect.fail(new InvalidHealthOptions({ option, message: `an integer >= 1, got ${value}` }))

/** Each name once; `unless` names an earlier check of the same measure. */
const validChecks = (list: ReadonlyArray<HealthCheck.Any>): Effect.Effect<void, InvalidHealthOptions> => {
  for (const [i, check] of list.entries()) {
    const earlier = list.slice(0, i)
    if (earlier.some((c) => c.name === check.name)) {
      return Effect.fail(new InvalidHealthOptions({ option: "checks", message: `two checks are named ${check.name}` }))
    }
    if (check.unless !== undefined && !earlier.some((c) => c.name === check.unless && c.measure === check.measure)) {
      return Effect.fail(
        new InvalidHealthOptions({
          option: "checks",
          message: `${check.name}: unless names ${check.unless}, which is no earlier check of the same measure`
        })
      )
    }
  }
  return Effect.void
}

/** The relay's ordering from its `OutboxConfig`, when one is provided. */
const relayOrdering: Effect.Effect<Ordering | undefined> = Effect.map(
  Effect.serviceOption(OutboxConfig),
  Option.match({
    onNone: () => undefined,
    onSome: (config) => (config.ordering === "key" ? { deadLetter: config.orderingDeadLetter } : undefined)
  })
)

const resolveOrdering = (ordering: Options["ordering"]): Effect.Effect<Ordering | undefined, InvalidHealthOptions> => {
  if (ordering === "none") return Effect.succeed(undefined)
  if (ordering === undefined) return relayOrdering
  return ordering.deadLetter === "continue" || ordering.deadLetter === "hold"
    ? Effect.succeed({ deadLetter: ordering.deadLetter })
    : Effect.fail(
      new InvalidHealthOptions({ option: "ordering.deadLetter", message: `"continue" or "hold", got ${String(ordering.deadLetter)}` })
    )
}

const resolveOptions = Effect.fnUntraced(function*(options: Options) {
  const table = typeof options.table === "object"
    ? options.table.outbox
    : (yield* OutboxTables.make(options.table ?? "outbox").pipe(
      Effect.mapError((e) => new InvalidHealthOptions({ option: "table", message: e.message }))
    )).outbox
  const tables = options.tables ?? [table]
  if (tables.length === 0 || tables.some((t) => t.trim() === "")) {
    return yield* new InvalidHealthOptions({ option: "tables", message: "name at least one table, none empty" })
  }
  const minutes = options.throughputMinutes ?? 15
  if (!Number.isInteger(minutes) || minutes < 1 || minutes > 1440) {
    return yield* new InvalidHealthOptions({ option: "throughputMinutes", message: `an integer in [1, 1440], got ${minutes}` })
  }
  const maxRows = yield* positiveInteger("throughputMaxRows", options.throughputMaxRows ?? 100_000)
  const snapshotMaxRows = yield* positiveInteger("snapshotMaxRows", options.snapshotMaxRows ?? 100_000)
  const ordering = yield* resolveOrdering(options.ordering)
  const list: ReadonlyArray<HealthCheck.Any> = options.checks ?? checks
  yield* validChecks(list)
  const overrides = Object.fromEntries(Object.entries(options.thresholds ?? {}).filter(([, v]) => v !== undefined))
  const thresholds = { ...HealthCheck.defaultsOf(list), ...overrides } as Thresholds
  for (const [key, value] of Object.entries(thresholds)) {
    if (typeof value === "number") {
      if (!(Number.isFinite(value) && value >= 0)) {
        return yield* new InvalidHealthOptions({ option: key, message: `must be a finite number >= 0, got ${value}` })
      }
    } else yield* validBand(key, value as Band)
  }
  return { table, tables, minutes, maxRows, snapshotMaxRows, thresholds, list, ordering }
})

/** A row of `outbox_throughput`. */
const ThroughputRow = Schema.Struct({
  minute: Schema.Date,
  completed: Schema.Number,
  deadLettered: Schema.Number,
  exact: Schema.Boolean
}).pipe(Schema.encodeKeys({ deadLettered: "dead_lettered" }))

/** A row of `outbox_stats_dead_letters`. */
const DeadLettersRow = Schema.Struct({
  eventType: Schema.String,
  count: Schema.Number,
  lastAt: Schema.NullOr(Schema.Date)
}).pipe(Schema.encodeKeys({ eventType: "event_type", count: "dead_letters", lastAt: "last_dead_lettered_at" }))

/** The snapshot's capped counts. */
const GaugeCountsRow = Schema.Struct({
  backlog: Schema.Number,
  oldestPendingAgeSeconds: Schema.Number,
  deadLetter: Schema.Number,
  processing: Schema.Number,
  leaseOverdueSeconds: Schema.Number,
  leaseHeldSeconds: Schema.Number
}).pipe(Schema.encodeKeys({
  oldestPendingAgeSeconds: "oldest_pending_age_seconds",
  deadLetter: "dead_letter",
  leaseOverdueSeconds: "lease_overdue_seconds",
  leaseHeldSeconds: "lease_held_seconds"
}))

/** A count returned by a function. */
const CountRow = Schema.Struct({ n: Schema.Number })

/**
 * Builds the service over a `SqlClient` (the views must exist: run
 * `OutboxMigrations` first).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const { list, maxRows, minutes, ordering, snapshotMaxRows, table, tables, thresholds } = yield* resolveOptions(options)
  const sql = (yield* SqlClient.SqlClient).withoutTransforms()
  const context: HealthCheck.MeasureContext = { sql, table, tables, ordering }
  const now = Effect.map(Clock.currentTimeMillis, (ms) => new Date(ms))
  const T = Identifier.quote(table)
  /** The report's own measures first (in their order), then those only the list's checks read. */
  const builtIn: ReadonlyArray<HealthCheck.Measure<any, any>> = Object.values(measures)
  const reads = [...builtIn, ...HealthCheck.measuresOf(list).filter((m) => !builtIn.includes(m))]

  /**
   * The snapshot's counts, each reading at most `snapshotMaxRows` rows (the
   * backlog's first by id, through the claimable partial index; the dead
   * letters through theirs), not the whole backlog as `outbox_stats` does.
   * The oldest pending age is measured as `outbox_stats` measures it, from
   * when the oldest row due now became due: over the first rows due at once
   * by id (`<outbox>_ready_idx`, at most `snapshotMaxRows`) and the scheduled
   * row due first (`<outbox>_waiting_idx`), so rows scheduled ahead neither
   * age the backlog nor are read past.
   */
  const gaugeCounts = sql`
    WITH backlog AS (
      SELECT 1 FROM ${sql.literal(T)} WHERE status IN ('PENDING', 'FAILED') ORDER BY id LIMIT ${snapshotMaxRows}
    ), ready AS (
      SELECT created_at FROM ${sql.literal(T)} WHERE status IN ('PENDING', 'FAILED') AND available_at IS NULL
      ORDER BY id LIMIT ${snapshotMaxRows}
    ), due AS (
      SELECT least(
        (SELECT min(created_at) FROM ready),
        (SELECT available_at FROM ${sql.literal(T)}
         WHERE status IN ('PENDING', 'FAILED') AND available_at IS NOT NULL AND available_at <= now()
         ORDER BY available_at LIMIT 1)) AS since
    ), dead AS (
      SELECT 1 FROM ${sql.literal(T)} WHERE status = 'DEAD_LETTER' LIMIT ${snapshotMaxRows}
    ), leased AS (
      SELECT count(*) AS processing,
             min(locked_until) FILTER (WHERE locked_until < now()) AS oldest_overdue_until,
             min(claimed_at) AS oldest_claimed_at
      FROM ${sql.literal(T)} WHERE status = 'PROCESSING'
    )
    SELECT (SELECT count(*) FROM backlog)::float8 AS backlog,
           coalesce(extract(epoch FROM now() - (SELECT since FROM due)), 0)::float8 AS oldest_pending_age_seconds,
           (SELECT count(*) FROM dead)::float8 AS dead_letter,
           l.processing::float8 AS processing,
           coalesce(extract(epoch FROM now() - l.oldest_overdue_until), 0)::float8 AS lease_overdue_seconds,
           greatest(coalesce(extract(epoch FROM now() - l.oldest_claimed_at), 0), 0)::float8 AS lease_held_seconds
    FROM leased l`.pipe(
    HealthCheck.decodeRow("snapshot.counts", GaugeCountsRow)
  )

  const snapshot: Effect.Effect<Snapshot, StoreError> = Effect.gen(function*() {
    const c = yield* gaugeCounts
    const ps = yield* HealthChecks.readPartitions(context)
    const hs = yield* HealthChecks.readHolders(context)
    const blockedKeys = ordering === undefined
      ? HealthChecks.noBlockedKeys
      : yield* BlockedKeys.readCounts(context, { hold: ordering.deadLetter === "hold", maxRows: snapshotMaxRows })
    return {
      pending: c.backlog,
      processing: c.processing,
      oldestPendingAgeSeconds: c.oldestPendingAgeSeconds,
      leaseOverdueSeconds: c.leaseOverdueSeconds,
      leaseHeldSeconds: c.leaseHeldSeconds,
      deadLetters: c.deadLetter,
      partitions: ps.map((p) => ({ table: p.table, ahead: p.ahead, defaultRows: p.defaultRows, deadTuples: p.deadTuples })),
      xminHorizonAgeSeconds: HealthChecks.horizonAge(hs),
      blockedKeys
    }
  }).pipe(Effect.withSpan("OutboxHealth.snapshot"))

  const stats: Effect.Effect<Stats, StoreError> = Effect.gen(function*() {
    const at = yield* now
    const c = yield* HealthChecks.readCounts(context)
    const perMinute = yield* (HealthChecks.throughViews(context)
      ? sql`
        SELECT minute, completed::float8 AS completed, dead_lettered::float8 AS dead_lettered, exact
        FROM outbox_throughput(${minutes}::int, ${maxRows}::bigint)`
      : sql.unsafe(
        `SELECT minute, completed::float8 AS completed, dead_lettered::float8 AS dead_lettered, exact
         FROM (${throughputSelect(T, "$1::int", "$2::bigint")}) v`,
        [minutes, maxRows]
      )).pipe(HealthCheck.decodeRows("stats.throughput", ThroughputRow))
    const deadLettersByEventType = yield* sql`
      SELECT event_type, dead_letters::float8 AS dead_letters, last_dead_lettered_at
      FROM ${HealthChecks.sourceOf(context, "outbox_stats_dead_letters", deadLettersSelect)}
      ORDER BY dead_letters DESC, event_type`.pipe(HealthCheck.decodeRows("stats.deadLetters", DeadLettersRow))
    const whole = perMinute.slice(0, -1)
    return {
      at,
      counts: {
        pending: c.pending,
        failed: c.failed,
        processing: c.processing,
        deadLetter: c.deadLetter,
        completedEstimate: c.completedEstimate
      },
      oldestPendingAgeSeconds: c.oldestPendingAgeSeconds,
      leaseOverdue: c.leaseOverdue,
      leaseOverdueSeconds: c.leaseOverdueSeconds,
      leaseHeldSeconds: c.leaseHeldSeconds,
      throughput: {
        minutes,
        maxRows,
        completedPerMinute: whole.length === 0 ? 0 : whole.reduce((s, r) => s + r.completed, 0) / whole.length,
        perMinute
      },
      deadLettersByEventType
    } satisfies Stats
  }).pipe(Effect.withSpan("OutboxHealth.stats"))

  const health: Effect.Effect<HealthReport, StoreError> = Effect.gen(function*() {
    const at = yield* now
    const read = yield* Effect.forEach(reads, (m) => m.read(context))
    const measured = Object.assign({ tables }, ...read) as Measurements
    const findings: ReadonlyArray<Finding> = HealthCheck.evaluate(list, measured, thresholds)
    const level = levelOfFindings(findings)
    yield* Effect.annotateCurrentSpan({ "outbox.health.level": level, "outbox.health.findings": findings.length })
    const hs = measured.holders
    return {
      level,
      at,
      findings,
      thresholds,
      backlog: measured.backlog,
      leases: measured.leases,
      blockedKeys: measured.blockedKeys,
      partitions: measured.partitions,
      vacuum: measured.vacuum,
      xminHorizon: { ageSeconds: HealthChecks.horizonAge(hs), oldest: hs[0] ?? null, holders: hs },
      checks: list.map((check) => ({
        name: check.name,
        level: levelOfFindings(findings.filter((f) => f.name === check.name)),
        thresholds: Object.fromEntries(
          Object.keys(check.thresholds as HealthCheck.ThresholdRecord).map((k) => [k, (thresholds as HealthCheck.ThresholdRecord)[k]!])
        ),
        gauge: check.gauge ?? null
      }))
    } satisfies HealthReport
  }).pipe(Effect.withSpan("OutboxHealth.health"))

  const claimRedriven: Effect.Effect<number, StoreError> = sql`
    SELECT outbox_meter_redrives()::float8 AS n`.pipe(
    HealthCheck.decodeRow("meterRedrives", CountRow),
    Effect.map((r) => r.n),
    Effect.withSpan("OutboxHealth.claimRedriven")
  )

  return OutboxHealth.of({ stats, health, snapshot, claimRedriven })
})

/**
 * The service as a layer.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options = {}): Layer.Layer<OutboxHealth, InvalidHealthOptions, SqlClient.SqlClient> =>
  Layer.effect(OutboxHealth, make(options))

/**
 * The service as a layer, on the outbox table `OUTBOX_TABLE` (default
 * `outbox`) unless `options.table` names one: the table the store, the dead
 * letters and partition maintenance use, so that the gauges follow them
 * through an online migration.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerConfig = (
  options: Options = {}
): Layer.Layer<OutboxHealth, InvalidHealthOptions | Config.ConfigError, SqlClient.SqlClient> =>
  Layer.unwrap(Effect.map(
    SqlEnv.tables,
    (tables) => layer({ ...options, table: options.table ?? tables })
  ))
