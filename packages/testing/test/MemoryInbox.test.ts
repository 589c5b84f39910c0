import { assert, describe, it } from "@effect/vitest"
import { Inbox } from "@outbox/core/Inbox"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Ref from "effect/Ref"
import * as MemoryInbox from "../src/MemoryInbox.ts"

describe("MemoryInbox", () => {
  it.effect("process runs the effect once per (consumer, tracking id)", () =>
    Effect.gen(function*() {
      const inbox = yield* Inbox
      const runs = yield* Ref.make(0)
      const charge = Effect.as(Ref.update(runs, (n) => n + 1), "charged")

      assert.deepStrictEqual(yield* inbox.process("billing", "t-1", charge), { _tag: "Processed", value: "charged" })
      assert.deepStrictEqual(yield* inbox.process("billing", "t-1", charge), { _tag: "Duplicate" })
      // another consumer of the same event is independent
      assert.strictEqual((yield* inbox.process("shipping", "t-1", Effect.void))._tag, "Processed")
      assert.strictEqual(yield* Ref.get(runs), 1)

      assert.isTrue(yield* inbox.isProcessed("billing", "t-1"))
      assert.isTrue(yield* inbox.isProcessed("shipping", "t-1"))
      assert.isFalse(yield* inbox.isProcessed("billing", "t-2"))
    }).pipe(Effect.provide(MemoryInbox.layer)))

  it.effect("a failing effect records nothing and its error surfaces unchanged; the redelivery runs it", () =>
    Effect.gen(function*() {
      const inbox = yield* Inbox
      const error = yield* Effect.flip(inbox.process("mailer", "t-9", Effect.fail("smtp down" as const)))
      assert.strictEqual(error, "smtp down")
      assert.isFalse(yield* inbox.isProcessed("mailer", "t-9"))

      const defect = yield* Effect.exit(inbox.process("mailer", "t-9", Effect.die("bug")))
      assert.strictEqual(defect._tag, "Failure")
      assert.isFalse(yield* inbox.isProcessed("mailer", "t-9"))

      assert.deepStrictEqual(yield* inbox.process("mailer", "t-9", Effect.succeed(1)), { _tag: "Processed", value: 1 })
      assert.isTrue(yield* inbox.isProcessed("mailer", "t-9"))
    }).pipe(Effect.provide(MemoryInbox.layer)))

  it.effect("concurrent redeliveries of one event run the effect once", () =>
    Effect.gen(function*() {
      const inbox = yield* Inbox
      const runs = yield* Ref.make(0)
      const slow = Effect.andThen(Effect.yieldNow, Ref.updateAndGet(runs, (n) => n + 1))
      const results = yield* Effect.all(
        Array.from({ length: 8 }, () => inbox.process("audit", "t-42", slow)),
        { concurrency: "unbounded" }
      )
      assert.strictEqual(yield* Ref.get(runs), 1)
      assert.strictEqual(results.filter((r) => r._tag === "Processed").length, 1)
      assert.strictEqual(results.filter((r) => r._tag === "Duplicate").length, 7)
    }).pipe(Effect.provide(MemoryInbox.layer)))

  it.effect("a redelivery waits for the one in flight; if that one fails, the redelivery runs the effect", () =>
    Effect.gen(function*() {
      const inbox = yield* Inbox
      const started = yield* Deferred.make<void>()
      const finish = yield* Deferred.make<void>()
      const first = yield* inbox.process(
        "c",
        "t-1",
        Effect.andThen(Deferred.succeed(started, undefined), Effect.andThen(Deferred.await(finish), Effect.fail("boom")))
      ).pipe(Effect.forkChild({ startImmediately: true }))
      yield* Deferred.await(started)
      // in flight: not recorded yet, and a redelivery has to wait
      assert.isFalse(yield* inbox.isProcessed("c", "t-1"))
      const second = yield* inbox.process("c", "t-1", Effect.succeed("second")).pipe(
        Effect.forkChild({ startImmediately: true })
      )
      const marker = yield* inbox.markProcessed("c", "t-1").pipe(Effect.forkChild({ startImmediately: true }))
      assert.isUndefined(second.pollUnsafe())
      assert.isUndefined(marker.pollUnsafe())

      yield* Deferred.succeed(finish, undefined)
      assert.strictEqual(yield* Effect.flip(Fiber.join(first)), "boom")
      assert.deepStrictEqual(yield* Fiber.join(second), { _tag: "Processed", value: "second" })
      assert.isFalse(yield* Fiber.join(marker))
    }).pipe(Effect.provide(MemoryInbox.layer)))

  it.effect("markProcessed reports whether the id was new, and process then skips it", () =>
    Effect.gen(function*() {
      const inbox = yield* Inbox
      assert.isTrue(yield* inbox.markProcessed("c", "x"))
      assert.isFalse(yield* inbox.markProcessed("c", "x"))
      assert.deepStrictEqual(yield* inbox.process("c", "x", Effect.die("must not run")), { _tag: "Duplicate" })
    }).pipe(Effect.provide(MemoryInbox.layer)))

  it.effect("each layer build is a new, empty inbox", () =>
    Effect.gen(function*() {
      yield* Effect.provide(Effect.flatMap(Inbox, (inbox) => inbox.markProcessed("c", "x")), MemoryInbox.layer)
      const fresh = yield* Effect.provide(
        Effect.flatMap(Inbox, (inbox) => inbox.isProcessed("c", "x")),
        MemoryInbox.layer
      )
      assert.isFalse(fresh)
    }))
})
