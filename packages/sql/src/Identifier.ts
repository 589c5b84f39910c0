/**
 * SQL identifiers (schemas, tables, columns, partitions) that reach DDL.
 *
 * DDL cannot take identifiers as parameters, so every name that ends up in a
 * `CREATE` / `ALTER` / `DROP` statement goes through here: it is validated
 * (PostgreSQL's 63-byte limit, no NUL, not empty) and always double-quoted,
 * never interpolated raw. Names derived from data (tenant ids, dates) are
 * built with {@link derive}, which keeps them readable when they are simple
 * and falls back to a hash suffix when they are not, so a hostile value can
 * never produce SQL.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { createHash } from "node:crypto"

/**
 * A name refused as an SQL identifier.
 *
 * @category errors
 * @since 0.1.0
 */
export class InvalidIdentifier extends Schema.TaggedError<InvalidIdentifier>("@outbox/sql/InvalidIdentifier")("InvalidIdentifier", {
  /** Which kind of name it was (table, column, tenant id, ...). */
  kind: Schema.String,
  /** The value refused (truncated to 80 characters). */
  value: Schema.String,
  /** Why. */
  reason: Schema.Literals(["Empty", "TooLong", "InvalidCharacter"])
}) {
  override get message(): string {
    const why = this.reason === "Empty" ? "is empty" : this.reason === "TooLong"
      ? "is longer than PostgreSQL's 63-byte identifier limit"
      : "contains a character that is not allowed here"
    return `invalid ${this.kind} ${JSON.stringify(this.value)}: it ${why}`
  }
}

/** PostgreSQL truncates identifiers past NAMEDATALEN - 1 bytes. */
const MAX_BYTES = 63

const refuse = (kind: string, value: string, reason: InvalidIdentifier["reason"]) =>
  new InvalidIdentifier({ kind, value: value.length > 80 ? `${value.slice(0, 77)}...` : value, reason })

/**
 * A plain identifier: lower-case ASCII letters, digits and `_`, starting with
 * a letter or `_`, at most 63 bytes. This is what the library accepts for
 * names a user configures (tables, columns, schemas).
 *
 * @category validation
 * @since 0.1.0
 */
export const validate = (value: string, kind = "identifier"): Effect.Effect<string, InvalidIdentifier> => {
  if (value.length === 0) return Effect.fail(refuse(kind, value, "Empty"))
  if (Buffer.byteLength(value, "utf8") > MAX_BYTES) return Effect.fail(refuse(kind, value, "TooLong"))
  if (!/^[a-z_][a-z0-9_]*$/.test(value)) return Effect.fail(refuse(kind, value, "InvalidCharacter"))
  return Effect.succeed(value)
}

/**
 * Validates an optionally schema-qualified name (`table` or `schema.table`).
 *
 * @category validation
 * @since 0.1.0
 */
export const validateQualified = (
  value: string,
  kind = "table"
): Effect.Effect<{ readonly schema: string | undefined; readonly name: string }, InvalidIdentifier> => {
  const parts = value.split(".")
  if (parts.length > 2) return Effect.fail(refuse(kind, value, "InvalidCharacter"))
  if (parts.length === 1) return Effect.map(validate(value, kind), (name) => ({ schema: undefined, name }))
  return Effect.zipWith(validate(parts[0]!, `${kind} schema`), validate(parts[1]!, kind), (schema, name) => ({ schema, name }))
}

/**
 * Double-quotes one identifier for DDL. Embedded quotes are doubled, so the
 * result is always exactly one identifier whatever the input.
 *
 * @category quoting
 * @since 0.1.0
 */
export const quote = (name: string): string => `"${name.replaceAll("\"", "\"\"")}"`

/**
 * A SQL string literal of `value` (quotes doubled), for DDL that takes a
 * name as text (`format(...)` in a `DO` block, `regclass` casts), where a
 * parameter cannot go.
 *
 * @category encoding
 * @since 0.1.0
 */
export const literal = (value: string): string => `'${value.replaceAll("'", "''")}'`

/**
 * Quotes a possibly schema-qualified name.
 *
 * @category quoting
 * @since 0.1.0
 */
export const quoteQualified = (name: { readonly schema: string | undefined; readonly name: string }): string =>
  name.schema === undefined ? quote(name.name) : `${quote(name.schema)}.${quote(name.name)}`

/**
 * Derives an identifier from a prefix (already valid) and a data value (a
 * tenant id, say). Simple values (`[a-z0-9_]`, short enough) are kept as is
 * (`events_t_acme`); anything else becomes a sanitised head plus an 8-hex-digit
 * SHA-256 suffix (`events_t_acme_corp_3f2a9c1b`), so distinct values get
 * distinct names and the result is always a valid plain identifier.
 *
 * @category naming
 * @since 0.1.0
 */
export const derive = (prefix: string, value: string, suffix = ""): string => {
  const budget = MAX_BYTES - prefix.length - suffix.length
  if (/^[a-z0-9_]+$/.test(value) && value.length <= budget) return `${prefix}${value}${suffix}`
  const hash = createHash("sha256").update(value, "utf8").digest("hex").slice(0, 8)
  const head = value.toLowerCase().replace(/[^a-z0-9]+/g, "_").replace(/^_+|_+$/g, "").slice(0, Math.max(0, budget - 9))
  return `${prefix}${head === "" ? "" : `${head}_`}${hash}${suffix}`
}
