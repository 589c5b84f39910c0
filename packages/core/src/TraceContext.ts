/**
 * W3C trace context (`traceparent`, `tracestate`) carried in an event's
 * metadata, so that one trace crosses the transaction boundary:
 * HTTP request → business transaction → publish → relay → sink → consumer.
 *
 * `Outbox.publish` writes the context of its own span into
 * `metadata.traceparent` (and `metadata.tracestate` when the span is backed
 * by an OpenTelemetry span that has one); the relay, the webhook sink and the
 * inbox helper read it back with `fromMetadata` and continue that trace.
 *
 * **Design: child, not link.** The relay's `process` span of an event is a
 * *child* of the producer's `publish` span (and *links* to the claim span of
 * its batch). One event is processed alone, so the OpenTelemetry messaging
 * conventions allow the parent/child form, and it puts the whole path of an
 * event in one trace. The cost: a trace stays open as long as its event waits
 * (retries included), so trace back-ends see long traces for events that are
 * retried for hours.
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Tracer from "effect/Tracer"

/**
 * The metadata keys.
 *
 * @category constants
 * @since 0.1.0
 */
export const TRACEPARENT = "traceparent"

/**
 * @category constants
 * @since 0.1.0
 */
export const TRACESTATE = "tracestate"

/**
 * `messaging.system` of every outbox span.
 *
 * @category constants
 * @since 0.1.0
 */
export const MESSAGING_SYSTEM = "outbox"

/**
 * A W3C trace context, ready for metadata or HTTP headers.
 *
 * @category models
 * @since 0.1.0
 */
export interface TraceContext {
  readonly traceparent: string
  readonly tracestate?: string | undefined
}

/**
 * A decoded `traceparent` (version 00).
 *
 * @category models
 * @since 0.1.0
 */
export interface Parsed {
  readonly traceId: string
  readonly spanId: string
  /** The trace flags byte (bit 0: sampled). */
  readonly traceFlags: number
  readonly sampled: boolean
  readonly tracestate: string | undefined
}

const traceIdPattern = /^[0-9a-f]{32}$/
const spanIdPattern = /^[0-9a-f]{16}$/
/** The value + 1 of each lower-case hex digit, by char code; 0 elsewhere. */
const hexDigits = new Uint8Array(128)
for (let value = 0; value < 16; value++) hexDigits["0123456789abcdef".charCodeAt(value)] = value + 1

/** Whether `text[from..to)` is lower-case hex (a code past 127 reads `undefined` from the table). */
const isHex = (text: string, from: number, to: number): boolean => {
  for (let i = from; i < to; i++) {
    if (!(hexDigits[text.charCodeAt(i)]! > 0)) return false
  }
  return true
}
const zeroTrace = "00000000000000000000000000000000"
const zeroSpan = "0000000000000000"

/** The tracestate of an OpenTelemetry-backed span (`@effect/opentelemetry`'s OtelSpan), if any. */
const otelTraceState = (span: Tracer.AnySpan): string | undefined => {
  const otel = (span as { readonly span?: { readonly spanContext?: () => { readonly traceState?: { serialize(): string } } } })
    .span
  if (otel === undefined || typeof otel.spanContext !== "function") return undefined
  const state = otel.spanContext().traceState?.serialize()
  return state === undefined || state === "" ? undefined : state
}

/**
 * The trace context of a span. Noop spans (tracing disabled, or all-zero
 * ids) have none.
 *
 * @category constructors
 * @since 0.1.0
 */
export const fromSpan = (span: Tracer.AnySpan): TraceContext | undefined => {
  const traceId = span.traceId.padStart(32, "0")
  if (!traceIdPattern.test(traceId) || !spanIdPattern.test(span.spanId)) return undefined
  // all zeros is W3C's invalid id: an OpenTelemetry no-op span (no SDK registered) carries it
  if (traceId === zeroTrace || span.spanId === zeroSpan) return undefined
  const traceparent = `00-${traceId}-${span.spanId}-${span.sampled ? "01" : "00"}`
  const tracestate = otelTraceState(span)
  return tracestate === undefined ? { traceparent } : { traceparent, tracestate }
}

/**
 * The trace context of the current span, if there is one.
 *
 * Read with `Effect.serviceOption(Tracer.ParentSpan)`, not
 * `Effect.option(Effect.currentParentSpan)`: the latter builds a
 * `NoSuchElementError` (an `Error`, with its stack trace) whenever there is
 * no span, which is every event outside a trace. Broker sinks read this
 * once per delivered event; the error cost ~25 µs of Node CPU per event
 * (measured on `RedisStreamSink.deliverBatch`, where it was three quarters
 * of the sink's own cost).
 *
 * @category constructors
 * @since 0.1.0
 */
export const current: Effect.Effect<TraceContext | undefined> = Effect.map(
  Effect.serviceOption(Tracer.ParentSpan),
  (span) => Option.isSome(span) ? fromSpan(span.value) : undefined
)

/**
 * What `Outbox.publish` stores: the current span's context when a tracer
 * that exports spans is installed (e.g. `@effect/opentelemetry`), nothing
 * under Effect's built-in tracer, whose spans go nowhere (no metadata bytes
 * spent on a trace nobody records).
 *
 * @category constructors
 * @since 0.1.0
 */
export const forPublish: Effect.Effect<TraceContext | undefined> = Effect.flatMap(
  Effect.service(Tracer.Tracer),
  (tracer) => tracer === Tracer.nativeTracer ? Effect.undefined : current
)

/**
 * Decodes a `traceparent` (and optional `tracestate`); anything malformed is
 * `undefined` (a broken header never fails a delivery).
 *
 * @category decoding
 * @since 0.1.0
 */
export const parse = (traceparent: unknown, tracestate?: unknown): Parsed | undefined => {
  // `00-<32 hex>-<16 hex>-<2 hex>`, lower-case; checked by hand, not by a regular expression: the relay
  // parses one per delivered event (a table lookup per character measured ~0.3 µs less than a branchy loop)
  if (typeof traceparent !== "string" || traceparent.length !== 55) return undefined
  if (
    traceparent.charCodeAt(0) !== 48 || traceparent.charCodeAt(1) !== 48 || traceparent.charCodeAt(2) !== 45 ||
    traceparent.charCodeAt(35) !== 45 || traceparent.charCodeAt(52) !== 45 ||
    !isHex(traceparent, 3, 35) || !isHex(traceparent, 36, 52) || !isHex(traceparent, 53, 55)
  ) return undefined
  const traceId = traceparent.slice(3, 35)
  const spanId = traceparent.slice(36, 52)
  if (traceId === zeroTrace || spanId === zeroSpan) return undefined
  const traceFlags = (hexDigits[traceparent.charCodeAt(53)]! - 1) * 16 + hexDigits[traceparent.charCodeAt(54)]! - 1
  return {
    traceId,
    spanId,
    traceFlags,
    sampled: (traceFlags & 1) === 1,
    tracestate: typeof tracestate === "string" && tracestate.length > 0 ? tracestate : undefined
  }
}

/**
 * The trace context stored in an event's metadata by `Outbox.publish`.
 *
 * @category decoding
 * @since 0.1.0
 */
export const fromMetadata = (metadata: Readonly<Record<string, unknown>> | null | undefined): Parsed | undefined =>
  metadata == null ? undefined : parse(metadata[TRACEPARENT], metadata[TRACESTATE])

/**
 * An Effect parent span for a decoded context (without `tracestate`: the
 * runtime restores it through `@effect/opentelemetry` where installed).
 *
 * @category constructors
 * @since 0.1.0
 */
export const externalSpan = (parsed: Parsed): Tracer.ExternalSpan =>
  Tracer.externalSpan({ traceId: parsed.traceId, spanId: parsed.spanId, sampled: parsed.sampled })
