/**
 * The person / lab row search (by patient key, name + date of birth, or accession number) and a
 * person's page: what `herald person` and `herald trace` show, the decisions as one timeline.
 * Every search and every view is written to the access log (access-log.ts).
 */
import { personWithTraces, searchPeople, type PersonSearch } from '../../link/trace.ts'
import { displayName } from '../../storage/local.ts'
import { logAccess } from '../access-log.ts'
import { httpError } from '../app.ts'
import { idOf, type PipelinePages } from './pipeline.ts'

type Query = { patient_key?: string; last_name?: string; first_name?: string; dob?: string; accession?: string }

const DOB = /^(\d{4})-(\d{2})-(\d{2})$/
function realDate(s: string): boolean {
  const m = DOB.exec(s)
  if (!m) return false
  const d = new Date(`${s}T00:00:00Z`)
  return !Number.isNaN(d.getTime()) && d.toISOString().slice(0, 10) === s && Number(m[1]) >= 1850
}

/** The search the query asks for, the field that is wrong (and why), or nothing (the empty form). */
function searchOf(q: Query): { search?: PersonSearch; field?: string; error?: string } {
  const v = (k: keyof Query) => (typeof q[k] === 'string' ? q[k]!.trim() : '')
  if (v('patient_key')) return v('patient_key').length > 100 ? { field: 'patient_key', error: 'Patient key: at most 100 characters' } : { search: { by: 'patient_key', patientKey: v('patient_key') } }
  if (v('last_name') || v('first_name') || v('dob')) {
    if (!v('last_name')) return { field: 'last_name', error: 'Last name: enter the last name' }
    if (!v('first_name')) return { field: 'first_name', error: 'First name: enter the first name' }
    if (!realDate(v('dob'))) return { field: 'dob', error: 'Date of birth: enter a date as YYYY-MM-DD, for example 1947-03-01' }
    if (v('last_name').length > 100 || v('first_name').length > 100) return { field: 'last_name', error: 'Last name: at most 100 characters' }
    return { search: { by: 'name', lastName: v('last_name'), firstName: v('first_name'), dob: v('dob') } }
  }
  if (v('accession')) return v('accession').length > 100 ? { field: 'accession', error: 'Accession number: at most 100 characters' } : { search: { by: 'accession', accession: v('accession') } }
  return {}
}

/** The decisions link made and the events of case sync, in time order: one timeline. */
function timeline(p: NonNullable<Awaited<ReturnType<typeof personWithTraces>>>) {
  const items = [
    ...p.events.map((e) => ({ at: new Date(e.at), engine: 'link', kind: e.kind, lab_row: e.lab_row_id, index_case: e.index_case_id, detail: e.detail })),
    ...p.syncEvents.map((e) => ({ at: new Date(e.at), engine: 'case sync', kind: e.kind, lab_row: null, index_case: e.index_case_id, detail: e.detail })),
  ]
  return items.sort((a, b) => a.at.getTime() - b.at.getTime())
}

export const peoplePages: PipelinePages = (p, { db, render, page }) => {
  p.get<{ Querystring: Query }>('/pipeline/people', async (req, reply) => {
    const { search, field, error } = searchOf(req.query)
    const form = { patient_key: req.query.patient_key ?? '', last_name: req.query.last_name ?? '', first_name: req.query.first_name ?? '', dob: req.query.dob ?? '', accession: req.query.accession ?? '' }
    if (error) return render(reply.code(400), 'pipeline-people', page.view(req, { form, field, error }))
    if (!search) return render(reply, 'pipeline-people', page.view(req, { form }))
    const found = await searchPeople(db, search)
    await logAccess(db, req.user!.id, 'search', found.people.map((x) => x.id), { by: search.by })
    const pendingRows = found.pendingRows.map((r) => ({ ...r, display: displayName(r.file) }))
    return render(reply, 'pipeline-people', page.view(req, { form, searched: search.by, people: found.people, pendingRows }))
  })

  p.get<{ Params: { id: string } }>('/pipeline/people/:id', async (req, reply) => {
    const id = idOf(req.params.id, 'person')
    const person = await personWithTraces(db, Number(id))
    if (!person) throw httpError(404, `There is no person ${id}`)
    await logAccess(db, req.user!.id, 'view person', [id])
    const traces = person.traces.map((t) => ({ ...t, display: displayName(t.row.file) }))
    return render(reply, 'pipeline-person', page.view(req, { p: person, traces, timeline: timeline(person) }))
  })
}
