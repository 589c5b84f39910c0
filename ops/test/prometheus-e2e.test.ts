import { assert, layer } from "@effect/vitest"
import * as TestDatabase from "@outbox/testing/TestDatabase"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Schedule from "effect/Schedule"
import { type ChildProcess, spawn } from "node:child_process"
import { createServer, type Server } from "node:http"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { parse, stringify } from "yaml"
import {
  dashboardQueries,
  freePort,
  loadAlerts,
  loadCatalog,
  loadDashboard,
  metricNamesIn,
  prometheusConfigFile,
  readText,
  repoPath,
  rulesFile,
  run,
  seriesIndex
} from "./support.ts"

/** A long-running process for the scope's lifetime (SIGTERM, then SIGKILL after 10 s); its output is kept for errors. */
const daemon = (name: string, program: string, args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(program, [...args], { cwd: repoPath("."), env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] })
      const output: Array<string> = []
      const keep = (chunk: Buffer) => {
        output.push(chunk.toString())
        if (output.length > 400) output.splice(0, output.length - 400)
      }
      child.stdout!.on("data", keep)
      child.stderr!.on("data", keep)
      return { name, child, log: () => output.join("").slice(-6000) }
    }),
    ({ child }) => stop(child)
  )

const stop = (child: ChildProcess) =>
  Effect.callback<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    const killer = setTimeout(() => child.kill("SIGKILL"), 10_000)
    child.once("exit", () => {
      clearTimeout(killer)
      resume(Effect.void)
    })
    child.kill("SIGTERM")
  })

const http = (url: string, init?: RequestInit) =>
  Effect.tryPromise({
    try: () => fetch(url, { ...init, signal: AbortSignal.timeout(10_000) }).then(async (response) => ({ status: response.status, body: await response.text() })),
    catch: (cause) => new Error(`${init?.method ?? "GET"} ${url}: ${String(cause)}`)
  })

/** Retries `check` every 500 ms until it succeeds or `within` has passed (then fails with its last error). */
const eventually = <A>(within: Duration.Input, check: Effect.Effect<A, Error>) =>
  check.pipe(Effect.retry(Schedule.spaced("500 millis")), Effect.timeoutOrElse({ duration: within, orElse: () => check }))

const expectAlive = (process: { name: string; child: ChildProcess; log: () => string }) =>
  process.child.exitCode === null && process.child.signalCode === null
    ? Effect.void
    : Effect.fail(new Error(`${process.name} exited (${process.child.exitCode ?? process.child.signalCode}):\n${process.log()}`))

/** The value of an instant vector query with one sample, or a failure naming the answer. */
const scalarQuery = (prometheus: string, query: string) =>
  Effect.flatMap(http(`${prometheus}/api/v1/query?query=${encodeURIComponent(query)}`), ({ body }) => {
    const answer = JSON.parse(body) as { status: string; data?: { result: Array<{ value: [number, string] }> } }
    const sample = answer.data?.result[0]
    return answer.status === "success" && sample !== undefined
      ? Effect.succeed(Number(sample.value[1]))
      : Effect.fail(new Error(`${query}: ${body}`))
  })

layer(TestDatabase.layer, { excludeTestServices: true, timeout: "120 seconds" })("Prometheus end to end", (it) => {
  it.effect("a real Prometheus scrapes the orders example under load: a non-zero throughput, every metric of the rules and the dashboard exported, the rules loaded", () =>
    Effect.scoped(Effect.gen(function*() {
      const database = yield* TestDatabase.TestDatabase
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => mkdtempSync(join(tmpdir(), "outbox-prometheus-"))),
        (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
      )

      // 0. the webhook the relay delivers to: 503 once for the "c-flaky" order (a retry), 400 for the "c-poison"
      //    order (a permanent error: a dead letter), 200 for everything else
      const sinkPort = yield* freePort
      let flakyFailures = 0
      yield* Effect.acquireRelease(
        Effect.callback<Server>((resume) => {
          const server = createServer((request, response) => {
            let body = ""
            request.on("data", (chunk: Buffer) => (body += chunk.toString()))
            request.on("end", () => {
              const status = body.includes("c-poison") ? 400 : body.includes("c-flaky") && flakyFailures++ === 0 ? 503 : 200
              response.writeHead(status).end()
            })
          })
          server.listen(sinkPort, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) => Effect.callback<void>((resume) => {
          server.closeAllConnections()
          server.close(() => resume(Effect.void))
        })
      )

      // 1. the orders example (HTTP service + relay) with its metrics switched on
      const appPort = yield* freePort
      const metricsPort = yield* freePort
      const app = yield* daemon("orders example", process.execPath, [repoPath("node_modules/tsx/dist/cli.mjs"), "--conditions=@outbox/source", "examples/orders/src/main.ts"], {
        DATABASE_URL: database.url,
        PORT: String(appPort),
        HOST: "127.0.0.1",
        OUTBOX_POLL_INTERVAL_MS: "100",
        OUTBOX_SINK_URL: `http://127.0.0.1:${sinkPort}/events`,
        // OutboxTelemetry.layerConfig: /metrics switched on, gauges sampled every second; when the example serves
        // /metrics on its own router, the dedicated port is unused
        OUTBOX_METRICS_PROMETHEUS: "true",
        OUTBOX_METRICS_PORT: String(metricsPort),
        OUTBOX_METRICS_HOST: "127.0.0.1",
        OUTBOX_METRICS_SAMPLE_INTERVAL: "1 second"
      })
      const base = `http://127.0.0.1:${appPort}`
      yield* eventually("60 seconds", Effect.andThen(expectAlive(app), http(`${base}/orders/00000000-0000-0000-0000-000000000000`)))
      // /metrics on the service's port, else on OUTBOX_METRICS_PORT
      const target = yield* Effect.flatMap(http(`${base}/metrics`), (onApp) =>
        onApp.status === 200
          ? Effect.succeed({ port: appPort, body: onApp.body })
          : http(`http://127.0.0.1:${metricsPort}/metrics`).pipe(
            Effect.map((own) => own.status === 200 ? { port: metricsPort, body: own.body } : undefined),
            Effect.orElseSucceed(() => undefined)
          ))
      assert.isDefined(target, `the orders example serves no /metrics (neither on PORT nor on OUTBOX_METRICS_PORT):\n${app.log()}`)
      assert.include(target!.body, "outbox_", "the /metrics answer has no outbox metric")

      // 2. load: one flaky and one poison order, then 4 clients posting orders until the test ends
      const post = (customerId: string) =>
        http(`${base}/orders`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ customerId, items: [{ sku: "sku-1", quantity: 2, unitPrice: 9.5 }] })
        }).pipe(
          Effect.flatMap((response) => response.status === 201 ? Effect.void : Effect.fail(new Error(`POST /orders: ${response.status} ${response.body}`)))
        )
      yield* post("c-flaky")
      yield* post("c-poison")
      const load = yield* Effect.forkScoped(Effect.forEach([1, 2, 3, 4], () => Effect.forever(post("c-1")), { concurrency: "unbounded", discard: true }))

      // 3. Prometheus from the checked-in config: this target, 1 s scrapes, the alert rules by absolute path
      const config = parse(readText(prometheusConfigFile)) as {
        global: Record<string, string>
        rule_files: Array<string>
        scrape_configs: Array<{ job_name: string; static_configs: Array<{ targets: Array<string> }> }>
      }
      config.global.scrape_interval = "1s"
      config.global.evaluation_interval = "1s"
      config.rule_files = [repoPath(rulesFile)]
      config.scrape_configs[0]!.static_configs = [{ targets: [`127.0.0.1:${target!.port}`] }]
      const configFile = join(dir, "prometheus.yml")
      writeFileSync(configFile, stringify(config))
      const checked = yield* run("promtool", ["check", "config", configFile])
      assert.strictEqual(checked.code, 0, checked.stdout + checked.stderr)

      const promPort = yield* freePort
      const prom = yield* daemon("prometheus", "prometheus", [
        `--config.file=${configFile}`,
        `--storage.tsdb.path=${join(dir, "data")}`,
        `--web.listen-address=127.0.0.1:${promPort}`
      ])
      const prometheus = `http://127.0.0.1:${promPort}`
      yield* eventually("30 seconds", Effect.andThen(expectAlive(prom), http(`${prometheus}/-/ready`)).pipe(
        Effect.flatMap((ready) => ready.status === 200 ? Effect.void : Effect.fail(new Error(`not ready: ${ready.body}`)))
      ))

      // 4. the scrape works and the relay's throughput is visible
      yield* eventually("30 seconds", Effect.flatMap(scalarQuery(prometheus, `up{job="${config.scrape_configs[0]!.job_name}"}`), (up) =>
        up === 1 ? Effect.void : Effect.fail(new Error(`up = ${up}`))))
      const rate = yield* eventually("60 seconds", Effect.flatMap(
        Effect.andThen(expectAlive(app), scalarQuery(prometheus, "sum(rate(outbox_events_completed_total[10s]))")),
        (value) => value > 0 ? Effect.succeed(value) : Effect.fail(new Error(`rate = ${value}`))
      )).pipe(Effect.mapError((error) => new Error(`${error.message}\n--- orders example:\n${app.log()}`)))
      assert.isAbove(rate, 0)
      const published = yield* scalarQuery(prometheus, "sum(rate(outbox_events_published_total[10s]))")
      assert.isAbove(published, 0)

      // 5. every metric the alert rules and the dashboard read is one the running relay exports (the retry and the
      //    dead letter above make the labelled counters appear), and it exports nothing outside the catalog
      const used = [...new Set([
        ...loadAlerts().flatMap((rule) => metricNamesIn(rule.expr)),
        ...dashboardQueries(loadDashboard()).flatMap(({ expr }) => metricNamesIn(expr))
      ])]
      const exported = http(`${prometheus}/api/v1/label/__name__/values`).pipe(
        Effect.map(({ body }) => (JSON.parse(body) as { data: Array<string> }).data.filter((name) => name.startsWith("outbox_")))
      )
      const names = yield* eventually("30 seconds", Effect.flatMap(exported, (names) => {
        const missing = used.filter((name) => !names.includes(name))
        return missing.length === 0 ? Effect.succeed(names) : Effect.fail(new Error(`not exported by the relay: ${missing.join(", ")}`))
      }))
      assert.isAbove(used.length, 15)
      const index = seriesIndex(loadCatalog())
      for (const name of names) assert.isTrue(index.has(name), `the relay exports ${name}, which is not in deploy/metrics-catalog.json`)
      for (const name of index.keys()) assert.include(names, name, `${name} of the catalog is not exported`)

      // 6. Prometheus loaded the alert rules and evaluates them without errors
      const rules = yield* http(`${prometheus}/api/v1/rules?type=alert`).pipe(
        Effect.map(({ body }) => (JSON.parse(body) as { data: { groups: Array<{ rules: Array<{ name: string; health: string; lastError?: string }> }> } }).data.groups.flatMap((group) => group.rules))
      )
      assert.sameMembers(rules.map((rule) => rule.name), loadAlerts().map((rule) => rule.alert))
      yield* eventually("15 seconds", Effect.suspend(() => http(`${prometheus}/api/v1/rules?type=alert`)).pipe(Effect.flatMap(({ body }) => {
        const bad = (JSON.parse(body) as { data: { groups: Array<{ rules: Array<{ name: string; health: string; lastError?: string }> }> } }).data.groups
          .flatMap((group) => group.rules).filter((rule) => rule.health !== "ok")
        return bad.length === 0 ? Effect.void : Effect.fail(new Error(`rules not ok: ${JSON.stringify(bad)}`))
      })))
      yield* Fiber.interrupt(load)
    })))
})
