/**
 * `outbox roles grant`: the least-privilege role set of
 * `@outbox/sql/OutboxRoles`.
 *
 * `outbox roles grant [--producer R] [--relay R] [--operator R] [--auditor R]
 * [--table T] [--schema S] [--producer-returning] [--create [--login]]
 * [--print] [--json]`: run as the owner of the outbox objects (the role that
 * ran `outbox migrate`). `--print` shows the statements without running them.
 *
 * @internal
 */
import * as OutboxRoles from "@outbox/sql/OutboxRoles"
import * as Command from "effect/cli/Command"
import * as Flag from "effect/cli/Flag"
import * as Console from "effect/Console"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { json as jsonFlag, print } from "./shared.ts"

const role = (kind: string, what: string) =>
  Flag.String(kind).pipe(Flag.optional, Flag.withDescription(`the ${kind} role: ${what}`))

const grant = Command.make("grant", {
  producer: role("producer", "INSERT into the outbox only"),
  relay: role("relay", "claim/complete/retry/reap, the inbox"),
  operator: role("operator", "dead-letter redrive"),
  auditor: role("auditor", "read the audit trail, the redrive log and the compliance views"),
  table: Flag.String("table").pipe(Flag.withDefault("outbox")),
  schema: Flag.String("schema").pipe(Flag.withDefault("public")),
  producerReturning: Flag.Boolean("producer-returning").pipe(
    Flag.withDefault(false),
    Flag.withDescription("let the producer read back id, tracking_id, created_at (the library's publish needs it)")
  ),
  create: Flag.Boolean("create").pipe(Flag.withDefault(false), Flag.withDescription("create the roles that do not exist")),
  login: Flag.Boolean("login").pipe(Flag.withDefault(false), Flag.withDescription("with --create: LOGIN roles")),
  print: Flag.Boolean("print").pipe(Flag.withDefault(false), Flag.withDescription("print the statements, change nothing")),
  json: jsonFlag("text")
}, (options) =>
  Effect.gen(function*() {
    const roles: OutboxRoles.RoleSet = {
      producer: Option.getOrUndefined(options.producer),
      relay: Option.getOrUndefined(options.relay),
      operator: Option.getOrUndefined(options.operator),
      auditor: Option.getOrUndefined(options.auditor)
    }
    const grantOptions = { roles, table: options.table, schema: options.schema, producerReturning: options.producerReturning }
    if (options.print) {
      const statements = yield* OutboxRoles.plan(grantOptions)
      if (options.json) return yield* print({ statements })
      return yield* Console.log(statements.map((s) => `${s};`).join("\n"))
    }
    const created = options.create ? yield* OutboxRoles.createRoles(roles, { login: options.login }) : []
    const statements = yield* OutboxRoles.grant(grantOptions)
    if (options.json) return yield* print({ created, statements })
    if (created.length > 0) yield* Console.log(`created: ${created.join(", ")}`)
    yield* Console.log(statements.map((s) => `${s};`).join("\n"))
    yield* Console.log(`\n${statements.length} statement(s) applied`)
  })).pipe(Command.withDescription("create and grant the least-privilege role set (run as the owner)"))

/**
 * The `roles` command.
 *
 * @internal
 */
export const roles = Command.make("roles").pipe(
  Command.withDescription("least-privilege roles for producers, relays, operators and auditors"),
  Command.withSubcommands([grant])
)
