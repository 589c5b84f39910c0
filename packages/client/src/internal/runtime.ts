/**
 * What the promise API shares: running an Effect from a promise caller with
 * the tracer the caller's OpenTelemetry setup implies, and mapping driver
 * errors to the core's `StoreError`.
 *
 * @internal
 */
import * as OtelTracer from "@effect/opentelemetry/OtelTracer"
import { StoreError } from "@outbox/core/OutboxError"
import * as Otel from "@opentelemetry/api"
import * as Effect from "effect/Effect"
import * as Tracer from "effect/Tracer"

/**
 * The Effect tracer backed by the global OpenTelemetry tracer provider, built
 * once. Its spans take their parent from `@opentelemetry/api`'s active
 * context (the caller's span), as `@effect/opentelemetry` does for any span
 * without an Effect parent.
 */
let otelTracer: Tracer.Tracer | undefined

const buildOtelTracer = (): Tracer.Tracer => Effect.runSync(Effect.provide(OtelTracer.make, OtelTracer.layerGlobalTracer))

/**
 * Whether an OpenTelemetry SDK registered a tracer provider: the API's
 * global is a proxy whose delegate stays unset until one does. Without one
 * every span would be a no-op, so the built-in tracer is used and no trace
 * context is stored, exactly as `Outbox.publish` under Effect's built-in
 * tracer.
 *
 * @internal
 */
export const otelRegistered = (): boolean => {
  const provider = Otel.trace.getTracerProvider() as { getDelegateTracer?: (name: string) => unknown }
  return typeof provider.getDelegateTracer === "function"
    ? provider.getDelegateTracer("@outbox/client") !== undefined
    : true
}

/**
 * Runs `effect` as a promise under the tracer the caller's OpenTelemetry
 * setup implies. The span `effect` opens is created synchronously within this
 * call, so it sees the caller's active context.
 *
 * @internal
 */
export const run = <A, E>(effect: Effect.Effect<A, E>): Promise<A> =>
  Effect.runPromise(
    otelRegistered() ? Effect.withTracer(effect, otelTracer ??= buildOtelTracer()) : effect
  )

/** SQLSTATE classes and codes after which running the same statement again may succeed. */
const retryableCode = (code: string): boolean =>
  code.startsWith("08") || // connection exception
  code === "40001" || // serialization failure
  code === "40P01" || // deadlock
  code === "55P03" || // lock not available
  code === "57P01" || code === "57P02" || code === "57P03" || // admin / crash shutdown, cannot connect now
  code === "53300" // too many connections

const networkCodes = new Set(["ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENOTFOUND"])

/**
 * The core's `StoreError` for a failure thrown by the caller's driver or ORM:
 * its SQLSTATE (`code`, or Prisma's `meta.code`) decides `retryable`.
 *
 * @internal
 */
export const storeError = (operation: string) => (cause: unknown): StoreError => {
  const error = cause as { readonly code?: unknown; readonly message?: unknown; readonly meta?: { readonly code?: unknown } }
  const code = typeof error?.code === "string" ? error.code : typeof error?.meta?.code === "string" ? error.meta.code : undefined
  const message = typeof error?.message === "string" ? error.message : String(cause)
  return new StoreError({
    operation,
    message: `${operation}: ${code === undefined ? "" : `${code}: `}${message}`,
    retryable: code !== undefined && (retryableCode(code) || networkCodes.has(code)),
    cause
  })
}
