/**
 * Maps `SqlError` to the port's `StoreError` at the store boundary.
 *
 * @internal
 */
import { StoreError } from "@outbox/core/OutboxError"
import { fromSql, type Fields, mapSql } from "./sqlError.ts"

const make = (fields: Fields) => new StoreError(fields)

/** @internal */
export const fromSqlError = fromSql(make)

/** @internal */
export const mapSqlError = mapSql(make)
