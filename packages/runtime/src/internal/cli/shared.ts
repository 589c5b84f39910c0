/**
 * What every `outbox` command shares, in one place so that they all parse
 * `--json` alike, print JSON alike (bigints as strings) and draw the same
 * plain-text tables: `json`, `print`, `formatTable`, `formatBytes` and
 * `duration`.
 *
 * @internal
 */
import * as Console from "effect/Console"
import type * as Effect from "effect/Effect"
import * as Flag from "effect/cli/Flag"

/**
 * The `--json` flag (default off). `instead` names what it replaces in the
 * help text: "a table" for commands that print tables, "text" for the others.
 *
 * @internal
 */
export const json = (instead: "a table" | "text"): Flag.Flag<boolean> =>
  Flag.Boolean("json").pipe(Flag.withDefault(false), Flag.withDescription(`print JSON instead of ${instead}`))

/** bigints (event ids, positions) have no JSON form: they print as strings. */
const bigintAsString = (_: string, value: unknown) => (typeof value === "bigint" ? String(value) : value)

/**
 * Prints `value` as indented JSON on stdout, the whole of a `--json` run's
 * output: bigints print as strings, dates as ISO-8601.
 *
 * @internal
 */
export const print = (value: unknown): Effect.Effect<void> => Console.log(JSON.stringify(value, bigintAsString, 2))

/**
 * A plain-text table: a header, a dashed rule, one line per row, columns two
 * spaces apart and trailing blanks trimmed. `right` lists the columns aligned
 * right (numbers, sizes); the others are aligned left.
 *
 * @internal
 */
export const formatTable = (
  headers: ReadonlyArray<string>,
  rows: ReadonlyArray<ReadonlyArray<string>>,
  right: ReadonlyArray<number> = []
): string => {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((c, i) => (right.includes(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ").trimEnd()
  return [line(headers), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n")
}

/**
 * A byte count for people: `512 B`, `1.5 kB`, `12 MB` (powers of 1024).
 *
 * @internal
 */
export const formatBytes = (bytes: number): string => {
  if (bytes < 1024) return `${bytes} B`
  const units = ["kB", "MB", "GB", "TB"]
  let value = bytes / 1024
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`
}

/**
 * A duration for people, from seconds: `0s`, `45s`, `12min`, `3.5h`, `2.0d`.
 *
 * @internal
 */
export const duration = (seconds: number): string => {
  if (seconds < 1) return "0s"
  if (seconds < 120) return `${Math.round(seconds)}s`
  if (seconds < 7200) return `${Math.round(seconds / 60)}min`
  if (seconds < 172_800) return `${(seconds / 3600).toFixed(1)}h`
  return `${(seconds / 86_400).toFixed(1)}d`
}
