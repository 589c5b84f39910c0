import * as Outbox from "@outbox/client/prisma"
import { PrismaPg } from "@prisma/adapter-pg"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import { createRequire } from "node:module"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { type Statement, suite } from "./adapters/AdapterSuite.ts"

/** The part of the generated client's interactive transaction the test uses: raw SQL and the `Order` model. */
interface Transaction extends Outbox.PrismaTransaction {
  readonly order: { readonly create: (args: { readonly data: { readonly id: string } }) => Promise<unknown> }
}

/** The part of the generated `PrismaClient` the test uses. */
interface Client extends Transaction {
  readonly $transaction: <A>(f: (tx: Transaction) => Promise<A>) => Promise<A>
  readonly $on: (event: "query", f: (event: { readonly query: string; readonly params: string }) => void) => void
  readonly $disconnect: () => Promise<void>
}

type ClientConstructor = new (options: { readonly adapter: PrismaPg; readonly log: ReadonlyArray<unknown> }) => Client

const schemaDir = Path.join(Path.dirname(fileURLToPath(import.meta.url)), "adapters", "prisma")

/**
 * Generates the Prisma client of `adapters/prisma/schema.prisma` the way an
 * application does (`prisma generate`, the `prisma-client` generator), into a
 * fresh folder next to the schema (gitignored; removed by `close`), so a
 * fresh clone needs nothing committed and concurrent runs never share one.
 *
 * `prisma generate` wants a schema engine binary, which it would download
 * from Prisma's servers; it only checks that the path exists (the
 * `prisma-client` generator and its query compiler do not run it), so
 * `PRISMA_SCHEMA_ENGINE_BINARY` points at `/bin/false` (any existing file
 * would do) unless set. Nothing else is downloaded: the generated client
 * runs on `@prisma/client`'s bundled query compiler and `@prisma/adapter-pg`.
 */
const generateClient = (): Promise<{ readonly dir: string; readonly PrismaClient: ClientConstructor }> => {
  const dir = Fs.mkdtempSync(Path.join(schemaDir, "generated-"))
  Fs.copyFileSync(Path.join(schemaDir, "schema.prisma"), Path.join(dir, "schema.prisma"))
  const cli = createRequire(import.meta.url).resolve("prisma/build/index.js")
  return new Promise<void>((resolve, reject) =>
    ChildProcess.execFile(
      process.execPath,
      [cli, "generate", "--schema", Path.join(dir, "schema.prisma")],
      {
        cwd: dir,
        env: {
          ...process.env,
          PRISMA_SCHEMA_ENGINE_BINARY: process.env.PRISMA_SCHEMA_ENGINE_BINARY ??
            ["/bin/false", "/usr/bin/false"].find((path) => Fs.existsSync(path)) ?? process.execPath,
          CHECKPOINT_DISABLE: "1",
          PRISMA_HIDE_UPDATE_MESSAGE: "1"
        }
      },
      (error, stdout, stderr) => error === null ? resolve() : reject(new Error(`prisma generate failed: ${stdout}${stderr}`, { cause: error }))
    )
  ).then(() => import(/* @vite-ignore */ Path.join(dir, "client", "client.ts")))
    .then((module: { readonly PrismaClient: ClientConstructor }) => ({ dir, PrismaClient: module.PrismaClient }))
}

suite("@outbox/client/prisma with Prisma 7 (@prisma/adapter-pg)", Outbox, async (url) => {
  const { dir, PrismaClient } = await generateClient()
  const statements: Array<Statement> = []
  const prisma = new PrismaClient({
    adapter: new PrismaPg({ connectionString: url, max: 4 }),
    log: [{ emit: "event", level: "query" }]
  })
  prisma.$on("query", (event) => void statements.push({ sql: event.query, params: JSON.parse(event.params) }))
  return {
    transaction: <A>(f: (tx: Transaction) => Promise<A>) => prisma.$transaction(f),
    insertOrder: (tx: Transaction, id: string) => tx.order.create({ data: { id } }),
    autocommit: prisma,
    statements,
    close: () => prisma.$disconnect().finally(() => Fs.rmSync(dir, { recursive: true, force: true }))
  }
})
