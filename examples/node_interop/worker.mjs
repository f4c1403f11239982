// The Node side of the example: a pg-boss 10.4.2 instance on the schema sqla_boss installed.
//
// It sends JOB_COUNT jobs to the queue "py-tasks" (the Python worker's), works the queue "node-tasks"
// (where the Python worker sends one job per job it handles), and exits 0 once the Python worker has
// completed every job it sent and it has handled JOB_COUNT jobs from Python. run.py starts it with:
//
//   DATABASE_URL   a postgresql:// connection string
//   PGBOSS_SCHEMA  the schema sqla_boss installed (and where Python created both queues)
//   JOB_COUNT      how many jobs to send (default 3)

import PgBoss from 'pg-boss'

const schema = process.env.PGBOSS_SCHEMA ?? 'pgboss'
const jobCount = Number(process.env.JOB_COUNT ?? 3)
const timeoutMs = 30000

function say (line) {
  console.log(`[node]   ${line}`)
}

const boss = new PgBoss({
  connectionString: process.env.DATABASE_URL,
  schema,
  // sqla_boss owns the schema (Python ran its migrations): pg-boss only checks that it is at version 24.
  migrate: false
})
boss.on('error', error => console.error('[node]   pg-boss error:', error))

await boss.start()
say(`pg-boss started on schema ${schema} (migrate: false)`)

// Jobs the Python worker sends to "node-tasks". pg-boss 10 hands the handler a batch (one job by default);
// what it returns becomes the job's output.
let handled = 0
await boss.work('node-tasks', { pollingIntervalSeconds: 0.5 }, async ([job]) => {
  handled += 1
  say(`handled node-tasks job ${job.id} from Python: ${JSON.stringify(job.data)}`)
  return { handledBy: 'node', square: job.data.n * job.data.n }
})

// Jobs for the Python worker.
const sent = []
for (let n = 1; n <= jobCount; n++) {
  const id = await boss.send('py-tasks', { n, from: 'node' })
  sent.push(id)
  say(`sent py-tasks job ${id} {"n": ${n}}`)
}

// Wait until Python has completed all of them, and we have handled as many jobs from Python.
const deadline = Date.now() + timeoutMs
const seen = new Set()
while (seen.size < sent.length || handled < jobCount) {
  if (Date.now() > deadline) {
    console.error(`[node]   timed out: ${seen.size}/${sent.length} py-tasks completed, ${handled}/${jobCount} handled`)
    await boss.stop({ graceful: false })
    process.exit(1)
  }
  for (const id of sent) {
    if (seen.has(id)) continue
    const job = await boss.getJobById('py-tasks', id)
    if (job?.state === 'completed') {
      seen.add(id)
      say(`sees py-tasks job ${id} completed by Python, output ${JSON.stringify(job.output)}`)
    }
  }
  await new Promise(resolve => setTimeout(resolve, 200))
}

await boss.stop({ graceful: true, wait: true })
say('stopped')
