/**
 * A migration made of plain statements for one set of tables, run in order:
 * the shape of every migration that only issues DDL.
 *
 * @internal
 */
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"
import type * as SqlError from "effect/sql/SqlError"
import type * as OutboxTables from "../OutboxTables.ts"

/**
 * The migration running `statements(tables)` one after the other.
 *
 * @internal
 */
export const fromStatements = (statements: (tables: OutboxTables.OutboxTables) => ReadonlyArray<string>) =>
(
  tables: OutboxTables.OutboxTables
): Effect.Effect<void, SqlError.SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    for (const statement of statements(tables)) yield* sql.unsafe(statement)
  })
