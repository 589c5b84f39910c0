/**
 * Migration `0009_tenant`: the tenant of tenant-fair claiming
 * (`OUTBOX_FAIRNESS=tenant`) and its index.
 *
 * **The tenant.** A nullable `tenant text` column (catalog-only on a table
 * of any size): an explicit tenant, or NULL for the default, the metadata
 * field `tenant` when it is a JSON string, else `''` (`effectiveTenant`,
 * which the index and the claim compute). So producers that already put a
 * tenant in the metadata need no change, and the rows of before need no
 * backfill.
 *
 * **Index**: the claimable rows by tenant and id, partial (PENDING and
 * FAILED rows only), in byte order (`COLLATE "C"`, the order the in-memory
 * store and JavaScript use): the fair claim walks the tenants with work
 * along it (one index descent per tenant) and takes each tenant's oldest
 * rows from it. What it costs: one more index entry per pending row, written
 * at insert and removed when the row leaves PENDING/FAILED.
 *
 * @internal
 */
import * as Identifier from "../Identifier.ts"
import type * as OutboxTables from "../OutboxTables.ts"
import { fromStatements } from "./statements.ts"

/**
 * A row's tenant as SQL (`alias` the row's table alias; none: the bare
 * columns, as in the index definition): the index's expression, which the
 * fair claim must use verbatim.
 *
 * @internal
 */
export const effectiveTenant = (alias?: string): string => {
  const a = alias === undefined ? "" : `${alias}.`
  return `(coalesce(${a}tenant, CASE WHEN jsonb_typeof(${a}metadata -> 'tenant') = 'string' THEN ${a}metadata ->> 'tenant' END, '') COLLATE "C")`
}

/**
 * The statements for `tables.outbox` (idempotent).
 *
 * @internal
 */
export const statements = (tables: OutboxTables.OutboxTables): ReadonlyArray<string> => {
  const t = Identifier.quote(tables.outbox)
  return [
    `ALTER TABLE ${t} ADD COLUMN IF NOT EXISTS tenant text`,
    `COMMENT ON COLUMN ${t}.tenant IS
     'Tenant of OUTBOX_FAIRNESS=tenant; NULL: the metadata field tenant (a JSON string), else the empty tenant'`,
    `CREATE INDEX IF NOT EXISTS ${Identifier.quote(tables.tenantIndex)} ON ${t} (${effectiveTenant()}, id)
     WHERE status IN ('PENDING', 'FAILED')`
  ]
}

/**
 * The migration for `tables`.
 *
 * @internal
 */
export const migration = fromStatements(statements)
