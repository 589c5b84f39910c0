/**
 * Entry point of `npx outbox`: the command line of `Cli.ts` on Node, with
 * the database from `DATABASE_URL` (read only when a command runs: `--help`
 * needs none). A failure prints one line to stderr
 * (`outbox: <Tag>: <message>`) and exits with status 1, or with the
 * error's `Runtime.errorExitCode` (`outbox health`: 1 WARN, 2 CRITICAL).
 *
 * @since 0.1.0
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Runtime from "effect/Runtime"
import * as Cli from "./Cli.ts"
import * as OutboxLive from "./OutboxLive.ts"

const describe = (error: unknown): string => {
  if (typeof error === "object" && error !== null) {
    const tag = "_tag" in error ? `${String(error._tag)}: ` : ""
    return `${tag}${"message" in error ? String(error.message) : String(error)}`
  }
  return String(error)
}

Cli.runWithDatabase(process.argv.slice(2), OutboxLive.layerPg).pipe(
  Effect.provide(NodeServices.layer),
  Effect.tapCause((cause) =>
    // an error that printed its own report (`health`) carries its exit code and adds nothing to stderr
    Cause.hasInterruptsOnly(cause) || !Runtime.getErrorReported(Cause.squash(cause)) ? Effect.void : Console.error(`outbox: ${describe(Cause.squash(cause))}`)
  ),
  NodeRuntime.runMain({ disableErrorReporting: true })
)
