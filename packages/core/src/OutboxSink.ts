/**
 * The sink port: where the relay hands each claimed event.
 *
 * A sink fails with `DeliveryError`; `retryable: false` dead-letters the event
 * at once. `fromHandler` adapts any effectful function, treating its failures
 * (and defects) as retryable unless they are a permanent `DeliveryError`.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { DeliveryError } from "./OutboxError.ts"
import type { OutboxEvent } from "./OutboxEvent.ts"

/**
 * @category services
 * @since 0.1.0
 */
export class OutboxSink extends Context.Service<OutboxSink, {
  /** A short name for logs and spans (e.g. "webhook"). */
  readonly name: string
  readonly deliver: (event: OutboxEvent) => Effect.Effect<void, DeliveryError>
}>()("@outbox/core/OutboxSink") {}

/**
 * Turns any error into a `DeliveryError` (kept as is when it already is one).
 *
 * @category error handling
 * @since 0.1.0
 */
export const toDeliveryError = (error: unknown): DeliveryError =>
  error instanceof DeliveryError
    ? error
    : DeliveryError.transient(
      error instanceof Error ? error.message : typeof error === "string" ? error : String(error),
      error
    )

/**
 * A sink from a handler function. Typed failures and defects become
 * retryable `DeliveryError`s unless the handler fails with a permanent one.
 *
 * @category constructors
 * @since 0.1.0
 */
export const fromHandler = <E, R>(
  handler: (event: OutboxEvent) => Effect.Effect<void, E, R>,
  name = "handler"
): Effect.Effect<OutboxSink["Service"], never, R> =>
  Effect.map(Effect.context<R>(), (context) =>
    OutboxSink.of({
      name,
      deliver: (event) =>
        handler(event).pipe(
          Effect.provideContext(context),
          Effect.catchCause((cause) =>
            Cause.hasInterruptsOnly(cause)
              ? Effect.failCause(cause as Cause.Cause<never>)
              : Effect.fail(toDeliveryError(Cause.squash(cause)))
          )
        )
    }))

/**
 * A layer providing a handler-backed sink.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerHandler = <E, R>(
  handler: (event: OutboxEvent) => Effect.Effect<void, E, R>,
  name?: string
): Layer.Layer<OutboxSink, never, R> => Layer.effect(OutboxSink, fromHandler(handler, name))
