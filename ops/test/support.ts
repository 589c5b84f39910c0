/**
 * Shared helpers of the operations tests (`npm run test:ops`): the checked-in alert rules, their promtool tests,
 * the Grafana dashboard and the metric catalog, read from the repository; promtool and prometheus run as real
 * processes.
 */
import * as Effect from "effect/Effect"
import { execFile } from "node:child_process"
import { existsSync, readFileSync } from "node:fs"
import { createServer } from "node:net"
import { fileURLToPath } from "node:url"
import { parse } from "yaml"

/** Absolute path of a file of the repository. */
export const repoPath = (relative: string): string => fileURLToPath(new URL(`../../${relative}`, import.meta.url))

/** Text of a file of the repository. */
export const readText = (relative: string): string => readFileSync(repoPath(relative), "utf8")

export const rulesFile = "deploy/prometheus/outbox-alerts.yaml"
export const ruleTestsFile = "deploy/prometheus/tests/outbox-alerts.test.yaml"
export const dashboardFile = "deploy/grafana/outbox-dashboard.json"
export const catalogFile = "deploy/metrics-catalog.json"
export const prometheusConfigFile = "deploy/prometheus/prometheus.yml"

export interface AlertRule {
  readonly alert: string
  readonly expr: string
  readonly for?: string
  readonly labels: Record<string, string>
  readonly annotations: Record<string, string>
}

/** The alerting rules of `deploy/prometheus/outbox-alerts.yaml`, in file order. */
export const loadAlerts = (text: string = readText(rulesFile)): ReadonlyArray<AlertRule> => {
  const doc = parse(text) as { groups: Array<{ name: string; rules: Array<AlertRule & { record?: string }> }> }
  return doc.groups.flatMap((group) => group.rules.filter((rule) => rule.alert !== undefined))
}

export interface RuleTestCase {
  readonly eval_time: string
  readonly alertname: string
  readonly exp_alerts: ReadonlyArray<{ exp_labels: Record<string, string>; exp_annotations?: Record<string, string> }> | null
}

export interface RuleTestGroup {
  readonly name: string
  readonly alert_rule_test: ReadonlyArray<RuleTestCase>
}

/** The test groups of the promtool unit test file. */
export const loadRuleTests = (): ReadonlyArray<RuleTestGroup> =>
  (parse(readText(ruleTestsFile)) as { tests: Array<RuleTestGroup> }).tests

export interface CatalogMetric {
  readonly name: string
  readonly type: "counter" | "gauge" | "histogram"
  readonly labels: ReadonlyArray<string>
  readonly help: string
}

/** `deploy/metrics-catalog.json`: the metrics the relay exports. */
export const loadCatalog = (): ReadonlyArray<CatalogMetric> =>
  (JSON.parse(readText(catalogFile)) as { metrics: Array<CatalogMetric> }).metrics

/** Series names a metric of the catalog appears as in Prometheus (histograms as `_bucket`, `_sum`, `_count`). */
export const seriesNames = (metric: CatalogMetric): ReadonlyArray<string> =>
  metric.type === "histogram" ? [`${metric.name}_bucket`, `${metric.name}_sum`, `${metric.name}_count`] : [metric.name]

/** series name → the catalog metric it belongs to */
export const seriesIndex = (catalog: ReadonlyArray<CatalogMetric>): ReadonlyMap<string, CatalogMetric> =>
  new Map(catalog.flatMap((metric) => seriesNames(metric).map((name) => [name, metric] as const)))

/** Drops string literals (label values, `label_values(...)` queries aside) so that only identifiers remain. */
const withoutStrings = (expr: string) => expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')

/** The `outbox_*` metric names an expression reads (label values excluded). */
export const metricNamesIn = (expr: string): ReadonlyArray<string> =>
  [...new Set(withoutStrings(expr).match(/\boutbox_[a-z0-9_]+\b/g) ?? [])]

/** Every `rate(m…)`, `irate(m…)`, `increase(m…)` in an expression: the names of `m`. */
export const rateArguments = (expr: string): ReadonlyArray<string> =>
  [...withoutStrings(expr).matchAll(/\b(?:rate|irate|increase)\s*\(\s*(outbox_[a-z0-9_]+)/g)].map((match) => match[1]!)

/** Occurrences of a metric name in an expression (label values excluded). */
export const occurrences = (expr: string, name: string): number =>
  withoutStrings(expr).match(new RegExp(`\\b${name}\\b`, "g"))?.length ?? 0

interface DashboardTarget { readonly expr?: string; readonly datasource?: { uid?: string; type?: string } }
export interface DashboardPanel {
  readonly id: number
  readonly type: string
  readonly title: string
  readonly datasource?: { uid?: string; type?: string }
  readonly targets?: ReadonlyArray<DashboardTarget>
  readonly panels?: ReadonlyArray<DashboardPanel>
  readonly gridPos: { x: number; y: number; w: number; h: number }
}
export interface Dashboard {
  readonly title: string
  readonly uid: string
  readonly panels: ReadonlyArray<DashboardPanel>
  readonly templating: { list: ReadonlyArray<{ name: string; type: string; query: unknown; datasource?: { uid?: string } }> }
  readonly __inputs?: ReadonlyArray<unknown>
}

/** The Grafana dashboard. */
export const loadDashboard = (): Dashboard => JSON.parse(readText(dashboardFile)) as Dashboard

/** Every panel, rows' nested panels included. */
export const allPanels = (dashboard: Dashboard): ReadonlyArray<DashboardPanel> =>
  dashboard.panels.flatMap((panel) => [panel, ...(panel.panels ?? [])])

/** Every PromQL expression of the dashboard's panels, with the panel title. */
export const dashboardQueries = (dashboard: Dashboard): ReadonlyArray<{ panel: string; expr: string }> =>
  allPanels(dashboard).flatMap((panel) =>
    (panel.targets ?? []).flatMap((target) => target.expr === undefined ? [] : [{ panel: panel.title, expr: target.expr }]))

/** Grafana's variables replaced by values PromQL accepts, so that promtool can parse the expression. */
export const concreteQuery = (expr: string): string =>
  expr.replaceAll("$__rate_interval", "5m").replaceAll("$__interval", "1m").replaceAll("$__range", "1h")
    .replaceAll("$job", ".*")

/** GitHub's anchor for a heading text (github-slugger: lower case, punctuation dropped, spaces to hyphens). */
export const githubSlug = (heading: string): string =>
  heading.trim().toLowerCase()
    .replace(/\[([^\]]*)\]\([^)]*\)/g, "$1") // links keep their text
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc}\- ]/gu, "")
    .replace(/ /g, "-")

/** The anchors of a Markdown document's headings, in order (fenced code blocks skipped, duplicates numbered). */
export const headingAnchors = (markdown: string): ReadonlyArray<string> => {
  const seen = new Map<string, number>()
  const anchors: Array<string> = []
  let fence: string | undefined
  for (const line of markdown.split("\n")) {
    const fenceMatch = /^\s*(```|~~~)/.exec(line)
    if (fenceMatch !== null) {
      if (fence === undefined) fence = fenceMatch[1]
      else if (fenceMatch[1] === fence) fence = undefined
      continue
    }
    if (fence !== undefined) continue
    const heading = /^#{1,6}\s+(.+?)\s*#*\s*$/.exec(line)
    if (heading === null) continue
    const slug = githubSlug(heading[1]!)
    const count = seen.get(slug) ?? 0
    seen.set(slug, count + 1)
    anchors.push(count === 0 ? slug : `${slug}-${count}`)
  }
  return anchors
}

/** Where runbook URLs point: `https://github.com/outbox/outbox/blob/main/<path>#<anchor>`. */
export const runbookBase = "https://github.com/outbox/outbox/blob/main/"

/** A runbook URL split into the repository file and the anchor, or a reason it is not one. */
export const resolveRunbook = (url: string): { file: string; anchor: string } | { problem: string } => {
  if (!url.startsWith(runbookBase)) return { problem: `does not start with ${runbookBase}` }
  const [file, anchor, ...rest] = url.slice(runbookBase.length).split("#")
  if (file === undefined || anchor === undefined || anchor === "" || rest.length > 0) return { problem: "has no single #anchor" }
  if (!file.startsWith("docs/") || !file.endsWith(".md")) return { problem: `points to ${file}, not a Markdown file of docs/` }
  if (!existsSync(repoPath(file))) return { problem: `points to ${file}, which does not exist` }
  if (!headingAnchors(readText(file)).includes(anchor)) return { problem: `#${anchor} is no heading of ${file}` }
  return { file, anchor }
}

export interface ProcessResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Runs a program to completion (never fails: the exit code is in the result). */
export const run = (program: string, args: ReadonlyArray<string>, options: { cwd?: string; timeoutMs?: number } = {}) =>
  Effect.callback<ProcessResult>((resume) => {
    execFile(program, [...args], { cwd: options.cwd ?? repoPath("."), timeout: options.timeoutMs ?? 60_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) =>
      resume(Effect.succeed({ code: error === null ? 0 : typeof error.code === "number" ? error.code : 1, stdout, stderr })))
  })

/** A TCP port that was free a moment ago. */
export const freePort = Effect.callback<number>((resume) => {
  const server = createServer()
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})
