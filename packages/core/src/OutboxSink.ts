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
import * as Scope from "effect/Scope"
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
  /**
   * Optional: delivers several events at once (a broker sink publishes them
   * all, then awaits their acks together) and says, per event and in the
   * same order, whether it was delivered (`undefined`) or why not. The relay
   * completes the delivered ones and retries or dead-letters the others, so
   * a partly acked batch loses nothing and completes nothing unacked. It
   * never fails as a whole: a connection lost mid-batch is a retryable
   * `DeliveryError` for each event not acked. Interrupting it interrupts the
   * whole batch (nothing counted). Without it the relay calls `deliver` per
   * event, in order.
   */
  readonly deliverBatch?: ((events: ReadonlyArray<OutboxEvent>) => Effect.Effect<BatchOutcome>) | undefined
  /**
   * Optional: whether the sink can reach its far side now (a broker
   * connection), for `/healthz` and `outbox health`. Sinks without a
   * connection of their own (a handler, a webhook) leave it out.
   */
  readonly connection?: Effect.Effect<ConnectionStatus> | undefined
}>()("@outbox/core/OutboxSink") {}

/**
 * A sink's connection to its far side: `connected`, or why not (`detail`:
 * the last connection error, or "reconnecting").
 *
 * @category models
 * @since 0.1.0
 */
export interface ConnectionStatus {
  readonly connected: boolean
  readonly detail?: string | undefined
}

/**
 * The outcome of `deliverBatch`: one entry per event, in order, `undefined`
 * for an event the far side acknowledged.
 *
 * @category models
 * @since 0.1.0
 */
export type BatchOutcome = ReadonlyArray<DeliveryError | undefined>

/**
 * Delivers `events` with the sink's `deliverBatch`, or one `deliver` after
 * the other (in order) when it has none: the relay's and the tests' one way
 * to hand a sink several events.
 *
 * @category combinators
 * @since 0.1.0
 */
export const deliverAll = (
  sink: OutboxSink["Service"],
  events: ReadonlyArray<OutboxEvent>
): Effect.Effect<BatchOutcome> =>
  sink.deliverBatch !== undefined
    ? sink.deliverBatch(events)
    : Effect.forEach(events, (event) =>
      Effect.match(sink.deliver(event), { onFailure: (error) => error, onSuccess: () => undefined }))

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
  Effect.map(Effect.context<R>(), (built) => {
    // What `Effect.provideContext(context)` does, at a fraction of the cost:
    // - the merge is remembered: the relay delivers every event of a worker
    //   from the same context, and a merge copies both contexts' services;
    // - when the current context already holds every service the handler was
    //   built with (as when the relay and the sink share their dependencies),
    //   nothing is provided at all: switching the fiber's context and back
    //   allocated ~360 bytes per event (measured with an allocation profile).
    // The layer's own Scope is not one of the handler's services: it is left
    // out, so a handler that needs a Scope gets the one it runs in.
    const context = Context.omit(Scope.Scope)(built) as Context.Context<R>
    // looked up key by key: reading `current.mapUnsafe` would copy a layered
    // context (one with a span set per event, as under tracing) into a Map
    const services = Array.from(context.mapUnsafe, ([key, service]) => [Context.Service<unknown>(key), service] as const)
    const holdsAll = (current: Context.Context<never>) => {
      for (const [key, service] of services) {
        if (Context.getOrUndefined(current, key) !== service) return false
      }
      return true
    }
    let outer: Context.Context<never> | undefined
    let merged: Context.Context<R> = context
    const provide = (current: Context.Context<never>): Context.Context<R> => {
      if (current !== outer) {
        outer = current
        merged = holdsAll(current) ? current as Context.Context<R> : Context.merge(current, context)
      }
      return merged
    }
    const onCause = (cause: Cause.Cause<E>): Effect.Effect<never, DeliveryError> =>
      Cause.hasInterruptsOnly(cause)
        ? Effect.failCause(cause as Cause.Cause<never>)
        : Effect.fail(toDeliveryError(Cause.squash(cause)))
    return OutboxSink.of({
      name,
      // data-first calls: no pipe closures per event
      deliver: (event) => Effect.catchCause(Effect.updateContext(handler(event), provide), onCause)
    })
  })

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
