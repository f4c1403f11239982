// The pg-boss side of `python -m bench`: runs one workload and prints its timing as JSON. The pg-boss is the
// package named by $PGBOSS_PACKAGE: `pg-boss` (10.4.2, the default) or `pg-boss-12` (12.38.0, whose `insert`
// takes the queue first, and which starts without migrating, registering or listening here).
//
// Command (stdin): {"connectionString", "schema", "queue", "workload", "params"}. pg-boss starts on the schema
// sqla_boss installed (it adopts it unchanged), with supervise and schedule off, so only the workload runs.
// Workloads: send (W1), insert (W2), drain (W3/W4/W7: consumers x fetch/complete), work (W5: work() with its
// defaults, for a while; or tuned: params batchSize, pollingIntervalSeconds and registrations, that many work()
// calls on the queue; W8: params rss adds the process's RSS, at the start and the end, and its peak), latency
// (W6: send, then the time until work()'s handler starts).

import { readFileSync } from 'node:fs'
const loaded = await import(process.env.PGBOSS_PACKAGE ?? 'pg-boss')
const PgBoss = loaded.PgBoss ?? loaded.default
const twelve = loaded.PgBoss !== undefined

const command = JSON.parse(readFileSync(0, 'utf8'))
const { queue, params } = command
const boss = new PgBoss({
  connectionString: command.connectionString,
  schema: command.schema,
  supervise: false,
  schedule: false,
  max: 10,
  ...(twelve ? { migrate: false, registerInstance: false } : {})
})
boss.on('error', error => process.stderr.write(`pg-boss error: ${error.message}\n`))
await boss.start()

const now = () => performance.now()

async function send () {
  const started = now()
  for (let n = 0; n < params.count; n++) {
    await boss.send(queue, { n })
  }
  return { seconds: (now() - started) / 1000, jobs: params.count }
}

async function insert () {
  const started = now()
  for (let first = 0; first < params.count; first += params.batch) {
    const jobs = []
    for (let n = first; n < Math.min(params.count, first + params.batch); n++) {
      jobs.push(twelve ? { data: { n } } : { name: queue, data: { n } })
    }
    await (twelve ? boss.insert(queue, jobs) : boss.insert(jobs))
  }
  return { seconds: (now() - started) / 1000, jobs: params.count }
}

async function drain () {
  let done = 0
  const consume = async () => {
    while (done < params.count) {
      const jobs = await boss.fetch(queue, { batchSize: params.batch })
      if (!jobs || jobs.length === 0) return
      done += jobs.length
      await boss.complete(queue, jobs.map(job => job.id))
    }
  }
  const started = now()
  await Promise.all(Array.from({ length: params.consumers }, consume))
  return { seconds: (now() - started) / 1000, jobs: done }
}

async function work () {
  let done = 0
  const rssStart = process.memoryUsage().rss
  const handler = async jobs => { done += jobs.length }
  const started = now()
  if (params.batchSize === undefined) {
    await boss.work(queue, handler)
  } else {
    const options = { batchSize: params.batchSize, pollingIntervalSeconds: params.pollingIntervalSeconds }
    for (let n = 0; n < (params.registrations ?? 1); n++) {
      await boss.work(queue, options, handler)
    }
  }
  while (done < params.count && now() - started < params.seconds * 1000) {
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  const seconds = (now() - started) / 1000
  const jobs = done
  await boss.offWork(queue)
  if (!params.rss) return { seconds, jobs }
  const mib = 1024 * 1024
  return {
    seconds,
    jobs,
    rss_start_mib: rssStart / mib,
    rss_end_mib: process.memoryUsage().rss / mib,
    rss_peak_mib: peakRssKiB() / 1024
  }
}

// VmHWM of /proc/self/status (KiB): process.resourceUsage().maxRSS is getrusage's, which Linux carries over
// the fork and exec that started us (it would report at least the Python harness's RSS).
function peakRssKiB () {
  const line = readFileSync('/proc/self/status', 'utf8').split('\n').find(line => line.startsWith('VmHWM:'))
  return Number(line.split(/\s+/)[1])
}

async function latency () {
  const sent = new Map()
  const latencies = []
  await boss.work(queue, async jobs => {
    const at = Date.now()
    for (const job of jobs) latencies.push(at - sent.get(job.data.n))
  })
  await new Promise(resolve => setTimeout(resolve, 500))
  for (let n = 0; n < params.count; n++) {
    await new Promise(resolve => setTimeout(resolve, params.gapMs))
    await boss.send(queue, { n })
    sent.set(n, Date.now())
    const deadline = Date.now() + 10000
    while (latencies.length <= n && Date.now() < deadline) {
      await new Promise(resolve => setTimeout(resolve, 1))
    }
  }
  await boss.offWork(queue)
  return { latencies_ms: latencies, jobs: latencies.length }
}

const workloads = { send, insert, drain, work, latency }
const result = await workloads[command.workload]()
await boss.stop({ graceful: false, wait: true })
process.stdout.write(JSON.stringify(result) + '\n')
