/**
 * Wake-up by LISTEN/NOTIFY: a duty (see `Duty`) that hears the outbox's
 * notifications and wakes the relay's idle workers (`Wakeup`), so that an
 * event committed while the relay waits is claimed within milliseconds
 * rather than at the next poll, without polling often. On by default
 * (`OUTBOX_NOTIFY`); the poll stays, as the upper bound on latency and the
 * safety net.
 *
 * - **Producers notify once per transaction**, from a statement-level
 *   trigger (migration `0007_wakeup_trigger`), so plain-SQL producers in
 *   any language wake the relay too; and **only while a relay asks**:
 *   NOTIFY serialises committing transactions behind one database-wide lock,
 *   so the listener holds a gate (an advisory lock, `@outbox/sql/PgWakeup`)
 *   only while a worker waits, and lets go once notifications say producers
 *   commit close together (two within `burstGap`, 1 ms) or the relay is busy
 *   (no worker waits `hold`, 10 ms, after one): the relay then claims what
 *   follows as its batches end, and those producers commit without NOTIFY.
 *   It takes the gate again at most every `rearmAfter` (1 ms), and claims
 *   once more whenever it does, which finds what was committed meanwhile.
 *   A trickle of commits further apart keeps the gate held: each event is
 *   one notification, one claim and one completion. Until 2026-12-06 it let
 *   go at the first notification, and each event of a trickle also cost a
 *   `disarm`, an `arm` and the claim after it (4.5 statements an event
 *   against 2 at 300 one-event transactions/s, `pg_stat_statements`).
 *   Idle, it holds the gate and costs nothing. Measured costs
 *   (`bench/notify.bench.ts`) are in the README's "Wake-up" section.
 *   While it listens (`Wakeup.listening`), an unordered worker whose claim
 *   came back short waits as after an empty one: a later commit notifies or
 *   is found by the claim after the next arm, so the claim that would have
 *   found nothing is saved (`Relay`).
 * - **One listening connection per relay process**, its own (not from the
 *   pool). A burst of notifications is one wake-up; a notification that
 *   arrives while a worker claims is not lost (`Wakeup`).
 * - **Reconnects** after a dropped session (a run of the duty fails, is
 *   logged and counted in `outbox_relay_failures_total{loop="wakeup"}`, and
 *   the next one starts after a backoff from `reconnectBase`, doubling, at
 *   most `reconnectMax`, reset once listening), and **claims at once** when
 *   it listens again: notifications sent meanwhile are lost. While it cannot
 *   listen the relay polls.
 * - **Off** with `OUTBOX_NOTIFY=false` (behind PgBouncer in transaction
 *   mode, which cannot keep a LISTEN), and without a `PgClient` in context
 *   (a `SqlClient` of another kind): logged once, the relay polls.
 *
 * @since 0.1.0
 */
import { PgClient } from "@effect/sql-pg"
import * as OutboxTables from "@outbox/sql/OutboxTables"
import * as PgWakeup from "@outbox/sql/PgWakeup"
import type * as Config from "effect/Config"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Ref from "effect/Ref"
import * as Schedule from "effect/Schedule"
import * as Duty from "./Duty.ts"
import * as Counter from "./internal/counter.ts"
import * as OutboxEnv from "./OutboxEnv.ts"
import { Wakeup } from "./Wakeup.ts"

/**
 * What the listener is doing, and has done.
 *
 * @category models
 * @since 0.1.0
 */
export interface Status extends Duty.Status {
  /** Why it does not listen at all (`OUTBOX_NOTIFY=false`, no `PgClient`); `undefined` when on. */
  readonly off: string | undefined
  /** The channel (`<outbox>_wakeup`). */
  readonly channel: string
  /** Both sessions are up and LISTEN: notifications wake the relay. */
  readonly listening: boolean
  /** The gate is held: a worker waits, and the next producer to commit notifies. */
  readonly armed: boolean
  /** Times it started listening (1 after start; more after reconnects). */
  readonly connects: number
  /**
   * Times it took the gate. Under a trickle of events it takes it once and
   * holds it (`WakeupListener`'s `burstGap`, `hold`); each burst, or each
   * stretch in which the relay is busy, lets it go, and it takes it again.
   */
  readonly arms: number
  /** Notifications heard. */
  readonly notifications: number
  /** The listening session's backend pid (`pg_stat_activity.pid`) while listening. */
  readonly processId: number | undefined
}

/**
 * The running listener.
 *
 * @category services
 * @since 0.1.0
 */
export class WakeupListener extends Context.Service<WakeupListener, {
  readonly status: Effect.Effect<Status>
}>()("@outbox/runtime/WakeupListener") {}

/**
 * Options of `make` / `layer`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Options {
  /** Listen at all (default `true`; `OUTBOX_NOTIFY` in `layerConfig`). */
  readonly enabled?: boolean | undefined
  /** The outbox's names: its `channel` (default: the table `outbox`). */
  readonly tables?: Pick<OutboxTables.OutboxTables, "channel"> | undefined
  /** Delay before the first reconnect after a failure, doubled per failed attempt (default 100 ms). */
  readonly reconnectBase?: Duration.Input | undefined
  /** The longest delay between reconnect attempts (default 5 seconds). */
  readonly reconnectMax?: Duration.Input | undefined
  /**
   * The shortest time between letting go of the gate and taking it again
   * (default 1 ms): at most one window in which producers notify per
   * period, and at most that much added latency for events committed by a
   * steady flow of producers (the relay claims them when it takes the gate).
   *
   * Why 1 ms (3 ms from 2026-12-04, 10 ms before): `bench:peers` W2 (500
   * one-event transactions/s, 2 lease workers), 2026-12-06, alternating
   * runs: 1 ms gave p50 0.9–1.0 / p90 1.3–1.5 / p99 4.6–5.3 ms, 3 ms
   * 1.3–1.5 / 2.8–3.0 / 5.9–7.3 (events committed while the gate is down
   * wait for it: the 3 ms showed in the p90), 0 ms 1.0 / 1.6 / 4.7;
   * graphile-worker's perf preset beside them 1.1 / 1.4–1.6 / 3.9–4.2. The
   * cost is claims: Node + backends at that rate 39–40 + 49–54 % of a core
   * against 33–35 + 44–45 at 3 ms. Producers paid nothing measurable: 16
   * beside a relay (`bench/notify.bench.ts`, two alternating pairs)
   * committed 3,398–4,189 tx/s against 3,073–4,315 at 3 ms (on 2026-12-04,
   * 10 ms against 3 ms: 2,383–2,509 against 2,218–2,332). A busy relay never
   * re-arms, so a backlog pays nothing; an idle one holds the gate and pays
   * nothing either.
   */
  readonly rearmAfter?: Duration.Input | undefined
  /**
   * Notifications closer together than this (default 1 ms) make the
   * listener let go of the gate: producers then commit close together, and
   * NOTIFY would have them wait on one another's commits. Further apart,
   * their commits do not overlap, and it holds on.
   */
  readonly burstGap?: Duration.Input | undefined
  /**
   * How long after a notification, with none after it, a worker must wait
   * again for the gate to stay held (default 10 ms): a worker that claims
   * one event and waits again keeps it held; a relay busy for longer lets it
   * go.
   */
  readonly hold?: Duration.Input | undefined
  /** The longest the listener waits for the gate (default 50 ms; see `PgWakeup`). */
  readonly lockTimeout?: Duration.Input | undefined
}

interface State {
  readonly listening: boolean
  readonly armed: boolean
  readonly connects: number
  readonly arms: number
  readonly notifications: number
  readonly processId: number | undefined
}

const initial: State = { listening: false, armed: false, connects: 0, arms: 0, notifications: 0, processId: undefined }

/**
 * Starts the listener in the current scope (or, when it is off, logs why
 * once and starts nothing).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = Effect.fnUntraced(function*(options: Options = {}) {
  const wakeup = yield* Wakeup
  const channel = (options.tables ?? OutboxTables.defaults).channel
  const state = yield* Ref.make(initial)
  const pg = yield* Effect.serviceOption(PgClient.PgClient)
  const off = options.enabled === false
    ? "OUTBOX_NOTIFY=false"
    : Option.isNone(pg)
    ? "no PgClient in context (a SqlClient of another kind)"
    : undefined
  if (off !== undefined || Option.isNone(pg)) {
    // asked for: information; a client that cannot LISTEN: a warning, since the default is on
    yield* (options.enabled === false ? Effect.logInfo : Effect.logWarning)(
      `wake-up by LISTEN/NOTIFY is off (${off}): idle relay workers poll`
    ).pipe(Effect.annotateLogs({ module: "WakeupListener" }))
    return WakeupListener.of({
      status: Effect.map(Ref.get(state), (s) => ({ ...Duty.initialStatus, ...s, off, channel }))
    })
  }
  const config = pg.value.config
  const base = Duration.fromInputUnsafe(options.reconnectBase ?? Duration.millis(100))
  const max = Duration.fromInputUnsafe(options.reconnectMax ?? Duration.seconds(5))
  /** Failed attempts since the listener last listened: the reconnect backoff's exponent. */
  const failures = yield* Ref.make(0)

  const rearmAfter = Duration.toMillis(Duration.fromInputUnsafe(options.rearmAfter ?? Duration.millis(1)))
  const burstGap = Duration.toMillis(Duration.fromInputUnsafe(options.burstGap ?? Duration.millis(1)))
  const hold = Duration.fromInputUnsafe(options.hold ?? Duration.millis(10))
  /** While another relay's gate covers us: how long before trying again anyway (it may have gone away). */
  const othersCheck = Duration.seconds(1)
  /** The longest pause between two `arm`s while a long transaction keeps them timing out. */
  const slowest = 1000

  /** Until some worker waits. */
  const someoneWaits: Effect.Effect<void> = Effect.gen(function*() {
    while (true) {
      const idle = yield* wakeup.idleWorkers
      if (idle.workers > 0) return
      yield* wakeup.awaitIdleChange(idle.version)
    }
  })

  /**
   * While the gate is held: until notifications say that producers are
   * busy, or the relay is (then producers need not notify). A notification
   * within `burstGap` of the one before it, or several read at once, ends it
   * (producers commit close together: NOTIFY's commit lock would make them
   * wait on one another); so does a pause of `hold` after a notification
   * with no worker waiting at its end (the relay is busy with what it
   * claimed, and claims again when its batch is done). A trickle of
   * notifications further apart keeps it held: each event costs its claim
   * and its completion, not also a `disarm`, an `arm` and the claim after it.
   */
  const held = (heard: Counter.Counter, seen: number): Effect.Effect<void> =>
    Effect.gen(function*() {
      let last = Number.NEGATIVE_INFINITY
      let count = seen
      while (true) {
        yield* heard.await(count)
        const before = count
        count = heard.count()
        const now = yield* Clock.currentTimeMillis
        // two at once, or this one within `burstGap` of the last
        if (count - before > 1 || now - last < burstGap) return
        last = now
        // the next notification (taken at the top of the loop), or a pause: then a worker should wait again
        const more = yield* Effect.raceFirst(Effect.as(Effect.sleep(hold), false), Effect.as(heard.await(count), true))
        if (!more && (yield* wakeup.idleWorkers).workers === 0) return
      }
    })

  /**
   * The gate: taken while a worker waits, let go once notifications say
   * producers or the relay are busy (`held`), taken again at most every
   * `rearmAfter`. Each time it is taken (or could not be in time) the
   * workers claim once more, for the rows of producers that did not notify.
   */
  const gate = (session: PgWakeup.Session, heard: Counter.Counter) => {
    let released = Number.NEGATIVE_INFINITY
    /** `arm`s in a row that timed out (a long transaction holds the shared lock): each doubles the pause. */
    let timeouts = 0
    const setArmed = (armed: boolean) => Ref.update(state, (s) => ({ ...s, armed, arms: armed ? s.arms + 1 : s.arms }))
    return Effect.forever(Effect.gen(function*() {
      yield* someoneWaits
      const pause = Math.min(rearmAfter * 2 ** Math.min(timeouts, 20), Math.max(rearmAfter, slowest))
      const since = (yield* Clock.currentTimeMillis) - released
      if (since < pause) yield* Effect.sleep(Duration.millis(pause - since))
      const seen = heard.count()
      if (yield* session.arm) {
        timeouts = 0
        yield* setArmed(true)
        yield* wakeup.wake
        yield* held(heard, seen)
        // said before the statement: `armed` must not outlast the lock
        yield* setArmed(false)
        yield* session.disarm
      } else {
        // producers that did not notify may have committed meanwhile: claim
        yield* wakeup.wake
        if (yield* session.othersArmed) {
          // another relay holds it: producers notify while it does, and we hear them too until it lets go
          timeouts = 0
          yield* Effect.timeoutOption(heard.await(heard.count()), othersCheck)
        } else {
          // a long transaction holds the shared lock: producers notify while we queue, so queue less and less often
          timeouts++
        }
      }
      released = yield* Clock.currentTimeMillis
    }))
  }

  /** One session: connect, listen, wake the relay at once, then hear and gate until the session drops. */
  const run = Effect.scoped(Effect.gen(function*() {
    const session = yield* PgWakeup.connect(config, { channel }, { lockTimeout: options.lockTimeout })
    yield* Ref.set(failures, 0)
    const { connects } = yield* Ref.updateAndGet(state, (s) => ({
      ...s,
      listening: true,
      connects: s.connects + 1,
      processId: session.processId
    }))
    if (connects > 1) yield* Effect.logInfo(`listening on ${channel} again; claiming at once (notifications sent meanwhile were lost)`)
    // notifications sent while nobody listened are lost: claim now
    yield* wakeup.setListening(true)
    yield* wakeup.wake
    const heard = Counter.make()
    const hear = Effect.forever(
      Effect.flatMap(session.notifications, (n) =>
        Effect.andThen(
          Ref.update(state, (s) => ({ ...s, notifications: s.notifications + n })),
          // one count per notification: several read at once are a burst (`held`)
          Effect.sync(() => heard.bump(n))
        ).pipe(
          Effect.andThen(wakeup.wake)
        ))
    )
    return yield* Effect.all([hear, gate(session, heard)], { concurrency: 2, discard: true })
  })).pipe(
    Effect.onError(() => Ref.update(failures, (n) => n + 1)),
    Effect.ensuring(Effect.andThen(
      wakeup.setListening(false),
      Ref.update(state, (s) => ({ ...s, listening: false, armed: false, processId: undefined }))
    )),
    Effect.annotateLogs({ module: "WakeupListener" })
  )

  const backoff = Effect.map(
    Ref.get(failures),
    (n) => Duration.min(Duration.times(base, 2 ** Math.min(Math.max(n - 1, 0), 30)), max)
  )
  const status = yield* Duty.start(Duty.make({
    name: "wakeup",
    // a run ends only when a session dropped (or never came up): the next one after the backoff
    schedule: Schedule.forever.pipe(Schedule.modifyDelay(() => backoff)),
    run
  }))
  return WakeupListener.of({
    status: Effect.zipWith(status, Ref.get(state), (d, s) => ({ ...d, ...s, off: undefined, channel }))
  })
})

/**
 * The listener as a layer: it runs as long as the layer. Needs the relay's
 * `Wakeup`; finds the `PgClient` in context when there is one.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: Options = {}): Layer.Layer<WakeupListener, never, Wakeup> =>
  Layer.effect(WakeupListener, make(options))

/**
 * `layer` with `enabled` from `OUTBOX_NOTIFY` (`OutboxEnv.notify`) unless
 * `options` sets it.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerConfig = (options: Options = {}): Layer.Layer<WakeupListener, Config.ConfigError, Wakeup> =>
  Layer.unwrap(Effect.map(OutboxEnv.notify, (enabled) => layer({ ...options, enabled: options.enabled ?? enabled })))
