/**
 * Entry point of `npx outbox`: the command line of `Cli.ts` on Node, with
 * the database from `DATABASE_URL`. A failure prints one line to stderr
 * (`outbox: <Tag>: <message>`) and exits with status 1.
 *
 * @since 0.1.0
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Cli from "./Cli.ts"
import * as OutboxLive from "./OutboxLive.ts"

const describe = (error: unknown): string => {
  if (typeof error === "object" && error !== null) {
    const tag = "_tag" in error ? `${String(error._tag)}: ` : ""
    return `${tag}${"message" in error ? String(error.message) : String(error)}`
  }
  return String(error)
}

Cli.run(process.argv.slice(2)).pipe(
  Effect.provide(OutboxLive.layerPg),
  Effect.provide(NodeServices.layer),
  Effect.tapCause((cause) =>
    Cause.hasInterruptsOnly(cause) ? Effect.void : Console.error(`outbox: ${describe(Cause.squash(cause))}`)
  ),
  NodeRuntime.runMain({ disableErrorReporting: true })
)
