/**
 * The order options of the relay's claims, from its configuration: per-key
 * ordering (`OUTBOX_ORDERING=key`) or tenant fairness (`OUTBOX_FAIRNESS=tenant`),
 * the same for the lease claim and the transaction-scoped claim.
 *
 * @internal
 */
import type { Options } from "@outbox/core/OutboxConfig"
import type { Fairness, Ordering } from "@outbox/core/OutboxStore"

/**
 * `ordering` and `fairness` of a claim. Per-key ordering wins where both
 * are set (the relay warns at start): a fair claim does not know keys.
 *
 * @internal
 */
export const claimOrder = (
  config: Pick<Options, "ordering" | "orderingDeadLetter" | "fairness"> & {
    readonly fairnessMaxInFlight?: number | undefined
  }
): { readonly ordering?: Ordering; readonly fairness?: Fairness } =>
  config.ordering === "key"
    ? { ordering: { deadLetter: config.orderingDeadLetter } }
    : config.fairness === "tenant"
    ? { fairness: config.fairnessMaxInFlight === undefined ? {} : { maxInFlight: config.fairnessMaxInFlight } }
    : {}
