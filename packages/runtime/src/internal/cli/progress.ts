/**
 * Progress lines for long commands: on a terminal only (stderr is a TTY),
 * never with `--json` or when the output is piped.
 *
 * @internal
 */
import * as Effect from "effect/Effect"

/**
 * A progress reporter: `report(text)` rewrites the current stderr line,
 * `done` ends it. Both do nothing off a terminal or with `asJson`.
 *
 * @internal
 */
export const make = (asJson: boolean) => {
  const on = !asJson && process.stderr.isTTY === true
  return {
    report: (text: string): Effect.Effect<void> => on ? Effect.sync(() => process.stderr.write(`\r${text}`)) : Effect.void,
    done: on ? Effect.sync(() => process.stderr.write("\n")) : Effect.void
  }
}
