// Runs a list of pg-boss calls in one process and prints what they returned, as JSON on stdout.
//
// Used by tests/pgboss.py to prove sqla_boss wire-compatible with the real pg-boss. Which pg-boss: the
// package named by the environment variable PGBOSS_PACKAGE, 'pg-boss' (10.4.2) by default; package.json
// also installs 12.38.0 under the alias 'pg-boss-12'. The module is loaded with a dynamic import and its
// class taken as mod.PgBoss (12.x: a named export) or mod.default (10.x: the default export). The command
// is one JSON object, given as the first argument or on stdin:
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
// "start" builds new PgBoss({connectionString, schema, ...options}) and awaits start(); the options are
// passed through as they are, so they must suit the version (12.x has no archive options, for one). Any
// other action calls the PgBoss method of that name with "args" and awaits it. An argument (or any value
// nested in one) of the form {"$ref": "<n>.<key>.<key>..."} stands for a value taken from the result of
// action number n (counted from 0), so a later action can use the id an earlier one returned. JSON cannot
// carry JavaScript objects, so two more placeholders build them: {"$date": "<ISO text>"} stands for
// new Date(<ISO text>), and {"$error": {"name": ..., "message": ..., <more own properties>}} for an Error
// of the built-in class called name (Error, TypeError, RangeError...) with those extra properties.
//
// Output: {"ok": true, "results": [one per action], "events": [...]} and exit code 0, or
// {"ok": false, "failed": <index>, "error": {...}, "results": [...], "events": [...]} and exit code 1.
// "events" collects the "error" events pg-boss emitted, its "warning" events (12.x; with "result", the
// warning), and its "maintenance" events (10.x; with "at", the Node clock's ISO time, and "result",
// pg-boss's {ms}). The action {"action": "listen", "args": [eventName, ...]} records more events the same
// way ({"event", "at", "result"}), e.g. 12.x's "wip", "bam", "flow" or "stopped"; given before "start" it
// also catches what start() emits. The action {"action": "sleep", "args": [ms]} just waits, so timers (a
// supervise: true instance's maintenance ticks) get to run between calls. A started instance that no
// action stopped is stopped (not gracefully) before the output is written. BigInt values in results are
// written as strings.
//
// Three actions need no started instance:
//
//   {"action": "static", "args": [name, ...args]} calls the module's named export name (12.x:
//     getConstructionPlans, getMigrationPlans, getRollbackPlans...) or else the class's static of that
//     name (10.x: PgBoss.getConstructionPlans...) with args, awaited; a name that is not a function
//     returns its value (states, policies...).
//   {"action": "exports"} returns {"package", "version", "exports": [named exports], "statics": [the
//     class's own statics]}, to see what a version offers.
//   {"action": "listen", "args": [...]} (above).
//
// One action keeps the run going past an error, to record several refusals in one process:
//
//   {"action": "attempt", "args": [method, ...args]} awaits boss[method](...args) and returns {"ok": true,
//     "result": ...} or, if it threw, {"ok": false, "error": {...}} (as the failed output's "error").
//
// Two more actions let a long-running driver (tests/pgboss.py: PgBoss.spawn) work alongside the tests:
//
//   {"action": "workSql", "args": [queue, workOptions, sql, fields = ["id"]]} registers boss.work(queue,
//     workOptions, handler) whose handler runs sql through pg-boss's own pool once per job of the batch, in
//     order, with the job's id as $1 (a plain INSERT into a table keyed by job id makes a second run of a job
//     fail); with fields, the job's properties of those names as $1, $2... (["id", "retryCount"] gives 12.x's
//     attempt too). Result: the id work() returned.
//   {"action": "waitSql", "args": [sql, timeoutMs, intervalMs = 100]} runs sql every intervalMs until the first
//     column of its first row is truthy, and returns that value; after timeoutMs it throws, so a driver whose
//     test never lets it finish still ends.

import { readFileSync } from 'node:fs'

const PACKAGE = process.env.PGBOSS_PACKAGE || 'pg-boss'
const DEFAULT_EVENTS = ['error', 'warning', 'maintenance']

let pgBossModule = null
let PgBoss = null

async function load () {
  if (PgBoss === null) {
    pgBossModule = await import(PACKAGE)
    PgBoss = pgBossModule.PgBoss ?? pgBossModule.default
    if (typeof PgBoss !== 'function') throw new Error(`${PACKAGE}: exports no PgBoss class`)
  }
  return PgBoss
}

function packageVersion () {
  try {
    const url = new URL(`./node_modules/${PACKAGE}/package.json`, import.meta.url)
    return JSON.parse(readFileSync(url, 'utf8')).version ?? null
  } catch {
    return null
  }
}

function exportsOf () {
  const names = Object.keys(pgBossModule).sort()
  const statics = Object.getOwnPropertyNames(PgBoss)
    .filter(name => !['length', 'name', 'prototype'].includes(name))
    .sort()
  return { package: PACKAGE, version: packageVersion(), exports: names, statics }
}

async function callStatic (name, args) {
  let owner = null
  if (name !== 'default' && Object.hasOwn(pgBossModule, name)) owner = pgBossModule
  else if (Object.hasOwn(PgBoss, name) && !['length', 'name', 'prototype'].includes(name)) owner = PgBoss
  if (owner === null) throw new Error(`${name}: neither a named export of ${PACKAGE} nor a static of its PgBoss`)
  const value = owner[name]
  return typeof value === 'function' ? await value.apply(owner, args) : value
}

function jsonable (value) {
  if (value instanceof Error) return describeError(value)
  try {
    return JSON.parse(JSON.stringify(value ?? null, bigintReplacer))
  } catch {
    return String(value)
  }
}

function bigintReplacer (key, value) {
  return typeof value === 'bigint' ? value.toString() : value
}

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
  const listened = new Set()
  let boss = null
  let stopped = false
  let failure = null

  await load()

  let startAction = null
  const listen = name => {
    if (boss === null || listened.has(name)) return
    listened.add(name)
    if (name === 'error') {
      boss.on('error', error => events.push({ event: 'error', action: startAction, error: describeError(error) }))
    } else {
      boss.on(name, result => events.push({ event: name, at: new Date().toISOString(), result: jsonable(result) }))
    }
  }
  const wanted = new Set(DEFAULT_EVENTS)

  for (const [index, step] of command.actions.entries()) {
    try {
      const args = resolveRefs(step.args ?? [], results)
      if (step.action === 'sleep') {
        await new Promise(resolve => setTimeout(resolve, Number(args[0] ?? 0)))
        results.push(null)
        continue
      }
      if (step.action === 'static') {
        const [name, ...rest] = args
        results.push(await callStatic(String(name), rest) ?? null)
        continue
      }
      if (step.action === 'exports') {
        results.push(exportsOf())
        continue
      }
      if (step.action === 'listen') {
        for (const name of args) {
          wanted.add(String(name))
          listen(String(name))
        }
        results.push(null)
        continue
      }
      if (step.action === 'start') {
        if (boss !== null) throw new Error('start: already started')
        const options = resolveRefs(step.options ?? {}, results)
        boss = new PgBoss({ connectionString: command.connectionString, schema: command.schema, ...options })
        startAction = index
        for (const name of wanted) listen(name)
        await boss.start()
        results.push(null)
        continue
      }
      if (boss === null) throw new Error(`${step.action}: call start first`)
      if (step.action === 'workSql') {
        const [queue, options, sql, fields = ['id']] = args
        const db = boss.getDb()
        results.push(await boss.work(queue, options ?? {}, async jobs => {
          for (const job of jobs) await db.executeSql(sql, fields.map(field => job[field]))
        }))
        continue
      }
      if (step.action === 'attempt') {
        const [method, ...rest] = args
        if (typeof boss[method] !== 'function') throw new Error(`attempt: ${method} is not a PgBoss method`)
        try {
          results.push({ ok: true, result: jsonable(await boss[method](...rest)) })
        } catch (error) {
          results.push({ ok: false, error: describeError(error) })
        }
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
process.stdout.write(JSON.stringify(output, bigintReplacer) + '\n', () => process.exit(output.ok ? 0 : 1))
