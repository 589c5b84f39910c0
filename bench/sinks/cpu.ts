/**
 * CPU time of the processes a run leans on, from `/proc` (Linux, same
 * host): the broker's server process and the PostgreSQL backends of the
 * run's database, so that a run's cost per event is Node's plus theirs.
 */
import * as Effect from "effect/Effect"
import type * as SqlClient from "effect/sql/SqlClient"
import * as Fs from "node:fs"
import { backendCpu } from "../shared.ts"

/** CPU seconds so far (user + system, all threads) of every process whose command name is in `names`, by pid. */
export const processCpu = (names: ReadonlySet<string>): Map<number, number> => {
  const cpu = new Map<number, number>()
  if (names.size === 0) return cpu
  let pids: Array<string>
  try {
    pids = Fs.readdirSync("/proc").filter((entry) => /^\d+$/.test(entry))
  } catch {
    return cpu // not Linux
  }
  for (const pid of pids) {
    try {
      const stat = Fs.readFileSync(`/proc/${pid}/stat`, "utf8")
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"))
      if (!names.has(name)) continue
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      cpu.set(Number(pid), (Number(fields[11]) + Number(fields[12])) / 100)
    } catch {
      // exited meanwhile
    }
  }
  return cpu
}

/** CPU seconds so far of the PostgreSQL backends connected to the current database (the querying one included). */
export const databaseCpu = (sql: SqlClient.SqlClient): Effect.Effect<Map<number, number>, unknown> =>
  Effect.map(
    sql<{ pid: number }>`SELECT pid FROM pg_stat_activity WHERE datname = current_database()`,
    (rows) => backendCpu(rows.map((row) => Number(row.pid)))
  )

/** The server process names of a broker (empty when there is none, or it runs elsewhere). */
export const brokerProcesses: Record<string, ReadonlySet<string>> = {
  nats: new Set(["nats-server"]),
  rabbitmq: new Set(["beam.smp"]),
  redis: new Set(["redis-server"]),
  none: new Set()
}
