/**
 * How a row becomes one line of an archive (`PartitionArchive`), and an
 * order-independent digest of such lines that PostgreSQL and JavaScript
 * compute alike.
 *
 * Archive retention (`PartitionManager`) needs the digest to drop a
 * partition only once it is sure the archive holds exactly the partition's
 * rows: it digests the archive it has read back (here, in JavaScript) and the
 * detached partition (in SQL, server-side), and keeps the partition when they
 * differ. A count alone would miss a row changed in between, and a checksum
 * of the archive file depends on row order, which a sequential scan does not
 * fix.
 *
 * @internal
 */
import { createHash } from "node:crypto"

const NEWLINE = 0x0a

/**
 * SQL: the archive line of the row aliased `alias`, its `row_to_json` text
 * with raw newlines turned into spaces. In JSON a raw newline can only be
 * insignificant whitespace (inside strings it is escaped), but `json`
 * columns keep their text as written, so a pretty-printed `json` value would
 * otherwise split one row over several lines.
 *
 * @internal
 */
export const lineOf = (alias: string): string => `replace(row_to_json(${alias})::text, E'\\n', ' ')`

/**
 * SQL: one row, one column `digest` — the {@link digestOfLines} of the
 * table's rows as archive lines. `table` must already be quoted.
 *
 * @internal
 */
export const digestQuery = (table: string): string =>
  `SELECT count(*)::text || ':' || coalesce(sum(('x' || left(md5(convert_to(${
    lineOf("t")
  }, 'UTF8')), 16))::bit(64)::bigint), 0)::text AS digest FROM ${table} AS t`

/**
 * The digest of newline-terminated lines: `<count>:<sum>`, the sum of the
 * first 64 bits of each line's MD5 read as a signed integer. A sum, so the
 * order of the lines does not matter; MD5 is only a spreading function here,
 * not a defence against forgery (the archive's SHA-256 is).
 *
 * @internal
 */
export const digestOfLines = (data: Uint8Array): string => {
  let count = 0
  let sum = 0n
  let start = 0
  for (let at = data.indexOf(NEWLINE); at !== -1; at = data.indexOf(NEWLINE, start)) {
    const hex = createHash("md5").update(data.subarray(start, at)).digest("hex").slice(0, 16)
    sum += BigInt.asIntN(64, BigInt(`0x${hex}`))
    count++
    start = at + 1
  }
  return `${count}:${sum}`
}
