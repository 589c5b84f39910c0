/**
 * Migration `0006_lease_claimed_at`: `claimed_at` on the outbox (stamped by
 * each claim, kept through heartbeats) and `outbox_stats.lease_held_seconds`
 * over it (the lease-held gauge).
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import type * as OutboxTables from "../OutboxTables.ts"
import * as CreateOutbox from "./0001_create_outbox.ts"
import * as HealthViews from "./0004_health_views.ts"

/**
 * The migration for `tables` (a table created by 0001 since this column
 * existed already has it: catalog-only and idempotent).
 *
 * @internal
 */
export const migration = (
  tables: OutboxTables.OutboxTables
): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const t = HealthViews.tableReference(tables)
    yield* sql.unsafe(CreateOutbox.claimedAtColumn(t))
    yield* sql.unsafe(CreateOutbox.claimedAtComment(t))
    yield* sql.unsafe(HealthViews.statsView(t))
    yield* sql.unsafe(HealthViews.statsComment)
  })
