/**
 * Partition policies as data: which table, by which time column, in which
 * interval, how far ahead partitions are made, how long they are kept and
 * what retention does with them. One policy type serves the outbox and any
 * high-volume table of the application (audit logs, sessions, uploads...).
 *
 * This module is pure: the calendar arithmetic (UTC) that says which
 * partitions a policy expects at a given time lives here, so it is tested
 * without a database and the SQL manager (`@outbox/sql/PartitionManager`)
 * only compares the calendar with the catalog.
 *
 * @since 0.1.0
 */

/**
 * Partition width. Bounds are UTC calendar boundaries: midnight, Monday
 * (ISO weeks), the first of the month, the first of a quarter.
 *
 * @category models
 * @since 0.1.0
 */
export type Interval = "daily" | "weekly" | "monthly" | "quarterly"

/**
 * How long partitions are kept: a partition is past retention once its upper
 * bound is at or before `now - retention`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Retention {
  readonly amount: number
  readonly unit: "days" | "months" | "years"
}

/**
 * What retention does with a partition past its retention:
 * - `drop`: detach, then drop.
 * - `detach`: detach and keep the table (for the operator to move or archive).
 * - `archive`: write its rows to the archive storage with a manifest, then
 *   detach and drop.
 *
 * @category models
 * @since 0.1.0
 */
export type RetentionMode = "drop" | "detach" | "archive"

/**
 * Rows that must not be retired: a partition holding a row whose `column`
 * is not one of `doneValues` is never dropped; it is reported instead.
 *
 * @category models
 * @since 0.1.0
 */
export interface Protect {
  readonly column: string
  readonly doneValues: ReadonlyArray<string>
}

/**
 * One table's partition policy.
 *
 * @category models
 * @since 0.1.0
 */
export interface PartitionPolicy {
  /** The partitioned parent, optionally schema-qualified (`audit.logs`). */
  readonly table: string
  /** The `timestamptz` partition key. */
  readonly column: string
  readonly interval: Interval
  /** Partitions kept ready after the current one. */
  readonly premake: number
  /** `undefined` keeps partitions forever. */
  readonly retention: Retention | undefined
  readonly retentionMode: RetentionMode
  readonly protect: Protect | undefined
  /** Health reports "too many partitions" past this many leaves. */
  readonly maxPartitions: number
}

/**
 * Builds a policy; unspecified fields get defaults (premake 3, no retention,
 * mode `drop`, no protection, at most 400 partitions).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (
  options: Pick<PartitionPolicy, "table" | "column" | "interval"> & Partial<PartitionPolicy>
): PartitionPolicy => ({
  premake: 3,
  retention: undefined,
  retentionMode: "drop",
  protect: undefined,
  maxPartitions: 400,
  ...options
})

/**
 * The outbox's policy: daily partitions of `outbox.created_at`, 3 days
 * ahead, kept `retentionDays` (default 7) and dropped, never while a row is
 * not COMPLETED or DEAD_LETTER. `table` names another outbox table (e.g.
 * the partitioned table of an online migration).
 *
 * @category constructors
 * @since 0.1.0
 */
export const outbox = (
  options: { readonly retentionDays?: number; readonly premake?: number; readonly table?: string } = {}
): PartitionPolicy =>
  make({
    table: options.table ?? "outbox",
    column: "created_at",
    interval: "daily",
    premake: options.premake ?? 3,
    retention: { amount: options.retentionDays ?? 7, unit: "days" },
    retentionMode: "drop",
    protect: { column: "status", doneValues: ["COMPLETED", "DEAD_LETTER"] }
  })

/**
 * Example policies for common application tables (the catalogue):
 * audit logs monthly for 7 years, activity logs monthly for 2 years,
 * sessions monthly for 90 days, file uploads quarterly for 5 years,
 * notifications monthly for 1 year.
 *
 * @category constructors
 * @since 0.1.0
 */
export const examples = {
  auditLogs: (table = "audit_logs", column = "created_at") =>
    make({ table, column, interval: "monthly", premake: 2, retention: { amount: 7, unit: "years" }, retentionMode: "archive" }),
  activityLogs: (table = "activity_logs", column = "created_at") =>
    make({ table, column, interval: "monthly", premake: 2, retention: { amount: 2, unit: "years" } }),
  sessions: (table = "sessions", column = "created_at") =>
    make({ table, column, interval: "monthly", premake: 2, retention: { amount: 90, unit: "days" } }),
  fileUploads: (table = "file_uploads", column = "created_at") =>
    make({ table, column, interval: "quarterly", premake: 1, retention: { amount: 5, unit: "years" }, retentionMode: "archive" }),
  notifications: (table = "notifications", column = "created_at") =>
    make({ table, column, interval: "monthly", premake: 2, retention: { amount: 1, unit: "years" } })
}

/**
 * A partition's range `[from, to)`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Range {
  readonly from: Date
  readonly to: Date
}

const DAY = 86_400_000

/**
 * The start of the interval that contains `time` (UTC).
 *
 * @category calendar
 * @since 0.1.0
 */
export const floor = (interval: Interval, time: Date): Date => {
  const y = time.getUTCFullYear()
  const m = time.getUTCMonth()
  const day = Date.UTC(y, m, time.getUTCDate())
  switch (interval) {
    case "daily":
      return new Date(day)
    case "weekly":
      // ISO weeks start on Monday
      return new Date(day - ((new Date(day).getUTCDay() + 6) % 7) * DAY)
    case "monthly":
      return new Date(Date.UTC(y, m, 1))
    case "quarterly":
      return new Date(Date.UTC(y, m - (m % 3), 1))
  }
}

/**
 * Moves an interval start by `n` intervals.
 *
 * @category calendar
 * @since 0.1.0
 */
export const shift = (interval: Interval, start: Date, n: number): Date => {
  switch (interval) {
    case "daily":
      return new Date(start.getTime() + n * DAY)
    case "weekly":
      return new Date(start.getTime() + 7 * n * DAY)
    case "monthly":
      return new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth() + n, 1))
    case "quarterly":
      return new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth() + 3 * n, 1))
  }
}

/**
 * The range of the interval containing `time`.
 *
 * @category calendar
 * @since 0.1.0
 */
export const rangeOf = (interval: Interval, time: Date): Range => {
  const from = floor(interval, time)
  return { from, to: shift(interval, from, 1) }
}

/**
 * The ranges a policy expects to exist at `now`: the current interval and
 * `premake` after it.
 *
 * @category calendar
 * @since 0.1.0
 */
export const expectedAhead = (policy: PartitionPolicy, now: Date): ReadonlyArray<Range> => {
  const current = floor(policy.interval, now)
  return Array.from({ length: policy.premake + 1 }, (_, i) => {
    const from = shift(policy.interval, current, i)
    return { from, to: shift(policy.interval, from, 1) }
  })
}

/**
 * `now - retention`: partitions whose upper bound is at or before it are
 * past retention. `undefined` when the policy keeps everything.
 *
 * @category calendar
 * @since 0.1.0
 */
export const retentionCutoff = (policy: PartitionPolicy, now: Date): Date | undefined => {
  const r = policy.retention
  if (r === undefined) return undefined
  switch (r.unit) {
    case "days":
      return new Date(now.getTime() - r.amount * DAY)
    case "months":
      return new Date(Date.UTC(
        now.getUTCFullYear(),
        now.getUTCMonth() - r.amount,
        now.getUTCDate(),
        now.getUTCHours(),
        now.getUTCMinutes(),
        now.getUTCSeconds(),
        now.getUTCMilliseconds()
      ))
    case "years":
      return new Date(Date.UTC(
        now.getUTCFullYear() - r.amount,
        now.getUTCMonth(),
        now.getUTCDate(),
        now.getUTCHours(),
        now.getUTCMinutes(),
        now.getUTCSeconds(),
        now.getUTCMilliseconds()
      ))
  }
}

const pad = (n: number, width = 2) => String(n).padStart(width, "0")

/**
 * The partition name suffix for a range start: `pYYYYMMDD` for every
 * interval (the outbox's daily partitions are `outbox_p20261123`).
 *
 * @category naming
 * @since 0.1.0
 */
export const suffix = (from: Date): string =>
  `p${from.getUTCFullYear()}${pad(from.getUTCMonth() + 1)}${pad(from.getUTCDate())}`
