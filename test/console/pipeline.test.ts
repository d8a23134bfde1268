/**
 * The pipeline pages: every route for an operator, a viewer (no actions), a user without the
 * pipeline permission (403, no names) and a signed-out visitor; a file's totals and error rows (and
 * their CSV); the person search and the access log; an unresolved transfer resolved through its
 * form; exposure's notices by state.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { casesync, caseOf, events, linkRows, startSandbox, syncAll } from '../helpers/casesync.ts'
import { consoleWorld, makeUser, Visitor } from '../helpers/console.ts'
import { exportText, row, tempDir, writeExport } from '../helpers/files.ts'
import { ingestPath } from '../helpers/ingest.ts'
import { linkAll } from '../helpers/link.ts'

const w = consoleWorld()
let dir: string
let cleanup: () => void
beforeEach(() => ({ dir, cleanup } = tempDir()))
afterEach(() => cleanup())

const ALBANY = 'ny-albany-cdcms' // FIPS 1
const ALLEGANY = 'ny-allegany-cdcms' // FIPS 3

/** One export with a person (synthetic) and a row that is not a row (line 3), ingested and linked. */
async function ingestWithError() {
  const good = row(3, { PIDPATIENTKEY: 'PK-C1', PIDLASTNAME: 'ZEBRAFISH', PIDFIRSTNAME: 'QUINCY', PIDDATEOFBIRTH: '01MAR1947:00:00:00.000000', OBRACCESSIONNUM: 'ACC-C1', PIDCOUNTYCODE: '1' })
  const text = exportText(3, [good]) + 'a|b|c\n'
  const [r] = await ingestPath(w.db, writeExport(dir, 'console-export.txt', text))
  await linkAll(w.db)
  const [p] = await w.db.query(`SELECT id::text FROM people WHERE last_name = 'ZEBRAFISH'`)
  return { fileId: r.fileId, personId: p.id as string }
}

async function visitors() {
  await makeUser(w.db, 'op@agency.example', { pipeline: ['operate'] })
  await makeUser(w.db, 'viewer@agency.example', { pipeline: ['view'] })
  await makeUser(w.db, 'nobody@agency.example')
  return {
    operator: await new Visitor(w.url).signIn('op@agency.example'),
    viewer: await new Visitor(w.url).signIn('viewer@agency.example'),
    nobody: await new Visitor(w.url).signIn('nobody@agency.example'),
    visitor: new Visitor(w.url),
  }
}

const log = () => w.db.query(`SELECT u.email, l.person_id::text AS person_id, l.action, l.detail FROM person_access_log l JOIN users u ON u.id = l.user_id ORDER BY l.id`)

describe('the pipeline pages', () => {
  it('need the pipeline view permission; actions need operate and show only to operators', async () => {
    const { fileId, personId } = await ingestWithError()
    const v = await visitors()
    const pages = ['/pipeline', '/pipeline/files', `/pipeline/files/${fileId}`, `/pipeline/files/${fileId}/errors.csv`, '/pipeline/people',
      '/pipeline/people?patient_key=PK-C1', `/pipeline/people/${personId}`, '/pipeline/cases', '/pipeline/exposure']
    for (const path of pages) {
      expect((await v.operator.get(path)).status, path).toBe(200)
      expect((await v.viewer.get(path)).status, path).toBe(200)
      const denied = await v.nobody.get(path)
      expect(denied.status, path).toBe(403)
      expect(denied.html).not.toMatch(/ZEBRAFISH|QUINCY|1947-03-01/)
      const out = await v.visitor.get(path)
      expect(out.status, path).toBe(302)
      expect(out.headers.get('location')).toMatch(/^\/sign-in\?next=/)
    }
    const actions: [string, Record<string, string>][] = [
      [`/pipeline/files/${fileId}/retry`, {}], ['/pipeline/files/retry', { inbox: '1' }], ['/pipeline/cases/1/resolve', { to: 'x' }],
      ['/pipeline/cases/1/retry', {}], ['/pipeline/exposure/retry', { reason: 'landline' }],
    ]
    await v.viewer.get('/pipeline')
    await v.nobody.get('/pipeline/files')
    for (const [path, body] of actions) {
      expect((await v.viewer.post(path, body)).status, path).toBe(403)
      expect((await v.nobody.post(path, body)).status, path).toBe(403)
      expect((await v.visitor.post(path, body)).status, path).toBe(401)
    }
    // The page shows queues, today's counts and 14 days, with the numbers as a table too.
    const home = await v.viewer.get('/pipeline')
    expect(home.html).toContain("<caption>Each engine's work queue, as herald queue shows it</caption>")
    expect(home.html).toMatch(/<th scope="row">ingest<\/th>/)
    expect(home.html).toMatch(/id="today-files">1</)
    expect(home.html).toMatch(/id="today-people">1</)
    expect(home.html.match(/<tr><th scope="row">\d{4}-\d{2}-\d{2}<\/th>/g)).toHaveLength(14)
    // Buttons only for operators.
    await w.db.query(`INSERT INTO exposure_notices (person_id, episode_start, lab_result_id, state, reason, test_type) VALUES ($1, '2024-01-01', 1, 'not_sent', 'landline', 'confirmed')`, [personId])
    expect((await v.viewer.get('/pipeline/exposure')).html).not.toContain('action="/pipeline/exposure/retry"')
    expect((await v.operator.get('/pipeline/exposure')).html).toContain('action="/pipeline/exposure/retry"')
  })

  it("shows a file's totals, per county, its error row with line and reason, and the error rows as CSV", async () => {
    const { fileId } = await ingestWithError()
    const { viewer } = await visitors()
    const list = await viewer.get('/pipeline/files')
    expect(list.html).toContain(`<a href="/pipeline/files/${fileId}">console-export.txt</a>`)
    const page = await viewer.get(`/pipeline/files/${fileId}`)
    expect(page.html).toContain('2 rows: 1 new, 0 seen, 0 duplicate, 1 error')
    expect(page.html).toMatch(/<th scope="row">Albany<\/th><td>1<\/td><td>1<\/td>/)
    expect(page.html).toMatch(/<tr><td>3<\/td><td>has 3 fields, the v3 header has 65<\/td><\/tr>/)
    const csv = await viewer.get(`/pipeline/files/${fileId}/errors.csv`)
    expect(csv.headers.get('content-type')).toMatch(/^text\/csv/)
    expect(csv.headers.get('content-disposition')).toBe(`attachment; filename="file-${fileId}-errors.csv"`)
    expect(csv.html).toBe('line,reason\n3,"has 3 fields, the v3 header has 65"\n')
    expect((await viewer.get('/pipeline/files/999')).status).toBe(404)
    expect((await viewer.get('/pipeline/files/abc')).status).toBe(404)
  })

  it('tries a failed file again through the work queue', async () => {
    const { fileId } = await ingestWithError()
    const { operator } = await visitors()
    await w.db.query(`UPDATE inbox_files SET failed_at = now(), state = 'failed', last_error = 'storage unreadable', file_id = NULL`)
    await w.db.query(`INSERT INTO inbox_files (uri, size, modified_at, state, failed_at, attempts, last_error) VALUES ('/nowhere/lost.txt', 1, now(), 'failed', now(), 5, 'ENOENT')`)
    const list = await operator.get('/pipeline/files')
    expect(list.html).toContain('Try lost.txt again')
    const page = await operator.get(`/pipeline/files/${fileId}`)
    expect(page.html).toContain('Ingest gave up on this file')
    const r = await operator.post(`/pipeline/files/${fileId}/retry`)
    expect(r.status).toBe(302)
    expect(r.headers.get('location')).toBe(`/pipeline/files/${fileId}?retried=1`)
    expect(await w.db.query(`SELECT state, attempts, failed_at FROM inbox_files WHERE uri LIKE '%console-export.txt'`)).toEqual([{ state: 'pending', attempts: 0, failed_at: null }])
    expect((await w.db.query(`SELECT kind, detail FROM queue_events WHERE engine = 'ingest'`))[0]).toEqual({ kind: 'retry_requested', detail: { by: 'console op@agency.example' } })
    const [lost] = await w.db.query(`SELECT id::text FROM inbox_files WHERE uri = '/nowhere/lost.txt'`)
    expect((await operator.post('/pipeline/files/retry', { inbox: lost.id })).headers.get('location')).toBe('/pipeline/files?retried=1')
    expect((await operator.post('/pipeline/files/retry', { inbox: 'x' })).status).toBe(400)
    expect((await operator.post('/pipeline/files/999/retry')).status).toBe(404)
  })

  it('finds a person by patient key, by name and date of birth, by accession, and logs every search and view', async () => {
    const { personId } = await ingestWithError()
    const { viewer } = await visitors()
    const byKey = await viewer.get('/pipeline/people?patient_key=PK-C1')
    expect(byKey.html).toContain(`<a href="/pipeline/people/${personId}">QUINCY ZEBRAFISH</a>`)
    const byName = await viewer.get('/pipeline/people?last_name=zebrafish&first_name=Quincy+Ann&dob=1947-03-01')
    expect(byName.html).toContain(`/pipeline/people/${personId}`)
    expect((await viewer.get('/pipeline/people?accession=ACC-C1')).html).toContain(`/pipeline/people/${personId}`)
    expect((await viewer.get('/pipeline/people?patient_key=nobody')).html).toContain('No one found.')
    const person = await viewer.get(`/pipeline/people/${personId}`)
    expect(person.html).toContain('<h1 class="margin-top-4">QUINCY ZEBRAFISH</h1>')
    expect(person.html).toContain('1947-03-01')
    expect(person.html).toMatch(/person created/)
    expect(person.html).toContain('console-export.txt line 2')
    expect(await log()).toEqual([
      { email: 'viewer@agency.example', person_id: personId, action: 'search', detail: { by: 'patient_key' } },
      { email: 'viewer@agency.example', person_id: personId, action: 'search', detail: { by: 'name' } },
      { email: 'viewer@agency.example', person_id: personId, action: 'search', detail: { by: 'accession' } },
      { email: 'viewer@agency.example', person_id: null, action: 'search', detail: { by: 'patient_key' } },
      { email: 'viewer@agency.example', person_id: personId, action: 'view person', detail: null },
    ])
    // Bad input names its field; an unknown person is a 404.
    const bad = await viewer.get('/pipeline/people?last_name=Zebrafish&first_name=Quincy&dob=1947-02-30')
    expect(bad.status).toBe(400)
    expect(bad.html).toContain('usa-form-group--error')
    expect(bad.html).toContain('id="dob-error"')
    expect((await viewer.get('/pipeline/people?last_name=Zebrafish')).html).toContain('id="first_name-error"')
    expect((await viewer.get('/pipeline/people/99999')).status).toBe(404)
    expect((await viewer.get('/pipeline/people/x1')).status).toBe(404)
    expect(await log()).toHaveLength(5)
  })

  it('lists an unresolved transfer with its chain and why, and resolves it through the form: the job is due again', async () => {
    const s = await startSandbox()
    const cs = casesync(s)
    await linkRows(w.db, dir, [row(3, { PIDPATIENTKEY: 'U1', PIDCOUNTYCODE: '1', OBRACCESSIONNUM: 'U1-A1' })])
    expect(await syncAll(w.db, cs.out)).toEqual({ posted: 1 })
    const c = await caseOf(w.db)
    const copy = s.transfer(ALBANY, c.case_id, 3, { linkSource: false })!
    await linkRows(w.db, dir, [row(3, { PIDPATIENTKEY: 'U1', PIDCOUNTYCODE: '1', OBRACCESSIONNUM: 'U1-A2' })])
    expect(await syncAll(w.db, cs.out)).toEqual({ unresolved_transfer: 1 })
    const { operator, viewer } = await visitors()
    const page = await operator.get('/pipeline/cases')
    expect(page.html).toContain(`Case ${c.id}, Albany: unresolved transfer`)
    expect(page.html).toContain(`<code class="font-mono-3xs">${ALBANY}/${c.case_id}</code>`)
    expect(page.html).toContain('Why: none from this transfer (1 search result); transferred to county 3 (ny-allegany-cdcms)')
    expect(page.html).toMatch(/<th scope="row">Albany \(1\)<\/th><td>ny-albany-cdcms<\/td><td>0<\/td><td>0<\/td><td>1<\/td>/)
    expect(page.html).toContain(`action="/pipeline/cases/${c.id}/resolve"`)
    expect((await viewer.get('/pipeline/cases')).html).not.toContain(`action="/pipeline/cases/${c.id}/resolve"`)
    // A blank case id and an unknown domain come back with the field named.
    const blank = await operator.post(`/pipeline/cases/${c.id}/resolve`, { to: ' ' })
    expect(blank.status).toBe(400)
    expect(blank.html).toContain(`id="to-${c.id}-error"`)
    const domain = await operator.post(`/pipeline/cases/${c.id}/resolve`, { to: copy.case_id, domain: 'ny-nowhere' })
    expect(domain.status).toBe(400)
    expect(domain.html).toContain(`id="domain-${c.id}-error"`)
    expect((await operator.post('/pipeline/cases/999999/resolve', { to: 'x' })).status).toBe(404)
    const ok = await operator.post(`/pipeline/cases/${c.id}/resolve`, { to: copy.case_id, domain: '' })
    expect(ok.status).toBe(302)
    expect(ok.headers.get('location')).toBe(`/pipeline/cases?resolved=${c.id}`)
    expect(await w.db.query('SELECT attempts, failed_at FROM case_sync_queue WHERE index_case_id = $1', [c.id])).toEqual([{ attempts: 0, failed_at: null }])
    expect((await events(w.db, c.id)).slice(-2)).toEqual([
      { kind: 'transfer_resolved', detail: { to_case: copy.case_id, domain: ALLEGANY, was: 'unresolved_transfer' } },
      { kind: 'retry_requested', detail: { by: 'console op@agency.example' } },
    ])
    expect((await operator.get('/pipeline/cases?resolved=' + c.id)).html).toContain(`Case ${c.id} is due again`)
    expect(await syncAll(w.db, cs.out)).toEqual({ redirected: 1 })
    // Nothing failed now: a retry has nothing to do.
    expect((await operator.post(`/pipeline/cases/${c.id}/retry`)).status).toBe(404)
  })

  it('shows exposure notices by state and reason, and retries a reason', async () => {
    const { personId } = await ingestWithError()
    const notice = (episode: string, state: string, reason: string | null) => w.db.query(
      `INSERT INTO exposure_notices (person_id, episode_start, lab_result_id, state, reason, test_type) VALUES ($1, $2, 1, $3, $4, 'confirmed')`, [personId, episode, state, reason])
    await notice('2024-01-01', 'issued', null)
    await notice('2024-03-01', 'issued', null)
    await notice('2024-06-01', 'not_sent', 'landline')
    const { operator } = await visitors()
    const page = await operator.get('/pipeline/exposure')
    expect(page.html).toMatch(/<tr><th scope="row">issued<\/th><td>2<\/td><\/tr>/)
    expect(page.html).toMatch(/<tr><th scope="row">not sent<\/th><td>1<\/td><\/tr>/)
    expect(page.html).toContain('Try the 1 not sent for landline again')
    expect((await operator.post('/pipeline/exposure/retry', { reason: '' })).status).toBe(400)
    const r = await operator.post('/pipeline/exposure/retry', { reason: 'landline' })
    expect(r.headers.get('location')).toBe('/pipeline/exposure?retried=1')
    expect(await w.db.query(`SELECT state FROM exposure_notices WHERE reason IS NULL AND state <> 'issued'`)).toEqual([{ state: 'pending' }])
  })
})
