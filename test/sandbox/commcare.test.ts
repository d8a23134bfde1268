/** The CommCare sandbox speaks CommCare's wire format: the receiver's rules, the case API, auth and the presets. */
import { describe, expect, it } from 'vitest'
import { DOMAIN, INDEX_CASE_XML, form, get, getJson, patient, postForm, sandbox } from './commcare-helpers.ts'

const PATIENT_ID = '22a7400b-ab3f-4b17-8131-d7f312988433'
const LAB_ID = 'a440b33c-99f4-42de-9d1c-a8447124f753'

describe('receiver', () => {
  it('accepts the fixture form: a patient and a lab_result indexed to it, properties as given', async () => {
    const s = await sandbox()
    const res = await fetch(`${s.url}/a/${DOMAIN}/receiver`, {
      method: 'POST', headers: { authorization: 'ApiKey herald:sandbox', 'content-type': 'application/xml' }, body: INDEX_CASE_XML,
    })
    expect(res.status).toBe(201)
    expect(res.headers.get('content-type')).toMatch(/^text\/xml/)
    expect(await res.text()).toContain('<message nature="submit_success">')
    const p = s.getCase(DOMAIN, PATIENT_ID)!
    expect(p).toMatchObject({ case_type: 'patient', closed: false, user_id: 'f8df11f165c24606afc47c5ce74b7da1', date_modified: '2020-06-01T01:02:03Z' })
    expect(p.properties).toMatchObject({
      case_name: 'case_name: JESSE TESTUSER', address: '227 12th Street', external_id: '6c1ab4c4-f412-400f-b876-825dd05ff2fa',
      owner_id: 'd87c0134be3c401bb14e6c4420b7a178', case_import_date: '2020-06-24', patient_type: 'confirmed',
    })
    expect(p.server_date_modified).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/)
    const lab = s.getCase(DOMAIN, LAB_ID)!
    expect(lab.properties).toMatchObject({ case_type: 'lab_result', accession_number: '67', external_id: 'c826c545-78c8-482e-a7f1-4beeafeb9c83' })
    expect(lab.indices).toEqual({ parent: { case_id: PATIENT_ID, case_type: 'patient', relationship: 'child' } })
    expect(s.stats.submissions).toBe(1)
  })

  it('applies a re-sent form as an update: never a second case', async () => {
    const s = await sandbox()
    expect((await postForm(s, INDEX_CASE_XML)).status).toBe(201)
    expect((await postForm(s, INDEX_CASE_XML)).status).toBe(201)
    expect(s.cases().map((c) => c.case_id).sort()).toEqual([PATIENT_ID, LAB_ID].sort())
    expect(s.getCase(DOMAIN, PATIENT_ID)!.xform_ids).toHaveLength(2)
  })

  it('updates, re-indexes and closes cases, and a block may index a case created earlier in the form', async () => {
    const s = await sandbox()
    await postForm(s, form([{ id: 'p1', create: patient('E1') }, { id: 'l1', create: { case_type: 'lab_result', case_name: 'r' }, index: { caseId: 'p1', relationship: 'extension' } }]))
    expect(s.getCase(DOMAIN, 'l1')!.indices.parent.relationship).toBe('extension')
    const before = s.getCase(DOMAIN, 'p1')!
    expect((await postForm(s, form([{ id: 'p1', update: { phone: '', first_name: 'A & B René' }, close: true }], 'form-2'))).status).toBe(201)
    const after = s.getCase(DOMAIN, 'p1')!
    expect(after).toMatchObject({ closed: true, properties: { phone: '', first_name: 'A & B René', external_id: 'E1' } })
    expect(after.date_closed).not.toBeNull()
    expect(after.server_date_modified > before.server_date_modified).toBe(true)
    expect(after.xform_ids.at(-1)).toBe('form-2')
  })

  const bad: [string, (xml: string) => string, RegExp][] = [
    ['malformed XML', () => '<data><case case_id="x"><create></data>', /malformed XML/],
    ['an update of an unknown case', () => form([{ id: 'p1', create: patient('E1') }, { id: 'nobody', update: { a: 'b' } }]), /nobody does not exist/],
    ['an index to an unknown case', () => form([{ id: 'p1', create: patient('E1') }, { id: 'l1', create: { case_type: 'lab_result', case_name: 'r' }, index: { caseId: 'ghost' } }]), /points at ghost/],
    ['a create without case_type', () => form([{ id: 'p1', create: { case_name: 'n' } }]), /no case_type/],
    ['a case block without case_id', (x) => x.replace(`case_id="${PATIENT_ID}"`, ''), /no case_id/],
  ]
  for (const [what, build, message] of bad) {
    it(`rejects ${what} with 400 processing_failure and changes nothing`, async () => {
      const s = await sandbox()
      await postForm(s, form([{ id: 'existing', create: patient('E0') }]))
      const before = s.cases()
      const res = await postForm(s, build(INDEX_CASE_XML))
      expect(res.status).toBe(400)
      expect(res.body).toContain('<message nature="processing_failure">')
      expect(res.body).toMatch(message)
      expect(s.cases()).toEqual(before)
      expect(s.stats).toMatchObject({ submissions: 1, rejected: 1 })
    })
  }

  it('refuses a case that lives in another domain', async () => {
    const s = await sandbox()
    await postForm(s, form([{ id: 'p1', create: patient('E1') }]), 'ny-broome-cdcms')
    const res = await postForm(s, form([{ id: 'p1', create: patient('E1') }]))
    expect(res.status).toBe(400)
    expect(res.body).toMatch(/another domain/)
    expect(s.cases()).toHaveLength(1)
  })
})

describe('auth', () => {
  it('answers 401 without the ApiKey header or with a wrong key, and applies nothing', async () => {
    const s = await sandbox()
    expect((await get(s, '/a/ny-covid/api/v0.5/fixture/?fixture_type=county_list', {})).status).toBe(401)
    expect((await get(s, '/a/ny-covid/api/v0.5/fixture/?fixture_type=county_list', { authorization: 'ApiKey herald:wrong' })).status).toBe(401)
    const res = await fetch(`${s.url}/a/${DOMAIN}/receiver/`, { method: 'POST', headers: { 'content-type': 'text/xml' }, body: INDEX_CASE_XML })
    expect(res.status).toBe(401)
    expect(s.cases()).toEqual([])
    const list = await getJson(s, '/a/ny-covid/api/v0.5/fixture/?fixture_type=county_list')
    expect(list.objects).toHaveLength(65)
  })
})

describe('case API', () => {
  it('finds a case by external_id', async () => {
    const s = await sandbox()
    for (const id of ['A1', 'B2', 'C3']) s.createCase(DOMAIN, patient(id))
    const found = await getJson(s, `/a/${DOMAIN}/api/v0.5/case/?external_id=B2`)
    expect(found.meta).toMatchObject({ total_count: 1, next: null, previous: null, limit: 20, offset: 0 })
    expect(found.objects[0].properties.external_id).toBe('B2')
    expect(found.objects[0]).not.toHaveProperty('child_cases')
    expect((await getJson(s, `/a/ny-broome-cdcms/api/v0.5/case/?external_id=B2`)).objects).toEqual([])
  })

  it('pages through 250 cases by meta.next, each case once, in server_date_modified order', async () => {
    const s = await sandbox()
    for (let i = 0; i < 250; i++) s.createCase(DOMAIN, patient(`E${i}`))
    s.createCase(DOMAIN, { case_type: 'contact', case_name: 'not a patient' })
    const base = `${s.url}/a/${DOMAIN}/api/v0.5/case/`
    let next: string | null = `?type=patient&limit=100`
    const ids: string[] = []
    const pages: any[] = []
    while (next) {
      const page: any = await (await fetch(new URL(next, base), { headers: { authorization: 'ApiKey herald:sandbox' } })).json()
      pages.push({ ...page.meta, n: page.objects.length })
      ids.push(...page.objects.map((o: any) => o.case_id))
      next = page.meta.next
    }
    expect(pages.map((m) => [m.offset, m.n, m.total_count])).toEqual([[0, 100, 250], [100, 100, 250], [200, 50, 250]])
    expect(pages[0].next).toBe('?type=patient&limit=100&offset=100')
    expect(pages[1].previous).toBe('?type=patient&limit=100&offset=0')
    expect(ids).toEqual(s.cases(DOMAIN).filter((c) => c.case_type === 'patient').map((c) => c.case_id))
    expect(new Set(ids).size).toBe(250)
  })

  it('filters by server_date_modified_start and _end, inclusive', async () => {
    const s = await sandbox()
    const [a, b, c] = ['A', 'B', 'C'].map((e) => s.createCase(DOMAIN, patient(e)))
    const since = await getJson(s, `/a/${DOMAIN}/api/v0.5/case/?type=patient&server_date_modified_start=${b.server_date_modified}`)
    expect(since.objects.map((o: any) => o.case_id)).toEqual([b.case_id, c.case_id])
    const until = await getJson(s, `/a/${DOMAIN}/api/v0.5/case/?server_date_modified_end=${b.server_date_modified}`)
    expect(until.objects.map((o: any) => o.case_id)).toEqual([a.case_id, b.case_id])
    expect((await get(s, `/a/${DOMAIN}/api/v0.5/case/?server_date_modified_start=yesterday`)).status).toBe(400)
  })

  it('gives one case with its child cases when child_cases__full=true', async () => {
    const s = await sandbox()
    const p = s.createCase(DOMAIN, patient('E1'), [{ accession_number: 'ACC1' }, { accession_number: 'ACC2' }])
    const full = await getJson(s, `/a/${DOMAIN}/api/v0.5/case/${p.case_id}/?format=json&child_cases__full=true`)
    expect(full).toMatchObject({ case_id: p.case_id, id: p.case_id, domain: DOMAIN, resource_uri: '', indices: {} })
    const children = Object.values(full.child_cases) as any[]
    expect(children.map((c) => c.properties.accession_number).sort()).toEqual(['ACC1', 'ACC2'])
    for (const c of children) {
      expect(c.indices.parent).toEqual({ case_id: p.case_id, case_type: 'patient', relationship: 'child' })
      expect(c.child_cases).toEqual({})
    }
    expect(await getJson(s, `/a/${DOMAIN}/api/v0.5/case/${p.case_id}?format=json`)).not.toHaveProperty('child_cases')
  })

  it('answers 404 for an unknown case or a case of another domain', async () => {
    const s = await sandbox()
    const p = s.createCase(DOMAIN, patient('E1'))
    const res = await get(s, `/a/${DOMAIN}/api/v0.5/case/nope/?format=json`)
    expect(res.status).toBe(404)
    expect(await res.json()).toHaveProperty('error')
    expect((await get(s, `/a/ny-broome-cdcms/api/v0.5/case/${p.case_id}/`)).status).toBe(404)
  })
})

describe('investigator presets', () => {
  it('transfer(): closes the origin, names the county, and opens a copy in the destination domain', async () => {
    const s = await sandbox()
    const origin = s.createCase(DOMAIN, patient('E1', { first_name: 'JESSE' }))
    const dest = s.transfer(DOMAIN, origin.case_id, 7)!
    expect(s.getCase(DOMAIN, origin.case_id)).toMatchObject({ closed: true, properties: { transfer_destination_county_id: '7' } })
    expect(dest).toMatchObject({ domain: 'ny-broome-cdcms', case_type: 'patient', properties: { external_id: 'E1', first_name: 'JESSE', transfer_source_case_id: origin.case_id } })
    expect(dest.properties).not.toHaveProperty('transfer_destination_county_id')
    const found = await getJson(s, `/a/ny-broome-cdcms/api/v0.5/case/?external_id=E1`)
    expect(found.objects.map((o: any) => o.case_id)).toEqual([dest.case_id])

    const deadEnd = s.createCase(DOMAIN, patient('E2'))
    expect(s.transfer(DOMAIN, deadEnd.case_id, 9, { createDestination: false })).toBeUndefined()
    expect(s.getCase(DOMAIN, deadEnd.case_id)!.properties.transfer_destination_county_id).toBe('9')
    expect(s.cases('ny-cattaraugus-cdcms')).toEqual([])
  })

  it('markDuplicate() and edit(): the investigator changes a case, visible in the API', async () => {
    const s = await sandbox()
    const p = s.createCase(DOMAIN, patient('E1'))
    s.markDuplicate(DOMAIN, p.case_id, 'gone-case')
    const dup = await getJson(s, `/a/${DOMAIN}/api/v0.5/case/${p.case_id}/`)
    expect(dup).toMatchObject({ user_id: 'investigator', properties: { duplicate_of_case_id: 'gone-case' } })
    expect(dup.server_date_modified > p.server_date_modified).toBe(true)
    const res = await fetch(`${s.url}/sandbox/${DOMAIN}/cases/${p.case_id}`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ properties: { current_status: 'closed' }, closed: true }),
    })
    expect(res.status).toBe(200)
    expect(s.getCase(DOMAIN, p.case_id)).toMatchObject({ closed: true, properties: { current_status: 'closed', duplicate_of_case_id: 'gone-case' } })
    const moved = await fetch(`${s.url}/sandbox/${DOMAIN}/cases/${p.case_id}/transfer`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ to_fips: 7 }),
    })
    expect((await moved.json()).destination.domain).toBe('ny-broome-cdcms')
  })
})
