import { assert, describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import { TestClock } from "effect/testing"
import * as Duty from "../src/Duty.ts"
import * as OutboxTelemetry from "../src/OutboxTelemetry.ts"

const failuresOf = (name: string) =>
  Effect.map(Metric.value(OutboxTelemetry.relayFailures({ loop: name })), (state) => state.count)

/** A duty over a counter, failing on the runs listed in `failOn` (1-based). */
const counting = (name: string, failOn: ReadonlyArray<number> = [], dieOn: ReadonlyArray<number> = []) =>
  Effect.gen(function*() {
    const calls = yield* Ref.make(0)
    const duty = Duty.make({
      name,
      schedule: Schedule.spaced("10 seconds"),
      run: Effect.flatMap(Ref.updateAndGet(calls, (n) => n + 1), (n) =>
        failOn.includes(n) ? Effect.fail(`run ${n} failed`) : dieOn.includes(n) ? Effect.die(new Error(`run ${n} died`)) : Effect.void)
    })
    return { calls, duty }
  })

describe("Duty", () => {
  it.effect("runs at start, then on its schedule; the status counts the runs", () =>
    Effect.gen(function*() {
      const { calls, duty } = yield* counting("duty-schedule")
      const status = yield* Duty.start(duty)
      yield* Effect.yieldNow
      assert.strictEqual(yield* Ref.get(calls), 1)
      yield* TestClock.adjust("9 seconds")
      assert.strictEqual(yield* Ref.get(calls), 1)
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* Ref.get(calls), 2)
      yield* TestClock.adjust("20 seconds")
      const s = yield* status
      assert.deepStrictEqual(s, { runs: 4, failures: 0, lastRunAt: new Date(30_000), lastError: undefined })
    }))

  it.effect("a failing run is counted (status and metric) and the loop goes on; a defect too", () =>
    Effect.gen(function*() {
      const { calls, duty } = yield* counting("duty-failing", [2], [3])
      const before = yield* failuresOf("duty-failing")
      const status = yield* Duty.start(duty)
      yield* TestClock.adjust("10 seconds")
      let s = yield* status
      assert.deepStrictEqual([s.runs, s.failures, s.lastError], [2, 1, "run 2 failed"])
      assert.strictEqual(yield* failuresOf("duty-failing"), before + 1)
      yield* TestClock.adjust("10 seconds")
      s = yield* status
      assert.deepStrictEqual([s.runs, s.failures], [3, 2])
      assert.include(s.lastError, "run 3 died")
      yield* TestClock.adjust("10 seconds")
      s = yield* status
      assert.deepStrictEqual([s.runs, s.failures, s.lastRunAt], [4, 2, new Date(30_000)])
      // the last failure is kept after a successful run
      assert.include(s.lastError, "run 3 died")
      assert.strictEqual(yield* Ref.get(calls), 4)
      assert.strictEqual(yield* failuresOf("duty-failing"), before + 2)
    }))

  it.effect("no metric update when metrics are off", () =>
    Effect.gen(function*() {
      const { duty } = yield* counting("duty-nometrics", [1])
      const status = yield* Duty.start(duty).pipe(Effect.provideService(OutboxTelemetry.MetricsEnabled, false))
      yield* Effect.yieldNow
      assert.strictEqual((yield* status).failures, 1)
      assert.strictEqual(yield* failuresOf("duty-nometrics"), 0)
    }))

  it.effect("closing the scope interrupts the duty", () =>
    Effect.gen(function*() {
      const { calls, duty } = yield* counting("duty-scope")
      const scope = yield* Scope.make()
      const status = yield* Duty.start(duty).pipe(Scope.provide(scope))
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(yield* Ref.get(calls), 2)
      yield* Scope.close(scope, Exit.void)
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(yield* Ref.get(calls), 2)
      assert.strictEqual((yield* status).runs, 2)
    }))

  it.effect("an interrupted run is not a failure", () =>
    Effect.gen(function*() {
      const duty = Duty.make({ name: "duty-interrupt", schedule: Schedule.spaced("1 second"), run: Effect.interrupt })
      const status = yield* Duty.start(duty)
      yield* TestClock.adjust("5 seconds")
      const s = yield* status
      assert.deepStrictEqual([s.runs, s.failures], [0, 0])
    }))

  it.effect("staggered: the i-th duty's first run waits i × step", () =>
    Effect.gen(function*() {
      const a = yield* counting("duty-a")
      const b = yield* counting("duty-b")
      const c = yield* counting("duty-c")
      yield* Layer.build(Duty.staggered("1 second", Duty.layer(a.duty), Duty.layer(b.duty), Duty.layer(c.duty)))
      const counts = Effect.all([Ref.get(a.calls), Ref.get(b.calls), Ref.get(c.calls)])
      yield* Effect.yieldNow
      assert.deepStrictEqual(yield* counts, [1, 0, 0])
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(yield* counts, [1, 1, 0])
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(yield* counts, [1, 1, 1])
      // then each on its own schedule, from its own first run
      yield* TestClock.adjust("8 seconds")
      assert.deepStrictEqual(yield* counts, [2, 1, 1])
      yield* TestClock.adjust("1 second")
      assert.deepStrictEqual(yield* counts, [2, 2, 1])
    }))
})
