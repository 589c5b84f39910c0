/**
 * Migration `0011_stats_due_age`: `outbox_stats.oldest_pending_at` (and
 * `oldest_pending_age_seconds`) measured from when the oldest row due now
 * became due, not from the oldest `created_at` of every PENDING or FAILED
 * row: an event published last week for next week read as a week-old
 * backlog, and the backlog-age check of `outbox health` raised a false
 * alarm. The view is replaced with the same columns.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import type * as OutboxTables from "../OutboxTables.ts"
import * as HealthViews from "./0004_health_views.ts"

/**
 * The migration for `tables`.
 *
 * @internal
 */
export const migration = (
  tables: OutboxTables.OutboxTables
): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.unsafe(HealthViews.statsView(HealthViews.tableReference(tables)))
    yield* sql.unsafe(HealthViews.statsComment)
  })
