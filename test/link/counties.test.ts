import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readFileSync } from 'node:fs'
import { parseCountyList, readCounties, saveCounties } from '../../src/link/counties.ts'
import { createTestDb, type TestDb } from '../helpers/db.ts'
import { COUNTY_LIST } from '../helpers/link.ts'

const fixture = JSON.parse(readFileSync(COUNTY_LIST, 'utf8'))
const list = (...fields: Record<string, string>[]) => ({ objects: fields.map((f) => ({ fields: f })) })
let t: TestDb
beforeAll(async () => (t = await createTestDb()))
afterAll(async () => t.drop())

describe('county list', () => {
  it("reads CommCare's county list: domains, who takes part, the state domain", () => {
    const counties = parseCountyList(fixture).map((c) => c.county)
    expect(counties).toHaveLength(65)
    expect(counties.filter((c) => !c.participating).map((c) => c.fips).sort((a, b) => a - b)).toEqual([5, 47, 61, 81, 85, 125, 127])
    expect(counties.filter((c) => c.isStateDomain)).toEqual([expect.objectContaining({ fips: 900, domain: 'ny-statewide-cdcms' })])
  })

  it('names the entry and field of a bad list', () => {
    expect(() => parseCountyList({})).toThrow('no "objects" array')
    expect(() => parseCountyList(list({ fips: 'x' }))).toThrow('objects[0].fields.fips: not a county FIPS number')
    expect(() => parseCountyList(list({ fips: '1', domain: 'a', participating: 'yes' }, { fips: '1', domain: 'b', participating: 'yes' })))
      .toThrow('objects[1].fields.fips: county 1 is listed twice')
    expect(() => parseCountyList(list({ fips: '3', participating: 'yes' }))).toThrow('objects[0].fields.domain: a participating county needs a domain')
    expect(() => parseCountyList(list({ fips: '1', domain: 'a', is_state_domain: 'yes' }, { fips: '2', domain: 'b', is_state_domain: 'yes' })))
      .toThrow('2 counties are marked is_state_domain')
  })

  it('loads again as an update, and the state domain can move', async () => {
    expect(await t.db.transaction((tx) => saveCounties(tx, parseCountyList(fixture)))).toEqual({ added: 65, updated: 0 })
    expect(await t.db.transaction((tx) => saveCounties(tx, parseCountyList(fixture)))).toEqual({ added: 0, updated: 65 })
    const moved = list({ fips: '1', domain: 'ny-albany-cdcms', participating: 'yes', is_state_domain: 'yes' })
    expect(await t.db.transaction((tx) => saveCounties(tx, parseCountyList(moved)))).toEqual({ added: 0, updated: 1 })
    const { state, byFips } = await readCounties(t.db)
    expect(state?.fips).toBe(1)
    expect(byFips.get(900)?.isStateDomain).toBe(false)
  })
})
