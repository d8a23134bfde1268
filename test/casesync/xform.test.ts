/** The XForm case sync posts, against the case-block form of fixtures/commcare/index_case.xml. */
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { XMLParser } from 'fast-xml-parser'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { loadCases } from '../../src/casesync/cases.ts'
import type { CommCareCase } from '../../src/casesync/client.ts'
import { caseBlocks, labResultCaseId, type LocalCase } from '../../src/casesync/payload.ts'
import { loadConfig } from '../../src/config.ts'
import { buildForm, CASE_NS, FORM_NS, formMeta } from '../../src/casesync/xform.ts'
import { linkRows } from '../helpers/casesync.ts'
import { createTestDb, type TestDb } from '../helpers/db.ts'
import { row, tempDir } from '../helpers/files.ts'
import { loadCounties } from '../helpers/link.ts'

const FIXTURE = readFileSync(fileURLToPath(new URL('../fixtures/commcare/index_case.xml', import.meta.url)), 'utf8')
const parser = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@', removeNSPrefix: true, parseTagValue: false, isArray: (n) => n === 'case' })

/** A case block as fields: its id, type, index, and every property it sets (create and update alike). */
function blocks(xml: string) {
  return parser.parse(xml).data.case.map((c: any) => {
    const { case_type, case_name, ...props } = { ...c.create, ...c.update }
    return { caseId: c['@case_id'], caseType: case_type, caseName: case_name, props, parent: c.index?.parent }
  })
}

let t: TestDb
const tmp = tempDir()
beforeAll(async () => {
  t = await createTestDb()
  await loadCounties(t.db)
})
afterAll(async () => {
  await t.drop()
  tmp.cleanup()
})

describe('the case sync XForm', () => {
  it('carries what the fixture carries: a patient case with its properties, and a lab_result indexed to it', async () => {
    await linkRows(t.db, tmp.dir, [row(3, { PIDPATIENTKEY: 'X1', PIDCOUNTYCODE: '1', OBRACCESSIONNUM: '67', PIDLASTNAME: 'Testuser', PIDFIRSTNAME: 'Jesse', PIDADDRESSLINE1: '227 12th Street', PIDCITY: 'Chesterton', PIDZIPCODE: '12345' })])
    const [id] = (await t.db.query('SELECT id::text FROM index_cases')).map((r) => r.id)
    const c = (await loadCases(t.db, [id])).get(id)!
    const ours = buildForm(caseBlocks(c, null), { userId: 'f8df11f165c24606afc47c5ce74b7da1', username: 'test-username', instanceId: 'i-1' })
    const [fxPatient, fxLab] = blocks(FIXTURE)
    const [patient, lab] = blocks(ours)

    expect(patient.caseType).toBe('patient')
    expect(patient.caseId).toBe(c.caseId)
    expect(Object.keys(patient.props)).toEqual(expect.arrayContaining(Object.keys(fxPatient.props)))
    expect(patient.props).toMatchObject({ first_name: 'Jesse', last_name: 'Testuser', external_id: c.data.external_id, has_phone_number: 'yes' })
    expect(lab.caseType).toBe(fxLab.caseType)
    expect(lab.caseId).toBe(labResultCaseId(c.caseId, '67'))
    expect(Object.keys(lab.props)).toEqual(expect.arrayContaining(Object.keys(fxLab.props)))
    expect(lab.props.accession_number).toBe('67')
    // A child index, written as New York's integrations write it: no relationship attribute.
    expect(lab.parent).toEqual({ '#text': c.caseId, '@case_type': 'patient' })

    const doc = parser.parse(ours).data
    expect(FIXTURE).toContain(`xmlns:n0="${CASE_NS}"`) // the case blocks' namespace, as CommCare reads them
    expect(ours.match(/<n0:case [^>]*>/g)!.every((tag) => tag.includes(`xmlns:n0="${CASE_NS}"`))).toBe(true)
    expect(Object.keys(doc.meta)).toEqual(expect.arrayContaining(['deviceID', 'timeStart', 'timeEnd', 'username', 'userID', 'instanceID']))
    expect(doc.meta.userID).toBe('f8df11f165c24606afc47c5ce74b7da1')
    expect(Object.keys(parser.parse(FIXTURE).data.meta)).toEqual(expect.arrayContaining(Object.keys(doc.meta).filter((k) => !k.startsWith('@'))))
  })

  it('indexes a new lab_result as a child (no relationship attribute) by default, as an extension by the setting', () => {
    const lab = { caseId: 'l-1', create: true, caseType: 'lab_result', caseName: 'r', ownerId: 'o', properties: {}, parent: { caseId: 'p-1', caseType: 'patient' } }
    const index = (meta: Parameters<typeof formMeta>[0]) => /<n0:parent [^>]*>[^<]*<\/n0:parent>/.exec(buildForm([lab], formMeta(meta)))![0]
    const config = loadConfig({}).commcare
    expect(config.labResultIndex).toBe('child')
    expect(index(config)).toBe('<n0:parent case_type="patient">p-1</n0:parent>')
    expect(index({ ...config, labResultIndex: 'extension' })).toBe('<n0:parent case_type="patient" relationship="extension">p-1</n0:parent>')
    expect(index({ user: 'u', userId: 'u' })).toBe('<n0:parent case_type="patient">p-1</n0:parent>')
  })

  it('indexes only new lab_results: one CommCare holds already (child or extension) is updated and keeps its index', () => {
    const c: LocalCase = { id: '1', caseId: 'p-1', personId: '1', countyFips: 1, domain: 'd', locationId: 'loc', data: { first_name: 'A' }, known: true,
      results: [{ accession: 'OLD', data: { accession_number: 'OLD', lab_result: 'positive' } }, { accession: 'NEW', data: { accession_number: 'NEW' } }] }
    const kid = (id: string, relationship: string) => ({ case_id: id, server_date_modified: '', indices: { parent: { case_id: 'p-1', case_type: 'patient', relationship } },
      properties: { case_type: 'lab_result', accession_number: 'OLD' } })
    for (const relationship of ['child', 'extension']) {
      const commcare: CommCareCase = { case_id: 'p-1', server_date_modified: '', indices: {}, properties: { first_name: 'A' }, child_cases: { k: kid('k-1', relationship) } }
      const [old, added] = caseBlocks(c, commcare)
      expect(old).toMatchObject({ caseId: 'k-1', create: false, properties: { lab_result: 'positive' } })
      expect(old.parent).toBeUndefined()
      expect(added).toMatchObject({ caseId: labResultCaseId('p-1', 'NEW'), create: true, parent: { caseId: 'p-1', caseType: 'patient' } })
    }
  })

  it('carries the form name, xmlns and userID of the settings', () => {
    const config = loadConfig({ HERALD_COMMCARE_FORM_NAME: 'Lab result import', HERALD_COMMCARE_FORM_XMLNS: 'http://openrosa.org/formdesigner/ABC-123',
      HERALD_COMMCARE_USER_ID: 'a1b2c3d4e5f6', HERALD_COMMCARE_USER: 'herald@ny-covid.commcarehq.org' }).commcare
    // The root element as written (the parser drops namespace declarations).
    const root = (xml: string) => /<data [^>]*>/.exec(xml)![0]
    const xml = buildForm([], formMeta(config))
    expect(root(xml)).toContain('name="Lab result import" uiVersion="1" version="1" xmlns="http://openrosa.org/formdesigner/ABC-123"')
    expect(parser.parse(xml).data.meta).toMatchObject({ userID: 'a1b2c3d4e5f6', username: 'herald@ny-covid.commcarehq.org' })
    const plain = buildForm([], formMeta(loadConfig({}).commcare))
    expect(root(plain)).toContain(`name="Herald case sync" uiVersion="1" version="1" xmlns="${FORM_NS}"`)
    expect(parser.parse(plain).data.meta.userID).toBe('herald')
  })

  it('escapes values, and refuses a property name that is no XML name', () => {
    const block = { caseId: 'c-1', create: true, caseType: 'patient', caseName: 'A & B', ownerId: 'o', properties: { case_notes: '<b>"x" & \'y\'</b>' } }
    expect(blocks(buildForm([block], { userId: 'u', username: 'u' }))[0].props.case_notes).toBe('<b>"x" & \'y\'</b>')
    expect(() => buildForm([{ ...block, properties: { 'bad name': 'v' } }], { userId: 'u', username: 'u' })).toThrow(/not a valid XML element name/)
  })
})
