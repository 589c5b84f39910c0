/**
 * The error of a broker sink's layer: the sink could not be set up. Its
 * `reason` says why: its client library is not installed (`MissingClient`:
 * the broker clients are optional peer dependencies, installed only by the
 * applications that use them), its URL or options are wrong
 * (`InvalidOptions`), or the broker refused the set-up (`Connect`: a bad
 * login, a stream or exchange that cannot be declared).
 *
 * A broker that is merely down at start is not an error here: the sink
 * starts, reconnects in the background, and its deliveries fail retryably
 * until the broker is back.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * @category errors
 * @since 0.1.0
 */
export class SinkSetupError extends Schema.TaggedError<SinkSetupError>("@outbox/runtime/SinkSetupError")("SinkSetupError", {
  sink: Schema.String,
  reason: Schema.Literals(["MissingClient", "InvalidOptions", "Connect"]),
  message: Schema.String,
  cause: Schema.optional(Schema.Unknown)
}) {}
