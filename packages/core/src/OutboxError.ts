/**
 * Typed errors of the outbox.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * Why an event was refused before anything was written.
 *
 * @category errors
 * @since 0.1.0
 */
export const InvalidEventReason = Schema.Literals([
  "MissingField",
  "NotSerializable",
  "PayloadTooLarge",
  "InvalidMaxRetries",
  "InvalidText",
  "InvalidSchedule",
  "InvalidOrderingKey",
  "InvalidTenant"
])

/**
 * An event failed validation in `Outbox.publish`. Nothing was written, and the
 * caller's transaction is left for the caller to commit or roll back.
 *
 * @category errors
 * @since 0.1.0
 */
export class InvalidEvent extends Schema.TaggedError<InvalidEvent>("@outbox/core/InvalidEvent")("InvalidEvent", {
  reason: InvalidEventReason,
  field: Schema.String,
  message: Schema.String,
  /** Index of the offending event in a `publishAll` call (0 for `publish`). */
  index: Schema.Number
}) {}

/**
 * A transition was fenced off: the lease was reaped (and possibly re-claimed
 * under another token) before this holder finished. Nothing was changed for
 * the listed leases.
 *
 * @category errors
 * @since 0.1.0
 */
export class LeaseLost extends Schema.TaggedError<LeaseLost>("@outbox/core/LeaseLost")("LeaseLost", {
  operation: Schema.Literals(["renew", "complete", "retry", "deadLetter", "release"]),
  eventIds: Schema.Array(Schema.BigInt),
  lockToken: Schema.BigInt
}) {
  override get message(): string {
    return `lease lost during ${this.operation} for event(s) ${this.eventIds.join(", ")} (lock token ${this.lockToken})`
  }
}

/**
 * The store failed (connection, SQL, serialization). Infrastructure errors are
 * mapped to this at the store boundary; `retryable` mirrors the driver's view.
 *
 * @category errors
 * @since 0.1.0
 */
export class StoreError extends Schema.TaggedError<StoreError>("@outbox/core/StoreError")("StoreError", {
  operation: Schema.String,
  message: Schema.String,
  retryable: Schema.Boolean,
  cause: Schema.optional(Schema.Unknown)
}) {}

/**
 * A sink failed to deliver an event. `retryable: false` dead-letters the event
 * at once; anything else is retried by the retry policy.
 *
 * @category errors
 * @since 0.1.0
 */
export class DeliveryError extends Schema.TaggedError<DeliveryError>("@outbox/core/DeliveryError")("DeliveryError", {
  message: Schema.String,
  retryable: Schema.Boolean,
  cause: Schema.optional(Schema.Unknown)
}) {
  /**
   * A failure that no retry can fix (a poison event): dead-letter it now.
   *
   * @since 0.1.0
   */
  static permanent(message: string, cause?: unknown): DeliveryError {
    return new DeliveryError({ message, retryable: false, cause })
  }
  /**
   * A transient failure: retry with backoff.
   *
   * @since 0.1.0
   */
  static transient(message: string, cause?: unknown): DeliveryError {
    return new DeliveryError({ message, retryable: true, cause })
  }
}
