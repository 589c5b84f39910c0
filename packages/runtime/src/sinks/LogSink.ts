/**
 * A sink that logs each event (for demos and local development).
 *
 * @since 0.1.0
 */
import { OutboxSink } from "@outbox/core/OutboxSink"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

/**
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<OutboxSink> = Layer.succeed(
  OutboxSink,
  OutboxSink.of({
    name: "log",
    deliver: (event) =>
      Effect.logInfo(`${event.eventType} ${event.aggregateType}/${event.aggregateId}`).pipe(
        Effect.annotateLogs({ trackingId: event.trackingId, eventId: String(event.id) })
      )
  })
)
