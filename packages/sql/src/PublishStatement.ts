/**
 * The one INSERT that writes published events, as plain text and values
 * (`$1`, `$2`, … placeholders). `PgOutboxStore` runs it through
 * `@effect/sql-pg`; `@outbox/client` runs it through whatever the caller's
 * transaction is (`pg`, Knex, Drizzle, Kysely, Prisma). One builder, so a
 * row written by any of them is the same row.
 *
 * A single event, the common case, is one `VALUES` row: six scalar
 * parameters cost less to encode and to execute than six one-element arrays
 * through `unnest` (measured in `npm run bench`'s publish phase), and its
 * text is built once per table. A batch travels as six array parameters
 * through `unnest ... WITH ORDINALITY`: one statement text, so one prepared
 * statement, for any batch size (a 100-row `VALUES` list is 600 parameters
 * and a statement of its own per size). `RETURNING` follows input order.
 * An event without `maxRetries` gets the column default, which only
 * `VALUES (..., DEFAULT)` can say.
 *
 * @since 0.1.0
 */
import type { ValidEvent } from "@outbox/core/OutboxEvent"

/**
 * A statement ready for any PostgreSQL driver: `text` with `$n`
 * placeholders and their `values` in order.
 *
 * @category models
 * @since 0.1.0
 */
export interface Statement {
  readonly text: string
  readonly values: ReadonlyArray<unknown>
}

/**
 * The columns every publish returns.
 *
 * @category models
 * @since 0.1.0
 */
export const returning = "id, tracking_id, created_at"

const insertColumns = "(aggregate_type, aggregate_id, event_type, payload, metadata, max_retries)"

/** The one-event statement's text, by quoted table and returned columns. */
const singleText = new Map<string, Map<string, string>>()

/**
 * The INSERT of `events` into `table` (already validated and quoted, see
 * `Identifier`), returning `returningColumns` (default `returning`), with
 * placeholders numbered from `$1`. `events` must not be empty.
 *
 * @category constructors
 * @since 0.1.0
 */
export const insert = (
  quotedTable: string,
  events: ReadonlyArray<ValidEvent>,
  returningColumns: string = returning
): Statement => {
  if (events.length === 1) {
    const e = events[0]!
    if (e.maxRetries !== undefined && e.schedule === undefined && e.orderingKey === undefined && e.tenant === undefined) {
      // by table, then by returned columns: no key string built per call
      let byReturning = singleText.get(quotedTable)
      if (byReturning === undefined) singleText.set(quotedTable, byReturning = new Map())
      let text = byReturning.get(returningColumns)
      if (text === undefined) {
        text = `INSERT INTO ${quotedTable} ${insertColumns} VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6) RETURNING ${returningColumns}`
        byReturning.set(returningColumns, text)
      }
      return { text, values: [e.aggregateType, e.aggregateId, e.eventType, e.payloadJson, e.metadataJson, e.maxRetries] }
    }
  }
  const n = events.length
  const types: Array<string> = new Array(n)
  const ids: Array<string> = new Array(n)
  const eventTypes: Array<string> = new Array(n)
  const payloads: Array<string> = new Array(n)
  const metadata: Array<string> = new Array(n)
  const maxRetries: Array<number> = new Array(n)
  for (let i = 0; i < n; i++) {
    const e = events[i]!
    if (e.maxRetries === undefined || e.schedule !== undefined || e.orderingKey !== undefined || e.tenant !== undefined) {
      return valuesList(quotedTable, events, returningColumns)
    }
    types[i] = e.aggregateType
    ids[i] = e.aggregateId
    eventTypes[i] = e.eventType
    payloads[i] = e.payloadJson
    metadata[i] = e.metadataJson
    maxRetries[i] = e.maxRetries
  }
  return {
    text: `INSERT INTO ${quotedTable} ${insertColumns}
      SELECT t, a, e, p::jsonb, m::jsonb, r
      FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[]) WITH ORDINALITY AS u(t, a, e, p, m, r, o)
      ORDER BY o
      RETURNING ${returningColumns}`,
    values: [types, ids, eventTypes, payloads, metadata, maxRetries]
  }
}

/**
 * `VALUES (...), (...)`, for batches where some event takes the column
 * default of `max_retries`, is scheduled (`available_at`: a time, or the
 * transaction's `now()` plus a delay, so that a delay is measured on the
 * server's clock like every lease and backoff) or has an explicit ordering
 * key (`ordering_key`) or tenant (`tenant`); NULL there means the default.
 */
const valuesList = (quotedTable: string, events: ReadonlyArray<ValidEvent>, returningColumns: string): Statement => {
  const values: Array<unknown> = []
  const scheduled = events.some((e) => e.schedule !== undefined)
  const keyed = events.some((e) => e.orderingKey !== undefined)
  const tenanted = events.some((e) => e.tenant !== undefined)
  const rows = events.map((e) => {
    const base = values.length
    values.push(e.aggregateType, e.aggregateId, e.eventType, e.payloadJson, e.metadataJson)
    let retries = "DEFAULT"
    if (e.maxRetries !== undefined) {
      values.push(e.maxRetries)
      retries = `$${values.length}`
    }
    let availableAt = ""
    if (scheduled) {
      if (e.schedule === undefined) availableAt = ", NULL"
      else if ("at" in e.schedule) {
        values.push(e.schedule.at.toISOString())
        availableAt = `, $${values.length}::timestamptz`
      } else {
        values.push(e.schedule.delayMillis)
        availableAt = `, now() + $${values.length}::float8 * interval '1 millisecond'`
      }
    }
    /** `, $n` with `value` pushed, `, NULL` (the column's default) without one, nothing when no event has the column. */
    const optional = (present: boolean, value: string | undefined) => {
      if (!present) return ""
      if (value === undefined) return ", NULL"
      values.push(value)
      return `, $${values.length}`
    }
    const orderingKey = optional(keyed, e.orderingKey)
    const tenant = optional(tenanted, e.tenant)
    return `($${base + 1}, $${base + 2}, $${base + 3}, $${base + 4}::jsonb, $${base + 5}::jsonb, ${retries}${availableAt}${orderingKey}${tenant})`
  })
  const columns = `${insertColumns.slice(0, -1)}${scheduled ? ", available_at" : ""}${keyed ? ", ordering_key" : ""}${
    tenanted ? ", tenant" : ""
  })`
  return { text: `INSERT INTO ${quotedTable} ${columns} VALUES ${rows.join(", ")} RETURNING ${returningColumns}`, values }
}

/**
 * The row `insert` returns, as the drivers hand it back: `id` is a bigint
 * (Prisma), a string (`pg`, Knex, Drizzle, Kysely without a bigint parser)
 * or a number.
 *
 * @category models
 * @since 0.1.0
 */
export interface ReturnedRow {
  readonly id: bigint | string | number
  readonly tracking_id: string
  readonly created_at: Date | string
}

/**
 * A returned row as `PublishedEvent`, whichever driver read it.
 *
 * @category decoding
 * @since 0.1.0
 */
export const toPublished = (row: ReturnedRow): { readonly id: bigint; readonly trackingId: string; readonly createdAt: Date } => ({
  id: typeof row.id === "bigint" ? row.id : BigInt(row.id),
  trackingId: row.tracking_id,
  createdAt: row.created_at instanceof Date ? row.created_at : new Date(row.created_at)
})
