import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { stringify } from "yaml"
import {
  allPanels,
  concreteQuery,
  dashboardQueries,
  loadAlerts,
  loadCatalog,
  loadDashboard,
  metricNamesIn,
  rateArguments,
  run,
  seriesIndex
} from "./support.ts"

const catalog = loadCatalog()
const dashboard = loadDashboard()
const queries = dashboardQueries(dashboard)

describe("metric catalog (deploy/metrics-catalog.json)", () => {
  it("names each metric once, counters with _total, gauges and histograms without", () => {
    const names = catalog.map((metric) => metric.name)
    assert.strictEqual(new Set(names).size, names.length)
    for (const metric of catalog) {
      assert.match(metric.name, /^outbox_[a-z0-9_]+$/)
      assert.include(["counter", "gauge", "histogram"], metric.type)
      assert.strictEqual(metric.name.endsWith("_total"), metric.type === "counter", `${metric.name} (${metric.type})`)
      for (const label of metric.labels) {
        assert.include(["aggregate_type", "event_type", "outcome", "operation", "table", "loop", "reason"], label, `${metric.name}: unbounded label ${label}`)
      }
    }
  })

  it("every metric the alert rules and the dashboard read is in the catalog", () => {
    const index = seriesIndex(catalog)
    const used = [
      ...loadAlerts().flatMap((rule) => metricNamesIn(rule.expr).map((name) => ({ where: `alert ${rule.alert}`, name }))),
      ...queries.flatMap(({ panel, expr }) => metricNamesIn(expr).map((name) => ({ where: `panel "${panel}"`, name }))),
      ...dashboard.templating.list.flatMap((variable) =>
        metricNamesIn(JSON.stringify(variable.query)).map((name) => ({ where: `variable ${variable.name}`, name })))
    ]
    assert.isAbove(used.length, 40)
    for (const { where, name } of used) assert.isTrue(index.has(name), `${where} reads ${name}, which the relay does not export`)
  })
})

describe("Grafana dashboard (deploy/grafana/outbox-dashboard.json)", () => {
  it("takes its data source from a variable, so it imports into any Grafana", () => {
    const datasource = dashboard.templating.list.find((variable) => variable.type === "datasource")
    assert.isDefined(datasource)
    assert.strictEqual(datasource!.query, "prometheus")
    const reference = `\${${datasource!.name}}`
    for (const panel of allPanels(dashboard).filter((panel) => panel.type !== "row")) {
      assert.strictEqual(panel.datasource?.uid, reference, `panel "${panel.title}"`)
      for (const target of panel.targets ?? []) assert.strictEqual(target.datasource?.uid, reference, `panel "${panel.title}"`)
    }
    for (const variable of dashboard.templating.list.filter((variable) => variable.type === "query")) {
      assert.strictEqual(variable.datasource?.uid, reference, `variable ${variable.name}`)
    }
    assert.match(dashboard.uid, /^[a-z0-9-]{1,40}$/)
    const ids = allPanels(dashboard).map((panel) => panel.id)
    assert.strictEqual(new Set(ids).size, ids.length, "panel ids are unique")
  })

  it("has the panels the issue lists", () => {
    const reads = (title: RegExp, ...needles: Array<string>) => {
      const panels = allPanels(dashboard).filter((panel) => title.test(panel.title))
      assert.isNotEmpty(panels, `a panel titled ${title}`)
      const exprs = panels.flatMap((panel) => (panel.targets ?? []).map((target) => target.expr ?? "")).join("\n")
      for (const needle of needles) assert.include(exprs, needle, `${title} reads ${needle}`)
    }
    reads(/^Throughput by outcome$/, "rate(outbox_events_completed_total", "rate(outbox_events_retried_total", "rate(outbox_events_dead_lettered_total")
    reads(/^Backlog$/, "outbox_pending_events")
    reads(/^Oldest pending age$/, "outbox_oldest_pending_age_seconds")
    reads(/latency p50 \/ p99/, "histogram_quantile(0.5, sum by (le) (rate(outbox_end_to_end_latency_seconds_bucket", "histogram_quantile(0.99")
    reads(/^Dead letters$/, "outbox_dead_letter_events", "increase(outbox_events_dead_lettered_total")
    reads(/^Lease lost \/ reaped$/, "rate(outbox_lease_lost_total", "rate(outbox_leases_reaped_total")
    reads(/^Partitions ahead$/, "outbox_partitions_ahead")
    reads(/bloat/i, "outbox_dead_tuples")
    reads(/^xmin horizon age$/, "outbox_xmin_horizon_age_seconds")
  })

  it("applies rate() and increase() to counters and histogram series only", () => {
    const index = seriesIndex(catalog)
    for (const { panel, expr } of queries) {
      for (const name of rateArguments(expr)) {
        const metric = index.get(name)
        assert.isTrue(metric?.type === "counter" || metric?.type === "histogram", `panel "${panel}": rate/increase over ${name}`)
      }
    }
  })

  it("lays panels out without overlap on the 24-column grid", () => {
    const cells = new Map<string, string>()
    for (const panel of allPanels(dashboard)) {
      const { x, y, w, h } = panel.gridPos
      assert.isTrue(x >= 0 && w > 0 && x + w <= 24, `panel "${panel.title}" fits the grid`)
      for (let row = y; row < y + h; row++) {
        for (let column = x; column < x + w; column++) {
          const key = `${row}:${column}`
          assert.isUndefined(cells.get(key), `panel "${panel.title}" overlaps "${cells.get(key)}"`)
          cells.set(key, panel.title)
        }
      }
    }
  })

  it.effect("every query is valid PromQL (promtool parses each as a recording rule)", () =>
    Effect.acquireUseRelease(
      Effect.sync(() => mkdtempSync(join(tmpdir(), "outbox-dashboard-"))),
      (dir) =>
        Effect.gen(function*() {
          const rules = queries.map(({ expr }, i) => ({ record: `outbox_dashboard:query_${i}`, expr: concreteQuery(expr) }))
          writeFileSync(join(dir, "dashboard-queries.yaml"), stringify({ groups: [{ name: "dashboard", rules }] }))
          const result = yield* run("promtool", ["check", "rules", join(dir, "dashboard-queries.yaml")])
          assert.strictEqual(result.code, 0, result.stdout + result.stderr)
          assert.include(result.stdout, `SUCCESS: ${queries.length} rules found`)
        }),
      (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
    ))
})
