import { assert, describe, it } from "@effect/vitest"
import * as TraceContext from "@outbox/core/TraceContext"

const traceId = "4bf92f3577b34da6a3ce929d0e0e4736"
const spanId = "00f067aa0ba902b7"

describe("TraceContext.parse", () => {
  it("decodes a W3C traceparent, its flags and the tracestate", () => {
    assert.deepStrictEqual(TraceContext.parse(`00-${traceId}-${spanId}-01`, "vendor=x"), {
      traceId,
      spanId,
      traceFlags: 1,
      sampled: true,
      tracestate: "vendor=x"
    })
    const unsampled = TraceContext.parse(`00-${traceId}-${spanId}-00`, "")
    assert.strictEqual(unsampled?.sampled, false)
    assert.strictEqual(unsampled?.tracestate, undefined)
    // other flag bits are kept; bit 0 alone says sampled
    assert.deepStrictEqual(
      [TraceContext.parse(`00-${traceId}-${spanId}-03`)?.traceFlags, TraceContext.parse(`00-${traceId}-${spanId}-02`)?.sampled],
      [3, false]
    )
  })

  it("refuses anything malformed with undefined, never an exception", () => {
    const bad: Array<unknown> = [
      undefined,
      null,
      42,
      { traceparent: "x" },
      "",
      `00-${traceId}-${spanId}-1`, // short
      `00-${traceId}-${spanId}-011`, // long
      `01-${traceId}-${spanId}-01`, // unknown version
      `0A-${traceId}-${spanId}-01`,
      `00-${traceId.toUpperCase()}-${spanId}-01`, // upper case
      `00-${traceId}-${spanId.toUpperCase()}-01`,
      `00_${traceId}-${spanId}-01`, // separators
      `00-${traceId}_${spanId}-01`,
      `00-${traceId}-${spanId}_01`,
      `00-${traceId.slice(0, 31)}g-${spanId}-01`, // not hex
      `00-${traceId}-${spanId}-0z`,
      `00-${"0".repeat(32)}-${spanId}-01`, // all-zero ids
      `00-${traceId}-${"0".repeat(16)}-01`
    ]
    for (const value of bad) assert.strictEqual(TraceContext.parse(value), undefined, String(value))
  })

  it("fromMetadata reads traceparent and tracestate from an event's metadata", () => {
    assert.strictEqual(TraceContext.fromMetadata({ traceparent: `00-${traceId}-${spanId}-01`, tracestate: "a=b" })?.tracestate, "a=b")
    assert.strictEqual(TraceContext.fromMetadata({}), undefined)
    assert.strictEqual(TraceContext.fromMetadata(null), undefined)
  })
})
