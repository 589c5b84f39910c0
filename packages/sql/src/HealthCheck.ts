/**
 * A health check of `OutboxHealth.health`, as data:
 *
 * | field | what |
 * |---|---|
 * | `name` | the name of its findings (`StuckLease`, `RowsInDefault`…) |
 * | `thresholds` | its thresholds with their defaults (keys of `OutboxHealth.Thresholds`, overridable through `OutboxHealth.Options`) |
 * | `measure` | the `Measure` it reads: one query, run once per report and decoded once, shared by every check that names the same measure |
 * | `evaluate` | one row of that measure and the thresholds → a `Verdict` (WARN / CRITICAL, value, threshold, message) or nothing |
 * | `unless` | optional: the name of an earlier check of the same measure whose finding on a row makes this one moot there |
 * | `gauge` | optional: the metric of `/metrics` that follows the same value between reports (for alert rules) |
 *
 * Why data: the service folds the list (`OutboxHealth.checks`) into its
 * findings, derives `FindingName`, `Thresholds` and `defaultThresholds` from
 * it, validates the thresholds the list declares and reports one entry per
 * check (`HealthReport.checks`, printed by `outbox health --checks`). So a new
 * check is one entry in that list, plus its view when it reads something no
 * measure reads yet: no name union, threshold interface, report field or CLI
 * formatter to edit beside it.
 *
 * ```ts
 * // a check on a view of your own (its migration creates `app_outbox_lag`)
 * const lag = HealthCheck.measure({
 *   name: "lag",
 *   read: ({ sql }) =>
 *     sql`SELECT consumer, lag_seconds::float8 FROM app_outbox_lag`.pipe(HealthCheck.decodeRows("health.lag", LagRow)),
 *   rows: (rows) => rows
 * })
 * const ConsumerLag = HealthCheck.make({
 *   name: "ConsumerLag",
 *   measure: lag,
 *   thresholds: { consumerLagSeconds: HealthCheck.band({ warn: 60, critical: 600 }) },
 *   evaluate: (row, t) =>
 *     HealthCheck.judge(t.consumerLagSeconds, row.lagSeconds, row.consumer, (v) => `${row.consumer} is ${v} s behind`)
 * })
 * OutboxHealth.layer({ checks: [...OutboxHealth.checks, ConsumerLag] })
 * ```
 *
 * @since 0.1.0
 */
import { StoreError } from "@outbox/core/OutboxError"
import type { Ordering } from "@outbox/core/OutboxStore"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import type * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import { mapSqlError } from "./internal/storeError.ts"

// ---------------------------------------------------------------------------
// thresholds and verdicts
// ---------------------------------------------------------------------------

/**
 * A WARN and a CRITICAL bound; a value at or over a bound reaches its level.
 * An absent bound never fires, so a check can be silenced bound by bound.
 *
 * @category models
 * @since 0.1.0
 */
export interface Band {
  readonly warn?: number | undefined
  readonly critical?: number | undefined
}

/**
 * A threshold: a `Band`, or a single number whose meaning its check
 * documents (a bound, a minimum). Every one must be finite and >= 0, which
 * `OutboxHealth.make` checks for every threshold of its list.
 *
 * @category models
 * @since 0.1.0
 */
export type Threshold = Band | number

/**
 * Thresholds by name, as a check declares them (with their defaults).
 *
 * @category models
 * @since 0.1.0
 */
export interface ThresholdRecord {
  readonly [name: string]: Threshold
}

/**
 * Types a default as a `Band`, so that the derived `Thresholds` accepts an
 * override with only one of the bounds (an inferred `{ warn: 60 }` would
 * demand a `warn`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const band = (bounds: Band): Band => bounds

/**
 * What a check found on one row: the name is added by the fold (it is the
 * check's), so a check cannot report under another check's name.
 *
 * @category models
 * @since 0.1.0
 */
export interface Verdict {
  readonly level: "WARN" | "CRITICAL"
  /** What the finding is about: a table, a partition, a pid, a slot. */
  readonly subject: string
  readonly value: number
  readonly threshold: number
  readonly message: string
}

/**
 * A verdict with the name of the check that made it.
 *
 * @category models
 * @since 0.1.0
 */
export interface Finding<Name extends string = string> extends Verdict {
  readonly name: Name
}

/**
 * The verdict of most checks: `value` against a band, CRITICAL at or over
 * `critical`, else WARN at or over `warn`, else nothing.
 *
 * @category evaluation
 * @since 0.1.0
 */
export const judge = (
  bounds: Band,
  value: number,
  subject: string,
  message: (value: number) => string
): Verdict | undefined => {
  const hit = levelOf(bounds, value)
  return hit === undefined ? undefined : { level: hit.level, subject, value, threshold: hit.threshold, message: message(value) }
}

/**
 * The level a value reaches in a band, with the bound it crossed.
 *
 * @category evaluation
 * @since 0.1.0
 */
export const levelOf = (
  bounds: Band,
  value: number
): { readonly level: "WARN" | "CRITICAL"; readonly threshold: number } | undefined => {
  if (bounds.critical !== undefined && value >= bounds.critical) return { level: "CRITICAL", threshold: bounds.critical }
  if (bounds.warn !== undefined && value >= bounds.warn) return { level: "WARN", threshold: bounds.warn }
  return undefined
}

// ---------------------------------------------------------------------------
// measures
// ---------------------------------------------------------------------------

/**
 * What every measurement holds besides what its measures read: the
 * range-partitioned tables the report is about (`OutboxHealth.Options.tables`).
 *
 * @category models
 * @since 0.1.0
 */
export interface Base {
  readonly tables: ReadonlyArray<string>
}

/**
 * What a measure reads with.
 *
 * @category models
 * @since 0.1.0
 */
export interface MeasureContext extends Base {
  /** The client without name transforms: rows keep the views' column names (decode them with `decodeRows`). */
  readonly sql: SqlClient.SqlClient
  /** The outbox table (validated, unquoted; `Identifier.quote` it in SQL). */
  readonly table: string
  /**
   * The relay's per-key ordering (`OutboxHealth.Options.ordering`), or
   * `undefined` when it does not order: what a measure of ordering keys
   * (blocked keys) needs, since the database does not know the relay's
   * settings.
   */
  readonly ordering: Ordering | undefined
}

/**
 * One read of the database for `health`: `read` runs once per report, and
 * its fields (`A`) are merged into the report's measurements, so the checks
 * that name this measure share one query and one decoding. `rows` cuts the
 * measurements into what the checks judge, one verdict per row and check.
 *
 * Measures are told apart by identity: two checks share a read only when
 * they name the same measure value. Fields of `A` must not collide with
 * another measure's.
 *
 * @category models
 * @since 0.1.0
 */
export interface Measure<A extends object, Row> {
  /** Names the read in spans and errors. */
  readonly name: string
  readonly read: (context: MeasureContext) => Effect.Effect<A, StoreError>
  readonly rows: (measured: A & Base) => ReadonlyArray<Row>
}

/**
 * Builds a measure (the identity, for inference).
 *
 * @category constructors
 * @since 0.1.0
 */
export const measure = <A extends object, Row>(self: Measure<A, Row>): Measure<A, Row> => self

/**
 * Decodes the rows of a query with `row` (a `Schema`, usually a `Struct`
 * piped through `Schema.encodeKeys` from the view's snake_case columns) and
 * maps both failures to `StoreError` named `operation`: a row that does not
 * match (a view from an older migration) fails the report, the way a failed
 * query does, instead of turning into zeros.
 *
 * @category constructors
 * @since 0.1.0
 */
export const decodeRows = <A>(operation: string, row: Schema.Decoder<A>) => {
  const decode = Schema.decodeUnknownEffect(Schema.Array(row))
  const mapSql = mapSqlError(operation)
  return <R>(query: Effect.Effect<ReadonlyArray<unknown>, SqlError.SqlError, R>): Effect.Effect<ReadonlyArray<A>, StoreError, R> =>
    Effect.flatMap(mapSql(query), (rows) =>
      Effect.mapError(decode(rows), (error) =>
        new StoreError({
          operation,
          message: `${operation}: unexpected row: ${error.message}`,
          retryable: false,
          cause: error
        })))
}

/**
 * `decodeRows` for a query that returns exactly one row (an aggregate): any
 * other count is a `StoreError` rather than a report of zeros.
 *
 * @category constructors
 * @since 0.1.0
 */
export const decodeRow = <A>(operation: string, row: Schema.Decoder<A>) => {
  const rows = decodeRows(operation, row)
  return <R>(query: Effect.Effect<ReadonlyArray<unknown>, SqlError.SqlError, R>): Effect.Effect<A, StoreError, R> =>
    Effect.flatMap(rows(query), (decoded) =>
      decoded.length === 1
        ? Effect.succeed(decoded[0]!)
        : Effect.fail(
          new StoreError({ operation, message: `${operation}: expected one row, got ${decoded.length}`, retryable: false })
        ))
}

// ---------------------------------------------------------------------------
// checks
// ---------------------------------------------------------------------------

/**
 * A health check (see the module's header).
 *
 * @category models
 * @since 0.1.0
 */
export interface HealthCheck<Name extends string, Row, T extends ThresholdRecord> {
  /** The name of its findings, unique in a list. */
  readonly name: Name
  /** Its thresholds with their defaults (a threshold named by several checks takes the first default). */
  readonly thresholds: T
  readonly measure: Measure<any, Row>
  /** One row → a verdict or nothing. Pure. */
  readonly evaluate: (row: Row, thresholds: T) => Verdict | undefined
  /** Not evaluated on a row where the earlier check named here (same measure) found something. */
  readonly unless?: string | undefined
  /** The metric of `/metrics` that follows this check's value between reports, if any. */
  readonly gauge?: string | undefined
}

/**
 * Any check, whatever its row and thresholds.
 *
 * @category models
 * @since 0.1.0
 */
export type Any = HealthCheck<string, any, any>

/**
 * Builds a check (the identity, for inference: the name stays a literal, and
 * `evaluate`'s row and thresholds are typed from `measure` and `thresholds`;
 * `measure` is restated as a `Measure<A, Row>` because `Row` is not inferred
 * through the interface's `Measure<any, Row>`).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = <const Name extends string, A extends object, Row, T extends ThresholdRecord>(
  self: HealthCheck<Name, Row, T> & { readonly measure: Measure<A, Row> }
): HealthCheck<Name, Row, T> => self

/**
 * The measures of some checks, each once, in the order the list first names
 * them (the order the findings come in).
 *
 * @category evaluation
 * @since 0.1.0
 */
export const measuresOf = (checks: ReadonlyArray<Any>): ReadonlyArray<Measure<any, any>> => {
  const measures: Array<Measure<any, any>> = []
  for (const check of checks) if (!measures.includes(check.measure)) measures.push(check.measure)
  return measures
}

/**
 * The default thresholds of some checks, in list order.
 *
 * @category evaluation
 * @since 0.1.0
 */
export const defaultsOf = (checks: ReadonlyArray<Any>): ThresholdRecord => {
  const defaults: Record<string, Threshold> = {}
  for (const check of checks) {
    for (const [name, value] of Object.entries(check.thresholds as ThresholdRecord)) {
      if (!(name in defaults)) defaults[name] = value
    }
  }
  return defaults
}

/**
 * The list folded into findings (pure): for each measure, for each of its
 * rows, each of its checks in list order. Everything a check reads is in
 * `measured` (every measure's fields plus `tables`) and `thresholds`.
 *
 * @category evaluation
 * @since 0.1.0
 */
export const evaluate = <Name extends string>(
  checks: ReadonlyArray<HealthCheck<Name, any, any>>,
  measured: Base,
  thresholds: ThresholdRecord
): ReadonlyArray<Finding<Name>> => {
  const findings: Array<Finding<Name>> = []
  for (const m of measuresOf(checks)) {
    const judging = checks.filter((check) => check.measure === m)
    for (const row of m.rows(measured)) {
      const found = new Set<string>()
      for (const check of judging) {
        if (check.unless !== undefined && found.has(check.unless)) continue
        const verdict = check.evaluate(row, thresholds)
        if (verdict !== undefined) {
          findings.push({ name: check.name, ...verdict })
          found.add(check.name)
        }
      }
    }
  }
  return findings
}
