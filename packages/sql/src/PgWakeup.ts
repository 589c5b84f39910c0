/**
 * The relay's side of the wake-up by LISTEN/NOTIFY: one session of its own
 * (not from the pool) that LISTENs on the outbox's channel and holds the
 * "a relay waits idle" gate that the producers' trigger reads (migration
 * `0007_wakeup_trigger`).
 *
 * **Why a gate.** NOTIFY serialises every committing transaction that sent
 * one behind a database-wide lock held until its commit record is flushed,
 * which undoes group commit for concurrent producers (`bench/notify.bench.ts`
 * measures it; the README's "Wake-up" section has the numbers). A busy
 * relay needs no wake-up: it claims again as soon as its batch is done. So
 * producers notify only while a relay has asked for it:
 *
 * - the relay holds an exclusive session-level advisory lock on
 *   `(hashtext('outbox.wakeup'), hashtext(channel))` (`arm`) and releases it
 *   (`disarm`);
 * - the trigger takes the same lock shared for its transaction, with
 *   `pg_try_advisory_xact_lock_shared`. Granted (no relay asks): it notifies
 *   nobody. Refused (a relay holds the lock or queues for it): it notifies.
 *
 * **Why no wake-up is lost.** A producer that skipped its notification holds
 * the shared lock until its transaction ends, so `arm` is granted only once
 * every such transaction has committed or rolled back; the relay claims once
 * more right after (the caller's job), which finds their rows. A producer
 * arriving later, while the exclusive lock is held or requested, is refused
 * the shared lock and notifies. PostgreSQL refuses a try-lock that conflicts
 * with a queued request, so the arming relay does not starve behind a steady
 * flow of producers: the holders of the moment drain and the lock is
 * granted.
 *
 * **Bounded waits.** `arm` waits at most `lockTimeout` (the session's
 * `lock_timeout`): a long transaction holding the shared lock (a batch job
 * that published early) would otherwise keep every other producer notifying
 * for as long as it runs, and this session, busy in the statement, receives
 * no notification meanwhile. A timed-out `arm` says so (`false`); the caller
 * claims anyway and tries again later. `othersArmed` tells whether another
 * relay holds (or queues for) the gate, in which case producers notify
 * already and this one need not try until that relay lets go.
 *
 * Several relay processes: one holds the lock, and every one of them hears
 * the notifications it causes.
 *
 * @since 0.1.0
 */
import * as PgConnection from "@effect/sql-pg/PgConnection"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { fromSql } from "./internal/sqlError.ts"
import * as WakeupTrigger from "./migrations/0007_wakeup_trigger.ts"
import type * as OutboxTables from "./OutboxTables.ts"

/**
 * The wake-up session failed: connecting, LISTEN, a gate statement, or the
 * session dropped (`operation` says which).
 *
 * @category errors
 * @since 0.1.0
 */
export class WakeupError extends Schema.TaggedError<WakeupError>("@outbox/sql/WakeupError")("WakeupError", {
  operation: Schema.String,
  message: Schema.String,
  cause: Schema.optional(Schema.Unknown)
}) {}

const failed = fromSql(({ cause, message, operation }) => new WakeupError({ operation, message, cause }), {
  detail: "server"
})

/**
 * The session, while its scope is open.
 *
 * @category models
 * @since 0.1.0
 */
export interface Session {
  /** The channel listened to (`OutboxTables.channel`). */
  readonly channel: string
  /** The session's backend pid (`pg_stat_activity.pid`). */
  readonly processId: number
  /**
   * Waits for the next notifications of the channel and returns how many
   * came (at least one; those of a burst already received come together).
   * Fails when the session drops: notifications sent from then on are lost,
   * so the caller reconnects and claims at once.
   */
  readonly notifications: Effect.Effect<number, WakeupError>
  /**
   * Takes the gate: `true` once this session holds the exclusive lock (the
   * producers that skipped their notification have finished), `false` when
   * `lockTimeout` passed first. Producers notify while it waits.
   */
  readonly arm: Effect.Effect<boolean, WakeupError>
  /** Releases the gate: producers stop notifying unless another relay holds it. */
  readonly disarm: Effect.Effect<void, WakeupError>
  /** Whether another session holds the gate or queues for it (producers notify meanwhile). */
  readonly othersArmed: Effect.Effect<boolean, WakeupError>
}

/**
 * Options of `connect`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /** The longest `arm` waits for the lock (default 50 ms). */
  readonly lockTimeout?: Duration.Input | undefined
}

/**
 * Opens the session for `tables.channel` in the current scope, with
 * `config` (a `PgClient`'s `config`: its pool is not used). It LISTENs
 * before this returns, so a row committed from then on is heard or found by
 * the caller's next claim.
 *
 * @category constructors
 * @since 0.1.0
 */
export const connect = Effect.fnUntraced(function*(
  config: PgConnection.Config,
  tables: Pick<OutboxTables.OutboxTables, "channel">,
  options: Options = {}
): Effect.fn.Return<Session, WakeupError, Scope.Scope> {
  const channel = tables.channel
  // a dead peer that sends nothing (a cut network) is noticed by keepalive, not only at the next statement
  const connection = yield* PgConnection.make({ ...config, multiplex: false, keepAlive: config.keepAlive ?? "30 seconds" }).pipe(
    Effect.mapError(failed("connect"))
  )
  const session = yield* connection.pin
  const queue = yield* session.listen(channel).pipe(Effect.mapError(failed(`LISTEN ${channel}`)))
  const lockTimeout = Math.max(1, Math.round(Duration.toMillis(Duration.fromInputUnsafe(options.lockTimeout ?? "50 millis"))))
  // the gate's waits are bounded by lock_timeout alone (no statement_timeout from the role or database cuts them)
  yield* session.query(`SET lock_timeout = ${lockTimeout}`).pipe(Effect.mapError(failed("settings")))
  yield* session.query("SET statement_timeout = 0").pipe(Effect.mapError(failed("settings")))
  const key = `${WakeupTrigger.gateNamespace}, pg_catalog.hashtext($1)`
  const statement = (operation: string, text: string) =>
    session.query(text, [channel]).pipe(Effect.mapError(failed(operation)))
  return {
    channel,
    processId: session.processId,
    notifications: Effect.map(Queue.takeAll(queue), (batch) => batch.length).pipe(
      Effect.mapError((cause) =>
        new WakeupError({
          operation: "listen",
          message: `the session listening on ${channel} dropped: ${cause.message}`,
          cause
        })
      )
    ),
    arm: session.query(`SELECT pg_catalog.pg_advisory_lock(${key})`, [channel]).pipe(
      Effect.as(true),
      Effect.catchIf((e) => e.reason._tag === "LockTimeoutError", () => Effect.succeed(false)),
      Effect.mapError(failed("arm"))
    ),
    // the session holds no other advisory lock: releasing them all also clears a lock taken twice
    disarm: session.query("SELECT pg_catalog.pg_advisory_unlock_all()").pipe(Effect.asVoid, Effect.mapError(failed("disarm"))),
    othersArmed: Effect.map(
      statement(
        "probe",
        `SELECT CASE WHEN pg_catalog.pg_try_advisory_lock_shared(${key})
                     THEN NOT pg_catalog.pg_advisory_unlock_shared(${key}) ELSE true END AS others`
      ),
      (result) => result.rows[0]?.others === true
    )
  }
})
