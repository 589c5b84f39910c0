/**
 * A sink that POSTs each event as JSON to a URL.
 *
 * Body: `{ trackingId, aggregateType, aggregateId, eventType, payload,
 * metadata, createdAt }`, with the header `Idempotency-Key: <trackingId>` so
 * the receiver can deduplicate redeliveries.
 *
 * Outcome: 2xx delivered; 408, 429, 5xx, network errors and timeouts are
 * retryable; any other status is permanent (the event is dead-lettered).
 *
 * @since 0.1.0
 */
import { DeliveryError } from "@outbox/core/OutboxError"
import type { OutboxEvent } from "@outbox/core/OutboxEvent"
import { OutboxSink } from "@outbox/core/OutboxSink"
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as FetchHttpClient from "effect/http/FetchHttpClient"
import * as HttpClient from "effect/http/HttpClient"
import * as HttpClientRequest from "effect/http/HttpClientRequest"

/**
 * @category models
 * @since 0.1.0
 */
export interface Options {
  readonly url: string
  /** Per-request timeout (default 10 seconds). */
  readonly timeout?: Duration.Input | undefined
  /** Extra headers, e.g. authorization. */
  readonly headers?: Readonly<Record<string, string>> | undefined
}

/**
 * The JSON body the webhook receives.
 *
 * @category models
 * @since 0.1.0
 */
export const body = (event: OutboxEvent) => ({
  trackingId: event.trackingId,
  aggregateType: event.aggregateType,
  aggregateId: event.aggregateId,
  eventType: event.eventType,
  payload: event.payload,
  metadata: event.metadata,
  createdAt: event.createdAt.toISOString()
})

const retryableStatus = (status: number) => status === 408 || status === 429 || status >= 500

/**
 * Builds the sink over the `HttpClient` in context.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (options: Options): Effect.Effect<OutboxSink["Service"], never, HttpClient.HttpClient> =>
  Effect.map(Effect.service(HttpClient.HttpClient), (client) => {
    const timeout = Duration.fromInputUnsafe(options.timeout ?? "10 seconds")
    const deliver = (event: OutboxEvent): Effect.Effect<void, DeliveryError> =>
      HttpClientRequest.post(options.url).pipe(
        HttpClientRequest.setHeaders({ ...options.headers, "idempotency-key": event.trackingId }),
        HttpClientRequest.bodyJsonUnsafe(body(event)),
        client.execute,
        Effect.timeoutOrElse({
          duration: timeout,
          orElse: () => Effect.fail(DeliveryError.transient(`webhook timed out after ${Duration.format(timeout)}`))
        }),
        Effect.scoped,
        Effect.flatMap((response) =>
          response.status >= 200 && response.status < 300
            ? Effect.void
            : Effect.fail(
              new DeliveryError({
                message: `webhook answered ${response.status}`,
                retryable: retryableStatus(response.status)
              })
            )
        ),
        Effect.catchTag("HttpClientError", (error) => Effect.fail(DeliveryError.transient(`webhook request failed: ${error.message}`, error)))
      )
    return OutboxSink.of({ name: "webhook", deliver })
  })

/**
 * The webhook sink, with the fetch-based HTTP client.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options): Layer.Layer<OutboxSink> =>
  Layer.effect(OutboxSink, make(options)).pipe(Layer.provide(FetchHttpClient.layer))

/**
 * The webhook sink for `OUTBOX_SINK_URL` (and `OUTBOX_SINK_TIMEOUT`, a duration, default 10 seconds).
 *
 * @category layers
 * @since 0.1.0
 */
export const layerConfig: Layer.Layer<OutboxSink, Config.ConfigError> = Layer.unwrap(
  Effect.gen(function*() {
    const url = yield* Config.URL("OUTBOX_SINK_URL")
    const timeout = yield* Config.Duration("OUTBOX_SINK_TIMEOUT").pipe(Config.withDefault(Duration.seconds(10)))
    return layer({ url: url.toString(), timeout })
  })
)
