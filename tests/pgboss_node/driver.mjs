// Runs a list of pg-boss calls in one process and prints what they returned, as JSON on stdout.
//
// Used by tests/pgboss.py to prove sqla_boss wire-compatible with the real pg-boss 10.4.2. The command is
// one JSON object, given as the first argument or on stdin:
//
//   {
//     "connectionString": "postgresql://postgres@127.0.0.1:5432/test",
//     "schema": "jobs_a",
//     "actions": [
//       {"action": "start", "options": {"supervise": false, "schedule": false}},
//       {"action": "createQueue", "args": ["q", {"policy": "short"}]},
//       {"action": "send", "args": ["q", {"n": 1}]},
//       {"action": "fetch", "args": ["q"]},
//       {"action": "complete", "args": ["q", {"$ref": "3.0.id"}]},
//       {"action": "stop", "args": [{"graceful": false}]}
//     ]
//   }
//
// "start" builds new PgBoss({connectionString, schema, ...options}) and awaits start(). Any other action
// calls the PgBoss method of that name with "args" and awaits it. An argument (or any value nested in
// one) of the form {"$ref": "<n>.<key>.<key>..."} stands for a value taken from the result of action
// number n (counted from 0), so a later action can use the id an earlier one returned. JSON cannot carry
// JavaScript objects, so two more placeholders build them: {"$date": "<ISO text>"} stands for
// new Date(<ISO text>), and {"$error": {"name": ..., "message": ..., <more own properties>}} for an Error
// of the built-in class called name (Error, TypeError, RangeError...) with those extra properties.
//
// Output: {"ok": true, "results": [one per action], "events": [...]} and exit code 0, or
// {"ok": false, "failed": <index>, "error": {...}, "results": [...], "events": [...]} and exit code 1.
// "events" collects the "error" events pg-boss emitted, and its "maintenance" events (with "at", the
// Node clock's ISO time, and "result", pg-boss's {ms}). The action {"action": "sleep", "args": [ms]}
// just waits, so timers (a supervise: true instance's maintenance ticks) get to run between calls.
// A started instance that no action stopped is stopped (not gracefully) before the output is written.
//
// Two more actions let a long-running driver (tests/pgboss.py: PgBoss.spawn) work alongside the tests:
//
//   {"action": "workSql", "args": [queue, workOptions, sql]} registers boss.work(queue, workOptions, handler)
//     whose handler runs sql through pg-boss's own pool once per job of the batch, in order, with the job's id
//     as $1 (a plain INSERT into a table keyed by job id makes a second run of a job fail). Result: the id
//     work() returned.
//   {"action": "waitSql", "args": [sql, timeoutMs, intervalMs = 100]} runs sql every intervalMs until the first
//     column of its first row is truthy, and returns that value; after timeoutMs it throws, so a driver whose
//     test never lets it finish still ends.

import { readFileSync } from 'node:fs'
import PgBoss from 'pg-boss'

function readCommand () {
  const text = process.argv.length > 2 ? process.argv[2] : readFileSync(0, 'utf8')
  const command = JSON.parse(text)
  if (!Array.isArray(command.actions)) {
    throw new Error('the command needs an "actions" list')
  }
  return command
}

function describeError (error) {
  if (!(error instanceof Error)) {
    return { message: String(error) }
  }
  const described = { name: error.name, message: error.message, stack: error.stack }
  for (const key of ['code', 'detail', 'constraint', 'table', 'schema']) {
    if (error[key] !== undefined) described[key] = error[key]
  }
  return described
}

function resolveRefs (value, results) {
  if (Array.isArray(value)) {
    return value.map(item => resolveRefs(item, results))
  }
  if (value === null || typeof value !== 'object') {
    return value
  }
  const keys = Object.keys(value)
  if (keys.length === 1 && keys[0] === '$date') {
    return new Date(value.$date)
  }
  if (keys.length === 1 && keys[0] === '$error') {
    const { name = 'Error', message, ...properties } = value.$error
    const ErrorClass = globalThis[name]
    if (typeof ErrorClass !== 'function' || !(ErrorClass.prototype instanceof Error || ErrorClass === Error)) {
      throw new Error(`$error: ${name} is not a built-in Error class`)
    }
    return Object.assign(new ErrorClass(message), resolveRefs(properties, results))
  }
  if (keys.length === 1 && keys[0] === '$ref') {
    const [index, ...path] = String(value.$ref).split('.')
    if (!(Number(index) < results.length)) {
      throw new Error(`$ref ${value.$ref}: no result ${index} yet`)
    }
    return path.reduce((current, key) => {
      if (current === null || current === undefined) {
        throw new Error(`$ref ${value.$ref}: nothing at ${key}`)
      }
      return current[key]
    }, results[Number(index)])
  }
  return Object.fromEntries(keys.map(key => [key, resolveRefs(value[key], results)]))
}

async function waitSql (db, sql, timeoutMs, intervalMs = 100) {
  const deadline = Date.now() + Number(timeoutMs)
  while (true) {
    const { rows } = await db.executeSql(sql)
    const value = rows.length > 0 ? Object.values(rows[0])[0] : undefined
    if (value) return value
    if (Date.now() > deadline) throw new Error(`waitSql: not true after ${timeoutMs} ms: ${sql}`)
    await new Promise(resolve => setTimeout(resolve, Number(intervalMs)))
  }
}

async function main () {
  const command = readCommand()
  const results = []
  const events = []
  let boss = null
  let stopped = false
  let failure = null

  for (const [index, step] of command.actions.entries()) {
    try {
      const args = resolveRefs(step.args ?? [], results)
      if (step.action === 'sleep') {
        await new Promise(resolve => setTimeout(resolve, Number(args[0] ?? 0)))
        results.push(null)
        continue
      }
      if (step.action === 'start') {
        if (boss !== null) throw new Error('start: already started')
        const options = resolveRefs(step.options ?? {}, results)
        boss = new PgBoss({ connectionString: command.connectionString, schema: command.schema, ...options })
        boss.on('error', error => events.push({ event: 'error', action: index, error: describeError(error) }))
        boss.on('maintenance', result => events.push({ event: 'maintenance', at: new Date().toISOString(), result }))
        await boss.start()
        results.push(null)
        continue
      }
      if (boss === null) throw new Error(`${step.action}: call start first`)
      if (step.action === 'workSql') {
        const [queue, options, sql] = args
        const db = boss.getDb()
        results.push(await boss.work(queue, options ?? {}, async jobs => {
          for (const job of jobs) await db.executeSql(sql, [job.id])
        }))
        continue
      }
      if (step.action === 'waitSql') {
        results.push(await waitSql(boss.getDb(), ...args))
        continue
      }
      if (typeof boss[step.action] !== 'function') throw new Error(`${step.action}: not a PgBoss method`)
      const result = await boss[step.action](...args)
      if (step.action === 'stop') stopped = true
      results.push(result === undefined ? null : result)
    } catch (error) {
      failure = { failed: index, action: step.action, error: describeError(error) }
      break
    }
  }

  if (boss !== null && !stopped) {
    try {
      await boss.stop({ graceful: false, wait: true })
    } catch (error) {
      events.push({ event: 'stop', error: describeError(error) })
    }
  }
  return failure === null ? { ok: true, results, events } : { ok: false, ...failure, results, events }
}

let output
try {
  output = await main()
} catch (error) {
  output = { ok: false, failed: null, error: describeError(error), results: [], events: [] }
}
process.stdout.write(JSON.stringify(output) + '\n', () => process.exit(output.ok ? 0 : 1))
