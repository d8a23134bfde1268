/** `herald retention|facts|usage|report`: forgetting on time, and what stays known (billing, statistics, reports). */
import { createWriteStream } from 'node:fs'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { reportsDb } from '../db/connect.ts'
import { computeFacts, monthlyUsage } from '../messaging/facts/facts.ts'
import { reportCsv, ReportNotFound } from '../messaging/reports/report.ts'
import { retentionCutoffs, runRetention, setRetention } from '../messaging/retention/retention.ts'
import { findService } from '../messaging/services.ts'
import { secretKey } from '../privacy/keys.ts'
import { Sealer } from '../privacy/seal.ts'
import { storeFor } from '../storage/index.ts'
import { table, withDb } from './context.ts'

const DAY = /^\d{4}-\d{2}-\d{2}$/
const checkDay = (name: string, v: string | undefined) => {
  if (v !== undefined && (!DAY.test(v) || Number.isNaN(Date.parse(`${v}T00:00:00Z`)))) throw new Error(`${name}: "${v}" is not a date (YYYY-MM-DD)`)
  return v
}
const when = (name: string, v: string | undefined) => {
  const d = v === undefined ? undefined : new Date(v)
  if (d && Number.isNaN(d.getTime())) throw new Error(`${name}: "${v}" is not a date and time (e.g. 2026-11-24T03:00:00-05:00)`)
  return d
}

/** On a terminal, one line rewritten in place; elsewhere (a log), nothing until the summary. */
const progress = (line: string) => {
  if (process.stderr.isTTY) process.stderr.write(`\r${line}\x1b[K`)
}

export async function retentionRunCommand(o: { asOf?: string; batch?: number; json?: boolean }) {
  const asOf = when('--as-of', o.asOf)
  return withDb(async ({ db, config, log }) => {
    const results = await runRetention(db, { store: storeFor(config.messaging.jobStore, config), log, asOf, batch: o.batch,
      onBatch: (s) => progress(`retention: ${s.name} (${s.type}): ${s.archived} moved to history, ${s.deleted} test-key notifications deleted`) })
    progress('')
    if (o.json) return console.log(JSON.stringify(results, null, 2))
    console.log(results.length ? table(results.map((s) => ({ service: s.name, type: s.type, days: s.days, 'before': s.cutoff.toISOString(),
      'moved to history': s.archived, 'test-key deleted': s.deleted, 'job files removed': s.files }))) : 'no services')
  })
}

export async function retentionSetCommand(o: { service: string; days: number; type?: string }) {
  return withDb(async ({ db }) => {
    const service = await findService(db, o.service)
    await setRetention(db, service.id, o.days, o.type)
    console.log(`${service.name} keeps its ${o.type ?? 'sms'} notifications ${o.days} days (local midnight, ${service.timezone}); then they move to history without numbers`)
  })
}

export async function retentionShowCommand(o: { json?: boolean }) {
  return withDb(async ({ db }) => {
    const rows = await retentionCutoffs(db, new Date())
    if (o.json) return console.log(JSON.stringify(rows, null, 2))
    console.log(rows.length ? table(rows.map((r) => ({ service: r.name, type: r.type, days: r.days, 'removes before': new Date(r.cutoff).toISOString() }))) : 'no services')
  })
}

export async function factsCommand(o: { from?: string; to?: string; json?: boolean }) {
  const from = checkDay('--from', o.from)
  const to = checkDay('--to', o.to ?? o.from)
  if (to && !from) throw new Error('--to needs --from')
  if (from && to && to < from) throw new Error('--to is before --from')
  return withDb(async ({ db }) => {
    const r = await computeFacts(db, { from, to }, (done, total) => progress(`facts: ${done}/${total} service-days`))
    progress('')
    console.log(o.json ? JSON.stringify(r) : `facts computed for ${r.days} service-days${from ? ` (${from} to ${to})` : ' (the last 3 days of each service)'}: `
      + `${r.billingRows} billing rows, ${r.statusRows} status rows`)
  })
}

export async function usageCommand(o: { service: string; year?: number; json?: boolean }) {
  return withDb(async ({ db }) => {
    const service = await findService(db, o.service)
    const year = o.year ?? new Date().getFullYear()
    const months = await monthlyUsage(db, service.id, year)
    if (o.json) return console.log(JSON.stringify({ service_id: service.id, year, months }, null, 2))
    console.log(`${service.name}, ${year} (from the facts; herald facts brings them up to date)`)
    console.log(months.length ? table(months.map((m) => ({ month: m.month, type: m.notification_type, texts: m.notifications_sent, fragments: m.billable_units,
      chargeable: m.chargeable_units, rate: m.rate, cost: m.cost.toFixed(4) }))) : 'no usage')
  })
}

export async function reportCommand(o: { service: string; job?: string; from?: string; to?: string; out?: string }) {
  const from = checkDay('--from', o.from)
  const to = checkDay('--to', o.to ?? o.from)
  if (!o.job && !from) throw new Error('a report needs --job ID or --from DAY [--to DAY]')
  if (o.job && from) throw new Error('--job and --from are two kinds of report: give one')
  return withDb(async ({ db, config }) => {
    const service = await findService(db, o.service)
    const scope = o.job ? { serviceId: service.id, jobId: o.job } : { serviceId: service.id, from: from!, to: to! }
    const replica = reportsDb(config, db)
    const csv = reportCsv(replica.db, new Sealer(secretKey(config)), scope)
    try {
      await pipeline(Readable.from(csv), o.out ? createWriteStream(o.out) : process.stdout, { end: !!o.out })
    } catch (err) {
      if (err instanceof ReportNotFound) throw new Error(err.message)
      throw err
    } finally {
      await replica.close()
    }
    if (o.out) console.error(`report written to ${o.out}`)
  })
}
