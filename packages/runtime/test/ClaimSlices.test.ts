import { assert, describe, it } from "@effect/vitest"
import * as ClaimSlices from "../src/internal/claimSlices.ts"

/** The slices a worker asks for when its claims come back full or short as `outcomes` says, in turn. */
const slicesFor = (worker: number, workers: number, outcomes: ReadonlyArray<boolean>) => {
  const slices = ClaimSlices.make(worker, workers)
  return outcomes.map((full) => {
    const slice = slices.next()
    slices.claimed(slice, full)
    return slice === undefined ? "all" : `${slice.index}/${slice.count}`
  })
}

describe("ClaimSlices", () => {
  it("claims the whole key space first and after a short claim; its own two slices in turn after a full one", () => {
    // worker 1 of 2 owns slices 2 and 3 of 4
    assert.deepStrictEqual(
      slicesFor(1, 2, [true, true, true, false, true, true]),
      ["all", "2/4", "3/4", "2/4", "all", "3/4"]
    )
    assert.deepStrictEqual(slicesFor(0, 3, [true, true, true]), ["all", "0/6", "1/6"])
  })

  it("one worker never slices", () => {
    assert.deepStrictEqual(slicesFor(0, 1, [true, true, true]), ["all", "all", "all"])
  })

  it("after a short claim of a slice the next 1, 2, 4 ... 64 claims are of the whole key space; a full claim of a slice resets it", () => {
    // a backlog over one key: every slice comes back short, the whole space full
    const oneKey = (() => {
      const slices = ClaimSlices.make(0, 2)
      const asked: Array<string> = []
      for (let i = 0; i < 300; i++) {
        const slice = slices.next()
        slices.claimed(slice, slice === undefined)
        asked.push(slice === undefined ? "all" : "slice")
      }
      return asked
    })()
    const tried = oneKey.flatMap((s, i) => (s === "slice" ? [i] : []))
    // the gaps between tries: after the first claim, then 1 + 1, 2 + 1, 4 + 1, ... up to 64 + 1
    const gaps = tried.map((at, i) => at - (tried[i - 1] ?? -1))
    assert.deepStrictEqual(gaps.slice(0, 8), [2, 2, 3, 5, 9, 17, 33, 65])
    assert.isTrue(gaps.slice(8).every((g) => g === 65))
    // once a slice comes back full again, the next short one skips a single claim
    assert.deepStrictEqual(
      slicesFor(0, 2, [true, false, true, true, true, true, false, true, true]),
      ["all", "0/4", "all", "1/4", "0/4", "1/4", "0/4", "all", "1/4"]
    )
  })
})
