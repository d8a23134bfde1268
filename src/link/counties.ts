/**
 * Counties from CommCare's county list fixture (`/a/{root}/api/v0.5/fixture/?fixture_type=county_list`):
 * which project space (domain) holds each county's cases, whether the county takes part, and which
 * domain is the state's, where rows from an unknown county go.
 */
import type { Queryable } from '../db/types.ts'

export interface County {
  fips: number
  name: string
  display: string
  domain: string | null
  participating: boolean
  isStateDomain: boolean
  locationId: string | null
}

export class CountyListError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'CountyListError'
  }
}

/**
 * Reads the fixture API's JSON answer: a list `{meta, objects: [...]}`, or a bare array of the same
 * `{fields}` objects (CommCare has answered both). A malformed entry is an error naming the entry and field.
 */
export function parseCountyList(json: unknown): { county: County; fields: Record<string, unknown> }[] {
  const bare = Array.isArray(json)
  const objects = bare ? json : (json as { objects?: unknown })?.objects
  if (!Array.isArray(objects)) throw new CountyListError('not a CommCare fixture list: no "objects" array, nor a bare array')
  const seen = new Set<number>()
  const out = objects.map((o, i) => {
    const fields = (o as { fields?: Record<string, unknown> })?.fields
    const where = bare ? `[${i}]` : `objects[${i}]`
    if (!fields || typeof fields !== 'object') throw new CountyListError(`${where}: no "fields" object`)
    const text = (k: string) => (typeof fields[k] === 'string' ? (fields[k] as string).trim() : '')
    const fipsText = text('fips')
    if (!/^\d{1,5}$/.test(fipsText)) throw new CountyListError(`${where}.fields.fips: not a county FIPS number`)
    const fips = Number(fipsText)
    if (seen.has(fips)) throw new CountyListError(`${where}.fields.fips: county ${fips} is listed twice`)
    seen.add(fips)
    const participating = text('participating').toLowerCase() === 'yes'
    const domain = text('domain') || null
    if (participating && !domain) throw new CountyListError(`${where}.fields.domain: a participating county needs a domain`)
    const name = text('county_name') || text('county_display') || String(fips)
    return {
      county: {
        fips, name, display: text('county_display') || name, domain, participating,
        isStateDomain: text('is_state_domain').toLowerCase() === 'yes', locationId: text('location_id') || null,
      },
      fields,
    }
  })
  const state = out.filter((c) => c.county.isStateDomain)
  if (state.length > 1) throw new CountyListError(`${state.length} counties are marked is_state_domain; one is expected`)
  return out
}

/** Inserts or updates every county of the list, in one transaction. Returns how many were new. */
export async function saveCounties(tx: Queryable, list: ReturnType<typeof parseCountyList>): Promise<{ added: number; updated: number }> {
  // The state flag moves in two steps, so the one-state-domain index never sees two at once.
  await tx.query('UPDATE counties SET is_state_domain = false WHERE is_state_domain AND NOT fips = ANY($1::int[])',
    [list.filter((c) => c.county.isStateDomain).map((c) => c.county.fips)])
  const rows = await tx.query<{ added: boolean }>(
    `INSERT INTO counties (fips, name, display, domain, participating, is_state_domain, location_id, fields)
     SELECT * FROM json_to_recordset($1::json) AS c(fips int, name text, display text, domain text, participating boolean,
       is_state_domain boolean, location_id text, fields jsonb)
     ON CONFLICT (fips) DO UPDATE SET name = excluded.name, display = excluded.display, domain = excluded.domain,
       participating = excluded.participating, is_state_domain = excluded.is_state_domain,
       location_id = excluded.location_id, fields = excluded.fields, loaded_at = now()
     RETURNING (xmax = 0) AS added`,
    [JSON.stringify(list.map(({ county: c, fields }) => ({
      fips: c.fips, name: c.name, display: c.display, domain: c.domain, participating: c.participating,
      is_state_domain: c.isStateDomain, location_id: c.locationId, fields,
    })))],
  )
  const added = rows.filter((r) => r.added).length
  return { added, updated: rows.length - added }
}

/** Link cannot place any row before the county list is loaded. */
export class NoCountyList extends Error {
  constructor() {
    super('no county list loaded: run `herald counties load FILE`')
    this.name = 'NoCountyList'
  }
}

export interface CountyTable {
  byFips: Map<number, County>
  state: County | undefined
}

/** The county whose cases a CommCare domain holds. */
export function countyOfDomain(counties: CountyTable, domain: string): County | undefined {
  for (const c of counties.byFips.values()) if (c.domain === domain) return c
  return undefined
}

export async function readCounties(q: Queryable): Promise<CountyTable> {
  const rows = await q.query(
    'SELECT fips, name, display, domain, participating, is_state_domain, location_id FROM counties')
  const byFips = new Map<number, County>()
  let state: County | undefined
  for (const r of rows) {
    const c: County = {
      fips: r.fips, name: r.name, display: r.display, domain: r.domain, participating: r.participating,
      isStateDomain: r.is_state_domain, locationId: r.location_id,
    }
    byFips.set(c.fips, c)
    if (c.isStateDomain) state = c
  }
  return { byFips, state }
}
