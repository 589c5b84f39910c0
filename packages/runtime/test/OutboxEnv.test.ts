import { assert, describe, it } from "@effect/vitest"
import * as OutboxEnv from "@outbox/runtime/OutboxEnv"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import { readdirSync, readFileSync, statSync } from "node:fs"
import { join, relative } from "node:path"

const root = new URL("../../../", import.meta.url).pathname

const sourceFiles = (dir: string): ReadonlyArray<string> =>
  readdirSync(dir).flatMap((name) => {
    const path = join(dir, name)
    return statSync(path).isDirectory() ? sourceFiles(path) : path.endsWith(".ts") ? [path] : []
  })

/** Quoted variable names on code lines (comments and template strings are prose, not reads). */
const namesIn = (path: string, pattern: RegExp): ReadonlyArray<string> =>
  readFileSync(path, "utf8")
    .split("\n")
    .filter((line) => !/^\s*(\*|\/\/|\/\*)/.test(line))
    .flatMap((line) => Array.from(line.matchAll(pattern), (m) => m[1]!))

const outboxVariable = /"(OUTBOX_[A-Z0-9_]+|ENABLE_AUDIT)"/g
const anyVariable = /"(OUTBOX_[A-Z0-9_]+|ENABLE_AUDIT|DATABASE_URL|OTEL_[A-Z0-9_]+)"/g

const packages = readdirSync(join(root, "packages")).filter((name) => statSync(join(root, "packages", name, "src")).isDirectory())

/** The one module per package allowed to read `OUTBOX_*` / `ENABLE_AUDIT`. */
const readers: Record<string, string | undefined> = {
  core: "packages/core/src/OutboxConfig.ts",
  sql: "packages/sql/src/SqlEnv.ts",
  runtime: "packages/runtime/src/OutboxEnv.ts",
  // the test servers' hand-over between vitest's global setup and the test files
  testing: "packages/testing/src/vitestGlobalSetup.ts",
  client: undefined
}

const catalog = new Set(OutboxEnv.variables.map((v) => v.name))

describe("OutboxEnv", () => {
  it("lists each variable once", () => {
    assert.strictEqual(catalog.size, OutboxEnv.variables.length)
  })

  it("is the README's configuration table (npm run docs:config writes it)", () => {
    const readme = readFileSync(join(root, "README.md"), "utf8")
    const table = readme.slice(
      readme.indexOf("<!-- OutboxEnv:begin -->") + "<!-- OutboxEnv:begin -->".length,
      readme.indexOf("<!-- OutboxEnv:end -->")
    ).trim()
    assert.strictEqual(table, OutboxEnv.markdownTable())
  })

  it("exactly one module per package reads OUTBOX_* / ENABLE_AUDIT", () => {
    assert.deepStrictEqual(packages.slice().sort(), Object.keys(readers).sort())
    for (const pkg of packages) {
      const reading = sourceFiles(join(root, "packages", pkg, "src"))
        .filter((path) => namesIn(path, outboxVariable).length > 0)
        .map((path) => relative(root, path))
      assert.deepStrictEqual(reading, readers[pkg] === undefined ? [] : [readers[pkg]], `package ${pkg}`)
    }
  })

  it("documents every variable a library module reads", () => {
    for (const pkg of packages.filter((p) => p !== "testing")) {
      for (const path of sourceFiles(join(root, "packages", pkg, "src"))) {
        for (const name of namesIn(path, anyVariable)) {
          assert.isTrue(catalog.has(name), `${relative(root, path)} reads ${name}, which OutboxEnv.variables does not list`)
        }
      }
    }
  })

  it("the docs name no variable that does not exist", () => {
    const docs = [join(root, "README.md"), ...readdirSync(join(root, "docs")).filter((n) => n.endsWith(".md")).map((n) => join(root, "docs", n))]
    for (const path of docs) {
      for (const [, name] of readFileSync(path, "utf8").matchAll(/\b(OUTBOX_[A-Z0-9_]*[A-Z0-9]|ENABLE_AUDIT)\b/g)) {
        if (name!.startsWith("OUTBOX_TEST_")) continue
        assert.isTrue(catalog.has(name!), `${relative(root, path)} names ${name}, which OutboxEnv.variables does not list`)
      }
    }
  })

  it.effect("the defaults are the documented ones", () =>
    Effect.gen(function*() {
      const documented = (name: string) => OutboxEnv.variables.find((v) => v.name === name)?.default?.replaceAll("`", "")
      const relay = yield* OutboxEnv.relay
      assert.strictEqual(String(relay.batchSize), documented("OUTBOX_BATCH_SIZE"))
      assert.strictEqual(String(relay.minBatchSize), documented("OUTBOX_MIN_BATCH_SIZE"))
      assert.strictEqual(String(Duration.toSeconds(relay.leaseDuration)), documented("OUTBOX_LEASE_SECONDS"))
      assert.strictEqual(String(Duration.toMillis(relay.pollInterval)), documented("OUTBOX_POLL_INTERVAL_MS"))
      assert.strictEqual(String(relay.concurrency), documented("OUTBOX_CONCURRENCY"))
      assert.strictEqual(String(relay.maxRetries), documented("OUTBOX_MAX_RETRIES"))
      assert.strictEqual(String(relay.maxPayloadBytes), documented("OUTBOX_MAX_PAYLOAD_BYTES"))
      assert.strictEqual(String(Duration.toMillis(relay.shutdownTimeout)), documented("OUTBOX_SHUTDOWN_TIMEOUT_MS"))
      assert.strictEqual(relay.claimMode, documented("OUTBOX_CLAIM_MODE"))
      assert.strictEqual(String(Duration.toMillis(relay.transactionTimeout)), documented("OUTBOX_TX_TIMEOUT_MS"))
      const partitions = yield* OutboxEnv.partitions
      assert.strictEqual(partitions.mode, documented("OUTBOX_PARTITION_MODE"))
      assert.strictEqual(String(partitions.retentionDays), documented("OUTBOX_RETENTION_DAYS"))
      assert.strictEqual(String(partitions.premake), documented("OUTBOX_PARTITION_PREMAKE"))
      assert.strictEqual(String(Duration.toMillis(partitions.every)), documented("OUTBOX_MAINTENANCE_INTERVAL_MS"))
      assert.strictEqual(partitions.table, documented("OUTBOX_TABLE"))
      assert.strictEqual(String(partitions.audit), documented("ENABLE_AUDIT"))
      const sealer = yield* OutboxEnv.auditSealer
      assert.strictEqual(String(Duration.toMillis(sealer.every)), documented("OUTBOX_AUDIT_SEAL_INTERVAL_MS"))
      const telemetry = yield* OutboxEnv.telemetry
      assert.strictEqual(String(telemetry.metrics), documented("OUTBOX_METRICS"))
      assert.strictEqual(String(telemetry.prometheus !== undefined), documented("OUTBOX_METRICS_PROMETHEUS"))
      assert.strictEqual(telemetry.otlp, undefined)
      assert.strictEqual(Duration.format(yield* OutboxEnv.sampleInterval), documented("OUTBOX_METRICS_SAMPLE_INTERVAL")?.replace(" seconds", "s"))
      const store = yield* OutboxEnv.store
      assert.strictEqual(String(store.runMigrations), documented("OUTBOX_RUN_MIGRATIONS"))
      assert.strictEqual(store.completed, documented("OUTBOX_COMPLETED"))
      assert.strictEqual(store.settleCommit, documented("OUTBOX_SETTLE_COMMIT"))
    }).pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: {} })))))

  it.effect("a bad value fails naming the variable", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.gen(function*() {
        return yield* OutboxEnv.partitions
      }))
      assert.include(String(error), "OUTBOX_RETENTION_DAYS")
    }).pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env: { OUTBOX_RETENTION_DAYS: "0" } })))))
})
