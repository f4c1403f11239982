// The pg-boss 12 side of `python -m bench wakeup`: one role per process, its result as one JSON line on stdout.
//
// Command (stdin): {"connectionString", "schema", "queue", "table", "role", "count", "spacingMs", "timeoutMs"}.
//   role "work": new PgBoss({useListenNotify: true}) and one work() on the queue with pollingIntervalSeconds 30,
//     whose handler inserts (job id, clock_timestamp(), 'node') into the table; runs until the table holds
//     `count` rows of Node's, then stops. Result: {"handled": n}.
//   role "send": `count` sends to the queue, one at a time: each waits until the job's row is in the table (the
//     other runtime's handler started), then `spacingMs`. Result: {"ids": [...]}.
// Every instance starts without migrating, supervising, scheduling or registering: only the role runs.

import { readFileSync } from 'node:fs'
const loaded = await import(process.env.PGBOSS_PACKAGE ?? 'pg-boss-12')
const PgBoss = loaded.PgBoss ?? loaded.default

const command = JSON.parse(readFileSync(0, 'utf8'))
const { queue, table, role, count } = command
const boss = new PgBoss({
  connectionString: command.connectionString,
  schema: command.schema,
  migrate: false,
  supervise: false,
  schedule: false,
  registerInstance: false,
  useListenNotify: role === 'work'
})
boss.on('error', error => process.stderr.write(`pg-boss error: ${error.message}\n`))
await boss.start()
const db = boss.getDb()
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms))

async function until (sql, params, what) {
  const deadline = Date.now() + command.timeoutMs
  while (true) {
    const { rows } = await db.executeSql(sql, params)
    if (rows.length > 0 && Object.values(rows[0])[0]) return
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(5)
  }
}

let result
if (role === 'work') {
  await boss.work(queue, { pollingIntervalSeconds: 30 }, async jobs => {
    for (const job of jobs) {
      await db.executeSql(`INSERT INTO ${table} (id, started, runtime) VALUES ($1, clock_timestamp(), 'node')`, [job.id])
    }
  })
  await until(`SELECT count(*) >= $1 FROM ${table} WHERE runtime = 'node'`, [count], `${count} jobs handled`)
  result = { handled: count }
} else {
  const ids = []
  for (let n = 0; n < count; n++) {
    const id = await boss.send(queue, { n })
    ids.push(id)
    await until(`SELECT count(*) > 0 FROM ${table} WHERE id = $1`, [id], `job ${id} handled`)
    await sleep(command.spacingMs)
  }
  result = { ids }
}
await boss.stop({ graceful: true, timeout: 5000 })
process.stdout.write(JSON.stringify(result) + '\n')
