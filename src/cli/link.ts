/** `herald counties`, `herald link`, `herald trace`, `herald person`: link's inputs, queue and answers. */
import { readFileSync } from 'node:fs'
import type { Db } from '../db/types.ts'
import { CountyListError, parseCountyList, saveCounties } from '../link/counties.ts'
import { retry, stats } from '../engine/queue.ts'
import { linkQueue } from '../link/queue.ts'
import { describePerson, findPerson, queueState, traceRow } from '../link/trace.ts'
import { table, withDb } from './context.ts'

const when = (t: unknown) => (t ? new Date(t as string).toISOString().slice(0, 19).replace('T', ' ') : '')
const syncState = (c: Record<string, any>) =>
  c.sync_failed_at ? 'failed (herald cases --failed)'
    : c.sync_generation ? `to post (${c.sync_generation} change${c.sync_generation === 1 ? '' : 's'})`
    : c.synced_at ? `posted ${when(c.synced_at)}` : 'up to date'
const detail = (d: unknown) => (d ? Object.entries(d).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : v}`).join(' ') : '')

/** Reads and stores a CommCare county list (the fixture API's JSON). */
export async function loadCountyFile(db: Db, file: string) {
  let json: unknown
  try {
    json = JSON.parse(readFileSync(file, 'utf8'))
  } catch (err) {
    throw new CountyListError(`${file}: ${(err as Error).message}`)
  }
  const list = parseCountyList(json)
  const saved = await db.transaction((tx) => saveCounties(tx, list))
  return { ...saved, total: list.length, state: list.find((c) => c.county.isStateDomain)?.county }
}

export async function countiesLoadCommand(file: string) {
  return withDb(async ({ db }) => {
    const r = await loadCountyFile(db, file)
    console.log(`loaded ${r.total} counties from ${file}: ${r.added} new, ${r.updated} updated`)
    console.log(r.state ? `state domain: ${r.state.domain} (rows of an unknown county go there)` : 'no state domain in this list: rows of an unknown county will be ignored')
  })
}

export async function countiesCommand(opts: { json?: boolean }) {
  return withDb(async ({ db }) => {
    const rows = await db.query(`SELECT fips, display, domain, participating, is_state_domain, loaded_at FROM counties ORDER BY fips`)
    if (opts.json) return console.log(JSON.stringify(rows, null, 2))
    if (rows.length === 0) return console.log('no county list loaded: herald counties load FILE')
    console.log(table(rows.map((r) => ({
      fips: r.fips, county: r.display, domain: r.domain ?? '', participating: r.participating ? 'yes' : 'no', state: r.is_state_domain ? 'yes' : '',
    }))))
  })
}

/** The queue: how many rows wait, and the rows that failed or are retrying (with --failed), or puts failed rows back (--retry). */
export async function linkCommand(opts: { failed?: boolean; retry?: boolean; json?: boolean }) {
  return withDb(async ({ db }) => {
    if (opts.retry) {
      const ids = await retry(db, linkQueue, undefined, 'herald link --retry')
      return console.log(`${ids.length} rows will be linked again by the next link batch`)
    }
    if (opts.failed) {
      const rows = await db.query(
        `SELECT lab_row_id, attempts, retry_at, failed_at, last_error FROM link_queue WHERE failed_at IS NOT NULL OR last_error IS NOT NULL
         ORDER BY failed_at IS NULL, lab_row_id LIMIT 1000`)
      if (opts.json) return console.log(JSON.stringify(rows, null, 2))
      console.log(table(rows.map((r) => ({
        'lab row': r.lab_row_id, state: queueState(r), attempts: r.attempts, 'next try': r.failed_at ? '' : when(r.retry_at), error: r.last_error,
      }))))
      if (rows.length) console.log('\nherald trace ROW_ID tells more; herald link --retry tries the failed ones again')
      return
    }
    const q = await stats(db, linkQueue)
    const s = { waiting: q.waiting, retrying: q.retrying, failed: q.failed }
    const [t] = await db.query(`SELECT (SELECT count(*) FROM people)::int AS people, (SELECT count(*) FROM index_cases)::int AS cases,
        (SELECT count(*) FROM case_sync_queue)::int AS cases_to_sync,
        (SELECT count(*) FROM lab_results)::int AS lab_results, (SELECT count(*) FROM exposure_queue)::int AS marked_for_exposure`)
    if (opts.json) return console.log(JSON.stringify({ queue: s, records: t }, null, 2))
    console.log(`link queue: ${s.waiting} waiting, ${s.retrying} retrying, ${s.failed} failed`)
    console.log(`records: ${t.people} people, ${t.cases} index cases (${t.cases_to_sync} to sync), ${t.lab_results} lab results, ${t.marked_for_exposure} marked for exposure notification`)
  })
}

export async function traceCommand(id: string, opts: { json?: boolean }) {
  return withDb(async ({ db }) => {
    const t = /^\d+$/.test(id) ? await traceRow(db, Number(id)) : undefined
    if (!t) throw new Error(`no lab row ${id}: lab row ids are in herald person's output and in link_events`)
    if (opts.json) return console.log(JSON.stringify(t, null, 2))
    const r = t.row
    console.log(`lab row ${r.id}: ${r.file} line ${r.line} (v${r.version}${r.seen_before ? ', a later version of a row seen before' : ''}), ingested ${when(r.ingested_at)}`)
    console.log(`  patient key ${r.patient_key ?? '(none)'}, accession ${r.accession_number ?? '(none)'}, county ${r.county_fips}, result ${r.result_positive ?? ''}`)
    console.log(`  link: ${t.state}${t.queue?.last_error ? ` (${t.queue.attempts} attempts: ${t.queue.last_error})` : ''}\n`)
    console.log(table(t.events.map((e) => ({
      at: when(e.at), decision: e.kind, person: e.person_id ?? '', case: e.index_case_id ?? '', 'lab result': e.lab_result_id ?? '', why: detail(e.detail),
    }))))
    for (const c of t.changes) {
      const applied = Object.keys(c.applied)
      const dropped = Object.keys(c.dropped)
      console.log(`\n${c.target} ${c.target_id}: added ${applied.join(', ') || 'nothing'}; kept the existing value of ${dropped.join(', ') || 'nothing'}`)
    }
    if (t.cases.length) {
      console.log('\ncases now:')
      console.log(table(t.cases.map((c) => ({
        case: c.id, 'case id': c.case_id, person: c.person_id, county: c.county_fips, domain: c.domain, closed: c.closed ? 'yes' : 'no',
        sync: syncState(c), 'reinfection of': c.reinfection_of ?? '', 'lab results': (c.accessions ?? []).join(', '),
      }))))
    }
  })
}

export async function personCommand(ref: string, opts: { json?: boolean }) {
  return withDb(async ({ db }) => {
    const id = await findPerson(db, ref)
    const p = id === undefined ? undefined : await describePerson(db, id)
    if (!p) throw new Error(`no person ${ref}: give a person id, an external id (uuid) or a patient key`)
    if (opts.json) return console.log(JSON.stringify(p, null, 2))
    const x = p.person
    console.log(`person ${x.id} (external id ${x.external_id}): ${[x.first_name, x.middle_name, x.last_name].filter(Boolean).join(' ')}, born ${x.date_of_birth ?? 'unknown'}`)
    console.log(`  phone ${x.phone ?? '(none)'}, ${[x.address1, x.address2, x.city, x.zip].filter(Boolean).join(', ') || '(no address)'}`)
    console.log(`  patient keys: ${p.keys.map((k) => `${k.patient_key} (from lab row ${k.lab_row_id})`).join(', ')}\n`)
    console.log(table(p.cases.map((c) => ({
      case: c.id, 'case id': c.case_id, county: `${c.county} (${c.county_fips})`, opened: c.opened_on, closed: c.closed ? `yes${c.activity_ended_on ? `, ended ${c.activity_ended_on}` : ''}` : 'no',
      'reinfection of': c.reinfection_of ?? '', sync: syncState(c),
    }))))
    console.log('')
    console.log(table(p.results.map((r) => ({
      'lab result': r.id, case: r.index_case_id, accession: r.accession_number, positive: r.positive ? 'yes' : 'no', tested: r.tested_on ?? '',
      'from lab row': r.lab_row_id, exposure: r.exposure_marked ? 'marked' : '',
    }))))
    console.log('\nhistory:')
    console.log(table(p.events.map((e) => ({
      at: when(e.at), 'lab row': e.lab_row_id, decision: e.kind, case: e.index_case_id ?? '', 'lab result': e.lab_result_id ?? '', why: detail(e.detail),
    }))))
    if (p.syncEvents.length) {
      console.log('\ncase sync:')
      console.log(table(p.syncEvents.map((e) => ({ at: when(e.at), case: e.index_case_id, event: e.kind, detail: detail(e.detail) }))))
    }
  })
}
