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
 * `ordering` and `fairness` of a claim. With both, the claim is ordered and
 * takes its heads tenant by tenant in turn (`Fairness`).
 *
 * @internal
 */
export const claimOrder = (
  config: Pick<Options, "ordering" | "orderingDeadLetter" | "fairness"> & {
    readonly fairnessMaxInFlight?: number | undefined
  }
): { readonly ordering?: Ordering; readonly fairness?: Fairness } => {
  const ordering: Ordering | undefined = config.ordering === "key" ? { deadLetter: config.orderingDeadLetter } : undefined
  const fairness: Fairness | undefined = config.fairness !== "tenant"
    ? undefined
    : config.fairnessMaxInFlight === undefined
    ? {}
    : { maxInFlight: config.fairnessMaxInFlight }
  return { ...(ordering === undefined ? {} : { ordering }), ...(fairness === undefined ? {} : { fairness }) }
}
