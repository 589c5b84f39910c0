/**
 * `outbox keys blocked [--hold] [--limit N] [--json]`: the ordering keys
 * whose later events wait for their head (`@outbox/sql/BlockedKeys`), under
 * per-key ordering (`OUTBOX_ORDERING=key`): the head's id, status, retries
 * and last error, when it becomes due, how long it has existed (the table
 * records no first failure: the head's age is an upper bound of how long
 * the key has been stuck), and how many events are queued behind it; the
 * oldest heads first.
 *
 * Keys held by a dead letter are included with `--hold`, or when the
 * environment's relay runs `OUTBOX_ORDERING_DEAD_LETTER=hold`: the database
 * does not know the relay's setting. An inspection, not a probe: it exits
 * 0 whatever it finds (`outbox health` judges blocked keys).
 *
 * @internal
 */
import type { Ordering } from "@outbox/core/OutboxStore"
import * as BlockedKeys from "@outbox/sql/BlockedKeys"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import * as Config from "effect/Config"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as OutboxEnv from "../../OutboxEnv.ts"
import { duration, formatTable, json as jsonFlag, print } from "./shared.ts"

/**
 * The per-key ordering of a relay started with this environment
 * (`OUTBOX_ORDERING`, `OUTBOX_ORDERING_DEAD_LETTER`, read by `OutboxEnv`),
 * `undefined` when it does not order by key: what `keys blocked` and
 * `health` assume the relay runs.
 *
 * @internal
 */
export const relayOrdering: Config.Config<Ordering | undefined> = OutboxEnv.relay.pipe(
  Config.map((relay) => (relay.ordering === "key" ? { deadLetter: relay.orderingDeadLetter } : undefined))
)

const oneLine = (text: string | null, max = 60) => {
  if (text === null) return "-"
  const flat = text.replace(/\s+/g, " ").trim()
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat
}

const countsLine = (counts: BlockedKeys.Counts, hold: boolean) => {
  const total = counts.backoff + counts.scheduled + counts.deadLetterHeld
  const parts = [`backoff ${counts.backoff}`, `scheduled ${counts.scheduled}`, ...(hold ? [`dead_letter_held ${counts.deadLetterHeld}`] : [])]
  return `${total} blocked key(s): ${parts.join(", ")}`
}

/**
 * The text table of some blocked keys (also printed by `outbox health`).
 *
 * @internal
 */
export const formatBlockedKeys = (keys: ReadonlyArray<BlockedKeys.BlockedKey>): string =>
  formatTable(
    ["key", "reason", "head", "status", "retries", "head age", "until", "behind", "last error"],
    keys.map((k) => [
      oneLine(k.key, 40),
      k.reason,
      k.headId,
      k.status,
      `${k.retryCount}/${k.maxRetries}`,
      duration(k.headAgeSeconds),
      k.availableAt === null ? "a redrive" : k.availableAt.toISOString(),
      `${k.queuedBehind}${k.queuedBehind >= BlockedKeys.queuedBehindCap ? "+" : ""}`,
      oneLine(k.lastError)
    ]),
    [2, 4, 5, 7]
  )

const blocked = Command.make("blocked", {
  hold: Flag.Boolean("hold").pipe(
    Flag.withDefault(false),
    Flag.withDescription("also the keys held by a dead letter (the default when OUTBOX_ORDERING_DEAD_LETTER=hold)")
  ),
  limit: Flag.Int("limit").pipe(Flag.withDefault(50), Flag.withDescription("at most this many keys, the oldest heads first (default 50)")),
  json: jsonFlag("a table")
}, (options) =>
  Effect.gen(function*() {
    const ordering = yield* relayOrdering
    const hold = options.hold || ordering?.deadLetter === "hold"
    const service = yield* BlockedKeys.BlockedKeys
    const keys = yield* service.list({ hold, limit: options.limit })
    const counts = yield* service.count({ hold })
    if (options.json) return yield* print({ ordering: ordering ?? null, hold, counts, keys })
    const total = counts.backoff + counts.scheduled + counts.deadLetterHeld
    if (keys.length > 0) yield* Console.log(`${formatBlockedKeys(keys)}\n`)
    yield* Console.log(
      `${countsLine(counts, hold)}${keys.length < total ? ` (showing ${keys.length}, the oldest heads first)` : ""}${
        hold ? "" : "\n(keys held by a dead letter are listed with --hold)"
      }`
    )
    if (ordering === undefined) {
      yield* Console.log("note: OUTBOX_ORDERING is not key in this environment: such a relay delivers these keys' later events anyway")
    }
  }).pipe(Effect.provide(BlockedKeys.layerConfig))).pipe(
    Command.withDescription("ordering keys whose later events wait for their head: backoff, schedule, or (--hold) a dead letter")
  )

/**
 * The `keys` command.
 *
 * @internal
 */
export const keys = Command.make("keys").pipe(
  Command.withDescription("per-key ordering (OUTBOX_ORDERING=key): the blocked keys"),
  Command.withSubcommands([blocked])
)
