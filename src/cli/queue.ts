/** `herald queue`: every engine's work queue at a glance, its failures with their events, and a retry. */
import { events, failedRows, retry } from '../engine/queue.ts'
import { age, allStats, queueOf } from '../engine/queues.ts'
import { table, withDb } from './context.ts'

const when = (t: Date) => t.toISOString().slice(0, 19).replace('T', ' ')

export { age }

export async function queueCommand(opts: { json?: boolean }) {
  return withDb(async ({ db }) => {
    const rows = await allStats(db)
    if (opts.json) return console.log(JSON.stringify(rows, null, 2))
    console.log(table(rows.map((r) => ({
      engine: r.engine, waiting: r.waiting, 'in flight': r.inFlight, retrying: r.retrying, failed: r.failed, 'oldest waiting': age(r.oldestWaitingSeconds),
    }))))
    const failed = rows.filter((r) => r.failed > 0)
    if (failed.length) console.log(`\nherald queue failed ${failed[0].engine} lists them with their errors; herald queue retry ENGINE [ID...] tries them again`)
  })
}

export async function queueFailedCommand(engine: string, opts: { json?: boolean; limit: string }) {
  const spec = queueOf(engine)
  return withDb(async ({ db }) => {
    const rows = await failedRows(db, spec, Number(opts.limit))
    const evs = await events(db, spec, rows.map((r) => r.id))
    const byId = new Map<string, typeof evs>()
    for (const e of evs) byId.set(e.id, [...(byId.get(e.id) ?? []), e])
    if (opts.json) return console.log(JSON.stringify(rows.map((r) => ({ ...r, events: byId.get(r.id) ?? [] })), null, 2))
    if (rows.length === 0) return console.log(`${engine}: nothing failed`)
    for (const r of rows) {
      console.log(`${engine} ${r.id}: failed ${when(r.failedAt)} after ${r.attempts} attempt${r.attempts === 1 ? '' : 's'}: ${r.error ?? '(no error kept)'}`)
      for (const e of byId.get(r.id) ?? []) console.log(`  ${when(e.at)}  ${e.kind}  ${e.detail ? JSON.stringify(e.detail) : ''}`)
    }
    console.log(`\nherald queue retry ${engine} [ID...] tries them again (all of them without ids)`)
  })
}

export async function queueRetryCommand(engine: string, ids: string[]) {
  const spec = queueOf(engine)
  const pattern = spec.keyType === 'bigint' ? /^\d+$/ : spec.keyType === 'uuid' ? /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i : /./
  const bad = ids.filter((id) => !pattern.test(id))
  if (bad.length) throw new Error(`not an id of ${engine} (herald queue failed ${engine} lists them): ${bad.join(', ')}`)
  return withDb(async ({ db }) => {
    const done = await retry(db, spec, ids.length ? ids.map((id) => (spec.keyType === 'uuid' ? id.toLowerCase() : id)) : undefined)
    console.log(`${done.length} failed ${engine} item${done.length === 1 ? '' : 's'} due again${done.length ? `: ${done.slice(0, 20).join(', ')}${done.length > 20 ? ', …' : ''}` : ''}`)
  })
}
