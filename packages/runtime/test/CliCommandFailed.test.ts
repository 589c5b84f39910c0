import { assert, describe, it, layer } from "@effect/vitest"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import * as Runtime from "effect/Runtime"
import * as Cli from "../src/Cli.ts"
import { outbox as run } from "./fixtures/cli.ts"

describe("Cli.CommandFailed", () => {
  it("is a tagged error: exit code 1, reported on stderr, catchable by tag", () => {
    const error = new Cli.CommandFailed({ message: "2 maintenance step(s) failed" })
    assert.strictEqual(error._tag, "CommandFailed")
    assert.strictEqual(error.message, "2 maintenance step(s) failed")
    assert.instanceOf(error, Error)
    assert.strictEqual(Runtime.getErrorExitCode(error), 1)
    assert.isTrue(Runtime.getErrorReported(error))
  })

  it.effect("Effect.catchTag tells it from other failures", () =>
    Effect.gen(function*() {
      const caught = yield* new Cli.CommandFailed({ message: "x" }).pipe(
        Effect.catchTag("CommandFailed", (e) => Effect.succeed(`caught ${e.message}`))
      )
      assert.strictEqual(caught, "caught x")
    }))
})

layer(TestDatabase.layer, { timeout: "120 seconds" })("npx outbox: a command that finds problems", (it) => {
  it.effect("exits 1 and prints `outbox: CommandFailed: <message>` on stderr", () =>
    Effect.gen(function*() {
      const migrated = yield* run(["migrate"])
      assert.strictEqual(migrated.code, 0, migrated.stderr)
      // a premake far beyond the partitions `migrate` created: the health check names the short horizon
      const status = yield* run(["partitions", "status", "--premake", "40"])
      assert.strictEqual(status.code, 1, status.stdout + status.stderr)
      assert.include(status.stdout, "HorizonShort")
      assert.strictEqual(status.stderr.trim(), "outbox: CommandFailed: outbox: partition health check failed")
    }))
})
