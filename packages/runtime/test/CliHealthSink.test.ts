/**
 * `outbox health` checks the sink `OUTBOX_SINK_URL` names, as a real
 * process against the real Redis on this machine: reachable → OK (exit 0);
 * unreachable → the CRITICAL finding `sink` (exit 2, as every CRITICAL),
 * naming the URL without its password, in the table and in `--json`; a
 * webhook has no connection to check and is reported as not checked.
 */
import { assert, describe, layer } from "@effect/vitest"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Effect from "effect/Effect"
import { outbox } from "./fixtures/cli.ts"

/** Each test starts a few real processes (about 2-7 s each on a busy machine). */
const processTimeout = 180_000

interface JsonReport {
  readonly level: string
  readonly findings: ReadonlyArray<{ readonly name: string; readonly level: string; readonly subject: string; readonly message: string }>
  readonly checks: ReadonlyArray<{ readonly name: string; readonly level: string }>
  readonly sink?: {
    readonly url: string
    readonly name: string
    readonly checked: boolean
    readonly connected: boolean | null
    readonly detail: string | null
    readonly waitSeconds: number
  }
}

const health = (args: ReadonlyArray<string>, sinkUrl: string | undefined) =>
  outbox(["health", ...args], { OUTBOX_SINK_URL: sinkUrl })

layer(TestDatabase.layer, { timeout: "120 seconds" })("npx outbox health checks the sink", (it) => {
  describe("in a real process", () => {
    it.effect("a reachable Redis is OK (exit 0); without OUTBOX_SINK_URL nothing is said about a sink", () =>
      Effect.gen(function*() {
        const migrated = yield* outbox(["migrate"])
        assert.strictEqual(migrated.code, 0, migrated.stderr)

        const ok = yield* health([], "redis://127.0.0.1:6379")
        assert.strictEqual(ok.code, 0, ok.stdout + ok.stderr)
        assert.include(ok.stdout, "health: OK")
        assert.include(ok.stdout, "sink: redis://127.0.0.1:6379 (redis): connected")
        assert.strictEqual(ok.stderr, "")

        const okJson = yield* health(["--json"], "redis://127.0.0.1:6379")
        assert.strictEqual(okJson.code, 0, okJson.stdout + okJson.stderr)
        assert.strictEqual(okJson.stderr, "")
        const report = JSON.parse(okJson.stdout) as JsonReport
        assert.strictEqual(report.level, "OK")
        assert.deepStrictEqual(report.findings, [])
        assert.deepStrictEqual(report.sink, {
          url: "redis://127.0.0.1:6379",
          name: "redis",
          checked: true,
          connected: true,
          detail: null,
          waitSeconds: 5
        })
        assert.deepStrictEqual(report.checks.filter((c) => c.name === "sink").map((c) => c.level), ["OK"])

        const unset = yield* health(["--json"], undefined)
        assert.strictEqual(unset.code, 0, unset.stdout + unset.stderr)
        const without = JSON.parse(unset.stdout) as JsonReport
        assert.isUndefined(without.sink)
        assert.isFalse(without.checks.some((c) => c.name === "sink"))
      }), processTimeout)

    it.effect("an unreachable Redis is the CRITICAL finding sink (exit 2), naming the URL without its password", () =>
      Effect.gen(function*() {
        const migrated = yield* outbox(["migrate"])
        assert.strictEqual(migrated.code, 0, migrated.stderr)
        const url = "redis://:secret@127.0.0.1:1"

        const table = yield* health(["--sink-timeout", "1"], url)
        assert.strictEqual(table.code, 2, table.stdout + table.stderr)
        assert.include(table.stdout, "health: CRITICAL")
        assert.match(table.stdout, /CRITICAL\s+sink\s+redis:\/\/:\*\*\*@127\.0\.0\.1:1\s/)
        assert.include(table.stdout, "NOT CONNECTED")
        assert.include(table.stdout, "ECONNREFUSED")
        assert.notInclude(table.stdout + table.stderr, "secret")
        assert.strictEqual(table.stderr, "")

        const asJson = yield* health(["--json", "--sink-timeout", "1"], url)
        assert.strictEqual(asJson.code, 2, asJson.stdout + asJson.stderr)
        assert.strictEqual(asJson.stderr, "")
        assert.notInclude(asJson.stdout, "secret")
        const report = JSON.parse(asJson.stdout) as JsonReport
        assert.strictEqual(report.level, "CRITICAL")
        assert.deepStrictEqual(report.findings.map((f) => [f.level, f.name, f.subject]), [
          ["CRITICAL", "sink", "redis://:***@127.0.0.1:1"]
        ])
        assert.include(report.findings[0]!.message, "redis://:***@127.0.0.1:1")
        assert.strictEqual(report.sink?.connected, false)
        assert.strictEqual(report.sink?.waitSeconds, 1)
        assert.include(report.sink?.detail ?? "", "ECONNREFUSED")
        assert.deepStrictEqual(report.checks.filter((c) => c.name === "sink").map((c) => c.level), ["CRITICAL"])
      }), processTimeout)

    it.effect("a webhook has no connection: not checked, OK; a malformed sink URL is CRITICAL; a bad --sink-timeout is refused", () =>
      Effect.gen(function*() {
        const migrated = yield* outbox(["migrate"])
        assert.strictEqual(migrated.code, 0, migrated.stderr)

        const webhook = yield* health(["--json"], "http://127.0.0.1:1/events")
        assert.strictEqual(webhook.code, 0, webhook.stdout + webhook.stderr)
        const report = JSON.parse(webhook.stdout) as JsonReport
        assert.strictEqual(report.level, "OK")
        assert.deepStrictEqual(report.sink, {
          url: "http://127.0.0.1:1/events",
          name: "webhook",
          checked: false,
          connected: null,
          detail: null,
          waitSeconds: 5
        })
        assert.isFalse(report.checks.some((c) => c.name === "sink"))
        const webhookTable = yield* health([], "http://127.0.0.1:1/events")
        assert.strictEqual(webhookTable.code, 0, webhookTable.stdout + webhookTable.stderr)
        assert.include(webhookTable.stdout, "(webhook): not checked")

        const malformed = yield* health(["--json"], "redis://:secret@127.0.0.1:1?strem=x")
        assert.strictEqual(malformed.code, 2, malformed.stdout + malformed.stderr)
        assert.notInclude(malformed.stdout, "secret")
        const bad = JSON.parse(malformed.stdout) as JsonReport
        assert.deepStrictEqual(bad.findings.map((f) => f.name), ["sink"])
        assert.include(bad.sink?.detail ?? "", "strem")

        const refused = yield* health(["--sink-timeout", "0"], "redis://127.0.0.1:6379")
        assert.strictEqual(refused.code, 1)
        // the command line's own refusal: the error on stderr, the command's help on stdout, no report
        assert.include(refused.stderr, "Invalid value for flag --sink-timeout")
        assert.notInclude(refused.stdout, "health:")
      }), processTimeout)
  })
})
