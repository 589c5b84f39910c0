import { assert, describe, it } from "@effect/vitest"
import * as BatchLimit from "../src/internal/batchLimit.ts"

/** The relay's defaults: 10..1000, a heartbeat every 10 s. */
const defaults = BatchLimit.bounds({ batchSize: 1000, minBatchSize: 10, budgetMillis: 10_000 })

/**
 * The limits a worker asks for when its claims return `claimed[i]` rows in turn (the first at `min`), each
 * batch taking `perEvent` ms per event (a no-op sink's ~20 µs by default).
 */
const limitsFor = (bounds: BatchLimit.Bounds, claimed: ReadonlyArray<(limit: number) => number>, perEvent = 0.02) => {
  const limits: Array<number> = []
  let limit = bounds.min
  for (const rows of claimed) {
    limits.push(limit)
    const n = rows(limit)
    limit = BatchLimit.next(bounds, limit, n, 1 + n * perEvent)
  }
  return limits
}
const full = (limit: number) => limit
const rows = (n: number) => (limit: number) => Math.min(n, limit)

describe("BatchLimit", () => {
  it("bounds: max is the batch size; min is capped at it and both are at least 1", () => {
    assert.deepStrictEqual(defaults, { min: 10, max: 1000, budgetMillis: 10_000 })
    const of = (batchSize: number, minBatchSize: number) => {
      const { max, min } = BatchLimit.bounds({ batchSize, minBatchSize, budgetMillis: 1 })
      return { min, max }
    }
    assert.deepStrictEqual(of(2, 10), { min: 2, max: 2 })
    assert.deepStrictEqual(of(100, 100), { min: 100, max: 100 })
    assert.deepStrictEqual(of(0, 0), { min: 1, max: 1 })
  })

  it("grows by doubling while claims come back full, up to the maximum and no further", () => {
    assert.deepStrictEqual(
      limitsFor(defaults, Array.from({ length: 10 }, () => full)),
      [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]
    )
    assert.strictEqual(BatchLimit.next(defaults, 1000, 1000, 30), 1000)
  })

  it("shrinks to fit what a partial claim found: min after an empty poll", () => {
    assert.strictEqual(BatchLimit.next(defaults, 1000, 0, 5), 10)
    assert.strictEqual(BatchLimit.next(defaults, 1000, 3, 5), 10)
    assert.strictEqual(BatchLimit.next(defaults, 1000, 11, 5), 20)
    assert.strictEqual(BatchLimit.next(defaults, 1000, 300, 5), 320)
    assert.strictEqual(BatchLimit.next(defaults, 1000, 999, 5), 1000)
    assert.strictEqual(BatchLimit.next(defaults, 640, 641 - 2, 5), 640)
  })

  it("a backlog drained: grows, then falls back to min once the outbox is empty", () => {
    let left = 2500
    const drain = (limit: number) => {
      const n = Math.min(left, limit)
      left -= n
      return n
    }
    assert.deepStrictEqual(
      limitsFor(defaults, Array.from({ length: 12 }, () => drain)),
      // 10+20+...+640 = 1270 rows and 1000 more (full: the limit stays), then 230 of 1000 (fit: 320), then empty
      [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 320, 10, 10]
    )
  })

  it("a steady trickle keeps one limit instead of oscillating", () => {
    // 15 rows per claim: 10 (full) → 20, then 15 of 20 fits back to 20
    assert.deepStrictEqual(limitsFor(defaults, Array.from({ length: 6 }, () => rows(15))), [10, 20, 20, 20, 20, 20])
  })

  it("takes only the values min·2^k and max (the store's claim SQL is prepared per limit)", () => {
    const seen = new Set<number>()
    let limit = defaults.min
    let seed = 7
    for (let i = 0; i < 10_000; i++) {
      seen.add(limit)
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31
      limit = BatchLimit.next(defaults, limit, seed % 2 === 0 ? limit : seed % (limit + 1), seed % 20_000)
      assert.isAtLeast(limit, defaults.min)
      assert.isAtMost(limit, defaults.max)
    }
    assert.deepStrictEqual([...seen].sort((a, b) => a - b), [10, 20, 40, 80, 160, 320, 640, 1000])
  })

  it("min = max: fixed batches whatever the claims return", () => {
    const fixed = BatchLimit.bounds({ batchSize: 100, minBatchSize: 100, budgetMillis: 10_000 })
    assert.deepStrictEqual(limitsFor(fixed, [full, rows(0), rows(3), full, rows(99)]), [100, 100, 100, 100, 100])
    // even when a batch takes far over the budget: min is a floor
    assert.deepStrictEqual(limitsFor(fixed, [full, full, full], 1000), [100, 100, 100])
  })

  it("time cap: never more than the last batch's pace delivers within the budget, never below min", () => {
    // 10 events in 500 ms (a 50 ms webhook): 200 fit in 10 s, so at most 160
    assert.strictEqual(BatchLimit.timeCap(defaults, 10, 500), 160)
    assert.strictEqual(BatchLimit.timeCap(defaults, 1000, 30), 1000)
    assert.strictEqual(BatchLimit.timeCap(defaults, 0, 0), 1000)
    assert.strictEqual(BatchLimit.timeCap(defaults, 10, 60_000), 10)
    assert.strictEqual(BatchLimit.next(defaults, 640, 640, 32_000), 160)
    // a 50 ms handler under a backlog settles at 160 rows (8 s per batch) instead of growing to 1,000
    assert.deepStrictEqual(limitsFor(defaults, Array.from({ length: 8 }, () => full), 50), [10, 20, 40, 80, 160, 160, 160, 160])
    // 15 ms per event: 640 (9.6 s) stays, doubling would pass 10 s
    assert.deepStrictEqual(limitsFor(defaults, Array.from({ length: 9 }, () => full), 15).slice(-3), [640, 640, 640])
    // a fast handler is not capped
    assert.deepStrictEqual(limitsFor(defaults, Array.from({ length: 9 }, () => full)).slice(-2), [1000, 1000])
  })
})
