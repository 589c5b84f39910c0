import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { parse, stringify } from "yaml"
import {
  loadAlerts,
  loadCatalog,
  loadRuleTests,
  metricNamesIn,
  occurrences,
  rateArguments,
  readText,
  type RuleTestGroup,
  rulesFile,
  ruleTestsFile,
  run,
  seriesIndex
} from "./support.ts"

const alerts = loadAlerts()
const ruleTests = loadRuleTests()

/**
 * A copy of the rules and their unit tests in a temporary directory, with one alert's expression replaced:
 * promtool's verdict on the mutant tells whether the tests notice.
 */
const promtoolOnMutant = (alert: string, expr: string) =>
  Effect.acquireUseRelease(
    Effect.sync(() => mkdtempSync(join(tmpdir(), "outbox-alerts-"))),
    (dir) => {
      const doc = { groups: [{ name: "outbox", rules: loadAlerts().map((rule) => rule.alert === alert ? { ...rule, expr } : rule) }] }
      writeFileSync(join(dir, "outbox-alerts.yaml"), stringify(doc))
      mkdirSync(join(dir, "tests"))
      // the alert's own test groups only (the others test other rules and take time)
      const tests = parse(readText(ruleTestsFile)) as { tests: Array<RuleTestGroup> }
      tests.tests = tests.tests.filter((group) => group.alert_rule_test.some((test) => test.alertname === alert))
      writeFileSync(join(dir, "tests", "outbox-alerts.test.yaml"), stringify(tests))
      return run("promtool", ["test", "rules", "tests/outbox-alerts.test.yaml"], { cwd: dir })
    },
    (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
  )

/** The names of the test groups promtool reports as failed. */
const failedGroups = (output: string) => [...output.matchAll(/^\s+name: (.+),$/gm)].map((match) => match[1]!)

describe("alert rules (deploy/prometheus/outbox-alerts.yaml)", () => {
  it.effect("promtool check rules accepts the file", () =>
    Effect.gen(function*() {
      const result = yield* run("promtool", ["check", "rules", rulesFile])
      assert.strictEqual(result.code, 0, result.stdout + result.stderr)
      assert.include(result.stdout, `SUCCESS: ${alerts.length} rules found`)
    }))

  it.effect("promtool test rules: every unit test passes", () =>
    Effect.gen(function*() {
      const result = yield* run("promtool", ["test", "rules", ruleTestsFile])
      assert.strictEqual(result.code, 0, result.stdout + result.stderr)
      assert.include(result.stdout, "SUCCESS")
    }))

  it("covers what the issue asks for, with unique names, P1–P4 severities and the three annotations", () => {
    const names = alerts.map((rule) => rule.alert)
    assert.strictEqual(new Set(names).size, names.length, "alert names are unique")
    for (const rule of alerts) {
      assert.match(rule.labels.severity ?? "", /^P[1-4]$/, `${rule.alert}: severity label`)
      for (const annotation of ["summary", "description", "runbook_url"]) {
        assert.isTrue((rule.annotations[annotation] ?? "").trim().length > 10, `${rule.alert}: ${annotation}`)
      }
    }
    assert.sameMembers([...new Set(alerts.map((rule) => rule.labels.severity))].sort(), ["P1", "P2", "P3", "P4"])
    const uses = (metric: string) => alerts.filter((rule) => metricNamesIn(rule.expr).includes(metric)).map((rule) => rule.alert)
    // relay not progressing while events wait; oldest pending over the SLO; lease far past expiry; partition horizon
    // or rows in DEFAULT; dead letters growing and present; lease lost / reaped; xmin horizon; dead tuples
    for (
      const metric of [
        "outbox_events_completed_total",
        "outbox_pending_events",
        "outbox_oldest_pending_age_seconds",
        "outbox_lease_overdue_seconds",
        "outbox_partitions_ahead",
        "outbox_default_partition_rows",
        "outbox_events_dead_lettered_total",
        "outbox_dead_letter_events",
        "outbox_lease_lost_total",
        "outbox_leases_reaped_total",
        "outbox_xmin_horizon_age_seconds",
        "outbox_dead_tuples"
      ]
    ) assert.isNotEmpty(uses(metric), `an alert on ${metric}`)
    const notProgressing = alerts.find((rule) => rule.alert === "OutboxRelayNotProgressing")!
    assert.include(notProgressing.expr, "increase(outbox_events_completed_total")
    assert.include(notProgressing.expr, "outbox_pending_events")
  })

  it("applies rate() and increase() to counters only, and reads every counter through them", () => {
    const index = seriesIndex(loadCatalog())
    for (const rule of alerts) {
      for (const name of rateArguments(rule.expr)) {
        assert.strictEqual(index.get(name)?.type, "counter", `${rule.alert}: rate/increase over ${name}, which is not a counter`)
      }
      for (const name of metricNamesIn(rule.expr)) {
        if (index.get(name)?.type !== "counter") continue
        assert.strictEqual(
          occurrences(rule.expr, name),
          rateArguments(rule.expr).filter((argument) => argument === name).length,
          `${rule.alert}: the counter ${name} is read raw, not through rate()/increase()`
        )
      }
    }
  })

  it("has a unit test where each alert fires and one where it stays quiet", () => {
    const cases = ruleTests.flatMap((group) => group.alert_rule_test.map((test) => ({ group: group.name, test })))
    for (const rule of alerts) {
      const own = cases.filter(({ test }) => test.alertname === rule.alert)
      const firing = own.filter(({ test }) => (test.exp_alerts ?? []).length > 0)
      const quiet = own.filter(({ test }) => (test.exp_alerts ?? []).length === 0)
      assert.isNotEmpty(firing, `${rule.alert}: no case where it fires`)
      assert.isNotEmpty(quiet, `${rule.alert}: no case where it stays quiet`)
      for (const { test } of firing) {
        for (const expected of test.exp_alerts!) {
          assert.strictEqual(expected.exp_labels.severity, rule.labels.severity, `${rule.alert}: expected severity`)
          assert.strictEqual(expected.exp_annotations?.runbook_url, rule.annotations.runbook_url, `${rule.alert}: annotations checked`)
        }
      }
    }
    // and nothing tests an alert that does not exist
    const names = new Set(alerts.map((rule) => rule.alert))
    for (const { test } of cases) assert.isTrue(names.has(test.alertname), `test of unknown alert ${test.alertname}`)
  })

  describe("the unit tests notice a broken alert (mutants of each rule)", () => {
    for (const rule of loadAlerts(readText(rulesFile))) {
      it.effect(`${rule.alert}: an always-firing and a never-firing expression both fail its tests`, () =>
        Effect.gen(function*() {
          const ownGroups = ruleTests.filter((group) => group.alert_rule_test.some((test) => test.alertname === rule.alert))
          // groups where the alert must stay quiet at every evaluation
          const quietGroups = ownGroups.filter((group) =>
            group.alert_rule_test.every((test) => test.alertname !== rule.alert || (test.exp_alerts ?? []).length === 0))
          assert.isNotEmpty(quietGroups, `${rule.alert}: no test group where it stays quiet throughout`)
          const firingGroups = ownGroups.filter((group) =>
            group.alert_rule_test.some((test) => test.alertname === rule.alert && (test.exp_alerts ?? []).length > 0))

          const alwaysFiring = yield* promtoolOnMutant(rule.alert, "vector(1)")
          assert.notStrictEqual(alwaysFiring.code, 0, `${rule.alert}: an always-firing rule passes the tests`)
          const failedWhenFiring = failedGroups(alwaysFiring.stdout + alwaysFiring.stderr)
          for (const group of quietGroups) assert.include(failedWhenFiring, group.name, `quiet case "${group.name}" did not notice`)

          const neverFiring = yield* promtoolOnMutant(rule.alert, "vector(1) > 2")
          assert.notStrictEqual(neverFiring.code, 0, `${rule.alert}: a never-firing rule passes the tests`)
          const failedWhenSilent = failedGroups(neverFiring.stdout + neverFiring.stderr)
          for (const group of firingGroups) assert.include(failedWhenSilent, group.name, `firing case "${group.name}" did not notice`)
        }))
    }
  })
})
