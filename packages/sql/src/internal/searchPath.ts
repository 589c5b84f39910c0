/**
 * `SET search_path` pinned to the current schema, for `SECURITY DEFINER`
 * functions (so a caller's search path cannot substitute objects).
 */
import * as Effect from "effect/Effect"
import * as SqlClient from "effect/sql/SqlClient"
import * as Identifier from "../Identifier.ts"

/** The current schema and the `SET search_path = pg_catalog, <schema>, pg_temp` clause. */
export const pinnedSearchPath = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  Effect.map(sql<{ schema: string }>`SELECT current_schema() AS schema`, ([row]) => ({
    schema: row!.schema,
    pinned: `SET search_path = pg_catalog, ${Identifier.quote(row!.schema)}, pg_temp`
  })))
