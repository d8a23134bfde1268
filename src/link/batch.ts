/**
 * One link batch, one transaction: claim rows, take the locks, load every record the rows can
 * touch, decide (decide.ts), write. About fifteen statements whatever the batch size.
 *
 * Why no two workers ever create two people, or two cases, for one person:
 * 1. Before looking anyone up, the batch locks each of its rows' patient keys and match keys
 *    (rule b): their rows in link_locks (keys.ts says why rows, not advisory locks). A person is
 *    only created, and a key only added, under the lock of that key: a worker with a row of the
 *    same person cannot decide about it meanwhile. The locks are not waited for (SKIP LOCKED): a
 *    row whose key another batch holds is left in the queue (still claimed by this transaction, so
 *    skipped by the others) for a later batch. Waiting would make every pair of concurrent batches
 *    that share one person run one after the other.
 * 2. A person can also be reached through a key another worker holds (its rows carry other keys of
 *    the same person). So the people found are then locked as rows (FOR UPDATE, ordered by id),
 *    and only then are their cases read and decided: cases of one person change one batch at a time.
 *    This is the only lock a batch waits for, taken in one statement in id order: no cycle can form.
 */
import type { Queryable } from '../db/types.ts'
import { claimInTx, due, finish } from '../engine/queue.ts'
import { NoCountyList, readCounties } from './counties.ts'
import { PERSON_FIELDS } from './data.ts'
import { matchKeyOf, matchKeyText as matchKey, lockId, personKeys } from './keys.ts'
import { current, decideCases, LinkState, lockKeys, planRows, type CaseRec, type Outcome, type PersonRec, type Plan, type ResultRec } from './decide.ts'
import { linkQueue } from './queue.ts'
import { readRow, TYPED_SELECT, type LinkRow, type StoredRow } from './row.ts'

export interface BatchResult {
  /** Rows linked (or ignored) and gone from the queue. */
  rowIds: number[]
  outcomes: Map<number, Outcome>
  /** Rows left in the queue because another batch held one of their keys. */
  deferred: number
}

/**
 * Claims up to `limit` due rows of link_queue for this transaction (the work queue's claimInTx: the
 * transaction is the lease) and reads their lab rows; they leave the queue when it commits.
 */
async function claimRows(tx: Queryable, limit: number, only?: number[]): Promise<StoredRow[]> {
  const claimed = await claimInTx(tx, linkQueue, limit, only ? { where: 'lab_row_id = ANY($1::bigint[])', params: [only] } : {})
  if (claimed.length === 0) return []
  return tx.query<StoredRow>(
    `SELECT r.id, r.version, r.raw, ${Object.entries(TYPED_SELECT).map(([as, sql]) => `${sql} AS ${as}`).join(', ')}
     FROM lab_rows r WHERE r.id = ANY($1::bigint[]) ORDER BY r.id`,
    [claimed.map((c) => c.id)],
  )
}

export async function linkBatch(tx: Queryable, limit: number, only?: number[]): Promise<BatchResult> {
  const counties = await readCounties(tx)
  if (counties.byFips.size === 0) throw new NoCountyList()
  const stored = await claimRows(tx, limit, only)
  const outcomes = new Map<number, Outcome>()
  if (stored.length === 0) return { rowIds: [], outcomes, deferred: 0 }
  const claimed = stored.map(readRow)
  const state = new LinkState()

  const rows = await lockRows(tx, claimed)
  // Done with them once this transaction commits (the rows it locked; deferred rows stay due).
  await finish(tx, linkQueue, null, rows.map((r) => ({ id: String(r.id) })), { delete: true })
  await findPeople(tx, rows, state)
  const plans = planRows(rows, counties, state, outcomes)

  await lockPeople(tx, state, plans)
  decideCases(plans, state, outcomes)
  await takeIds(tx, { people: state.newPeople, index_cases: state.newCases, lab_results: state.newResults })
  await write(tx, state)
  return { rowIds: rows.map((r) => r.id), outcomes, deferred: claimed.length - rows.length }
}

/**
 * Gives the keys of the rows the next batch will claim their link_locks rows, committed at once,
 * before the batch's transaction begins. Ingest writes none (issue 19), so every new person's keys
 * start here or in lockRows; but an INSERT … ON CONFLICT that meets a key another transaction has
 * inserted and not committed waits for that whole transaction, so keys inserted inside batches made
 * two workers with rows of the same new people run one after the other (link at 4,499 rows/s with
 * two workers against 8,458 when ingest wrote the keys). Inserted here, a key is waited on for one
 * statement at most. The rows are those a claim would take now (due, not held by another batch:
 * SKIP LOCKED, the share lock gone with the statement); rows that become due after it get their keys
 * in lockRows. Sorted, as there: concurrent inserts of the same keys cannot form a circle.
 */
export async function prepareLocks(db: Queryable, limit: number): Promise<void> {
  const rows = await db.query<{ patient_key: string | null; dob: string | null; last_name: string | null; first_name: string | null }>(
    `SELECT r.patient_key, r.date_of_birth::text AS dob, r.last_name, r.first_name FROM lab_rows r
     WHERE r.id IN (SELECT lab_row_id FROM link_queue WHERE ${due(linkQueue)} ORDER BY ${linkQueue.order} LIMIT $1 FOR KEY SHARE SKIP LOCKED)`,
    [limit])
  const keys = [...new Set(rows.flatMap((r) => personKeys(r.patient_key, matchKeyOf(r.dob, r.last_name, r.first_name)).map(lockId)))].sort()
  if (keys.length > 0) await db.query('INSERT INTO link_locks (key) SELECT unnest($1::bigint[]) ON CONFLICT DO NOTHING', [keys])
}

/**
 * Locks the rows' keys (link_locks, see keys.ts) without waiting for their holders; returns the rows
 * whose keys are all ours. A key with no row yet (prepareLocks did not see its row) gets one here.
 * Inserted in one sorted order by every batch: the one wait left, for another batch inserting the
 * same key at the same moment, cannot form a circle.
 */
async function lockRows(tx: Queryable, claimed: LinkRow[]): Promise<LinkRow[]> {
  const ids = new Map(claimed.map((r) => [r, lockKeys(r).map(lockId)]))
  const wanted = [...new Set([...ids.values()].flat())].sort()
  const locked = await tx.query<{ key: string }>(
    'SELECT key::text FROM link_locks WHERE key = ANY($1::bigint[]) FOR UPDATE SKIP LOCKED', [wanted])
  const mine = new Set(locked.map((l) => l.key))
  if (mine.size < wanted.length) {
    // Keys not got: held by another batch, or with no row yet. Inserting the latter makes them ours;
    // DO NOTHING skips the former without waiting for their holder (the row is deferred).
    const added = await tx.query<{ key: string }>(
      'INSERT INTO link_locks (key) SELECT unnest($1::bigint[]) ON CONFLICT DO NOTHING RETURNING key::text',
      [wanted.filter((k) => !mine.has(k))])
    for (const a of added) mine.add(a.key)
  }
  return mine.size === wanted.length ? claimed : claimed.filter((r) => ids.get(r)!.every((k) => mine.has(k)))
}

/** The people the rows' keys already name (ids only: their records are read once they are locked). */
async function findPeople(tx: Queryable, rows: LinkRow[], state: LinkState) {
  const keys = [...new Set(rows.flatMap((r) => (r.patientKey ? [r.patientKey] : [])))]
  const matches = [...new Map(rows.flatMap((r) => (r.match ? [[matchKey(r.match), r.match]] : []))).values()]
  const [byKey, byMatch] = await Promise.all([
    tx.query<{ patient_key: string; person_id: number }>(
      'SELECT patient_key, person_id FROM person_keys WHERE patient_key = ANY($1::text[])', [keys]),
    // One index probe per key (LATERAL): a join would scan all people once they outnumber the batch's keys.
    tx.query<{ id: number; dob: string; match_last: string; match_first: string }>(
      `SELECT p.id, m.dob::text AS dob, m.last AS match_last, m.first AS match_first
       FROM unnest($1::date[], $2::text[], $3::text[]) AS m(dob, last, first)
       CROSS JOIN LATERAL (SELECT min(id) AS id FROM people
         WHERE date_of_birth = m.dob AND match_last = m.last AND match_first = m.first) p
       WHERE p.id IS NOT NULL`,
      [matches.map((m) => m.dob), matches.map((m) => m.last), matches.map((m) => m.first)]),
  ])
  for (const r of byKey) state.keyOwner.set(r.patient_key, state.existingPerson(r.person_id))
  for (const r of byMatch) state.byMatch.set(matchKey({ dob: r.dob, last: r.match_last, first: r.match_first }), state.existingPerson(r.id))
}

/** Ids for the new records of each table, from the tables' sequences, in one statement. */
async function takeIds(tx: Queryable, byTable: Record<string, { id?: number }[]>) {
  const tables = Object.keys(byTable).filter((t) => byTable[t].length > 0)
  if (tables.length === 0) return
  const [row] = await tx.query(`SELECT ${tables.map((t, i) =>
    `ARRAY(SELECT nextval('${t}_id_seq'::regclass) FROM generate_series(1, $${i + 1}::int)) AS ${t}`).join(', ')}`,
  tables.map((t) => byTable[t].length))
  for (const t of tables) byTable[t].forEach((r, i) => (r.id = Number(row[t][i])))
}

/**
 * Locks the people the batch found (in id order) and reads them; then their cases in the rows'
 * counties, the cases those moved to (loadMoves), and those cases' results with the rows' accession
 * numbers: all that the rules look at.
 */
async function lockPeople(tx: Queryable, state: LinkState, plans: Plan[]) {
  const ids = [...state.people.keys()].sort((a, b) => a - b)
  if (ids.length === 0) return
  const people = await tx.query(
    `SELECT id, external_id, ${PERSON_FIELDS.join(', ')} FROM people WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE`, [ids])
  for (const p of people) {
    const rec = state.people.get(p.id)!
    rec.externalId = p.external_id
    rec.fields = Object.fromEntries(PERSON_FIELDS.map((f) => [f, p[f]])) as PersonRec['fields']
  }
  const known = plans.filter((p) => !p.person.isNew)
  const cases = await tx.query(
    `SELECT ${CASE_COLUMNS}
     FROM index_cases c JOIN (SELECT DISTINCT * FROM unnest($1::bigint[], $2::int[])) AS x(person_id, county_fips)
       USING (person_id, county_fips)
     ORDER BY id`, [known.map((p) => p.person.id), known.map((p) => p.county.fips)])
  const byId = new Map<number, CaseRec>()
  const movedTo = new Map<number, number>()
  const add = (rows: typeof cases) => {
    for (const c of rows) {
      if (byId.has(c.id)) continue
      if (c.moved_to) movedTo.set(c.id, c.moved_to)
      const person = state.people.get(c.person_id)!
      const rec: CaseRec = {
        id: c.id, isNew: false, person, countyFips: c.county_fips, caseId: c.case_id, data: c.data, closed: c.closed,
        openedOn: c.opened_on, activityEndedOn: c.activity_ended_on, reinfectionOf: null, movedTo: null,
        changed: false, sync: false, results: new Map(),
      }
      byId.set(c.id, rec)
      state.cases.set(person, [...(state.cases.get(person) ?? []), rec])
    }
  }
  const moves = await loadMoves(tx, cases, ids)
  add(cases)
  add(moves)
  for (const c of [...cases, ...moves]) if (c.reinfection_of) byId.get(c.id)!.reinfectionOf = byId.get(c.reinfection_of) ?? null
  for (const [id, to] of movedTo) byId.get(id)!.movedTo = byId.get(to) ?? null
  if (byId.size === 0) return
  // A row's result may be on one of its county's cases, or on the case that one moved to.
  const pairs = known.flatMap((p) => (state.cases.get(p.person) ?? [])
    .filter((c) => c.countyFips === p.county.fips)
    .flatMap((c) => [...new Set([c, current(c)])].map((x) => [x.id!, p.row.accession!] as const)))
  const results = await tx.query(
    `SELECT id, index_case_id, accession_number, lab_row_id, positive, tested_on::text AS tested_on, data
     FROM lab_results JOIN (SELECT DISTINCT * FROM unnest($1::bigint[], $2::text[])) AS x(index_case_id, accession_number)
       USING (index_case_id, accession_number)`,
    [pairs.map((p) => p[0]), pairs.map((p) => p[1])])
  for (const r of results) {
    const c = byId.get(r.index_case_id)!
    c.results.set(r.accession_number, {
      id: r.id, isNew: false, indexCase: c, accession: r.accession_number, labRowId: r.lab_row_id, positive: r.positive,
      testedOn: r.tested_on, data: r.data, changed: false,
    })
  }
}

const CASE_COLUMNS = `id, person_id, county_fips, case_id, data, closed, opened_on::text AS opened_on,
  activity_ended_on::text AS activity_ended_on, reinfection_of, moved_to`

/**
 * The cases the loaded ones moved to (moved_to, set by case sync when it adopts or redirects to the
 * end of a transfer or duplicate chain), to the end of each chain: they may be in a county no row
 * names. One statement, only when a loaded case has moved. Only the cases of the batch's people
 * (locked above) are followed: a case of someone else is decided by the batch that locks them, so a
 * case that moved to another person's case keeps its results (case sync found the two people to be
 * one; link does not merge people).
 */
async function loadMoves(tx: Queryable, loaded: Record<string, any>[], people: number[]): Promise<Record<string, any>[]> {
  const have = new Set(loaded.map((c) => c.id))
  const from = [...new Set(loaded.filter((c) => c.moved_to && !have.has(c.moved_to)).map((c) => c.moved_to))]
  if (from.length === 0) return []
  // UNION (not UNION ALL) stops at a case reached twice: a chain that loops back ends.
  return tx.query(
    `WITH RECURSIVE reached(id) AS (
       SELECT unnest($1::bigint[])
       UNION
       SELECT c.moved_to FROM index_cases c JOIN reached r ON c.id = r.id
       WHERE c.moved_to IS NOT NULL AND c.person_id = ANY($2::bigint[]))
     SELECT ${CASE_COLUMNS} FROM index_cases c JOIN reached r USING (id)
     WHERE c.person_id = ANY($2::bigint[]) ORDER BY id`, [from, people])
}

// The events that name the row's person (see link_events in the migration).
const PERSON_EVENTS = new Set(['person_matched', 'person_created', 'patient_key_added', 'person_updated', 'no_new_information'])

/** 1, 2, 3… per lab row, in the order given. */
function numbering(): (row: number) => number {
  const next = new Map<number, number>()
  return (row) => {
    const n = (next.get(row) ?? 0) + 1
    next.set(row, n)
    return n
  }
}

async function write(tx: Queryable, s: LinkState) {
  await tx.copyInto('people', ['id', 'external_id', 'date_of_birth', 'match_last', 'match_first', ...PERSON_FIELDS],
    s.newPeople.map((p) => [p.id, p.externalId, p.match?.dob ?? null, p.match?.last ?? null, p.match?.first ?? null, ...PERSON_FIELDS.map((f) => p.fields[f])]))
  const updatedPeople = [...s.people.values()].filter((p) => p.changed)
  if (updatedPeople.length > 0) {
    await tx.query(
      `UPDATE people p SET ${PERSON_FIELDS.map((f) => `${f} = x.${f}`).join(', ')}, updated_at = now()
       FROM json_to_recordset($1::json) AS x(id bigint, ${PERSON_FIELDS.map((f) => `${f} text`).join(', ')})
       WHERE p.id = x.id`,
      [JSON.stringify(updatedPeople.map((p) => ({ id: p.id, ...p.fields })))])
  }
  await tx.copyInto('person_keys', ['patient_key', 'person_id', 'lab_row_id'], s.newKeys.map((k) => [k.key, k.person.id, k.row]))

  await tx.copyInto('index_cases',
    ['id', 'person_id', 'county_fips', 'case_id', 'data', 'closed', 'opened_on', 'activity_ended_on', 'reinfection_of'],
    s.newCases.map((c) => [c.id, c.person.id, c.countyFips, c.caseId, c.data, c.closed, c.openedOn, c.activityEndedOn, c.reinfectionOf?.id ?? null]))
  const cases = [...s.cases.values()].flat()
  const updatedCases = cases.filter((c) => !c.isNew && c.changed)
  if (updatedCases.length > 0) {
    await tx.query(
      `UPDATE index_cases c SET data = x.data, closed = x.closed, activity_ended_on = x.activity_ended_on, updated_at = now()
       FROM json_to_recordset($1::json) AS x(id bigint, data jsonb, closed boolean, activity_ended_on date)
       WHERE c.id = x.id`,
      [JSON.stringify(updatedCases.map((c) => ({ id: c.id, data: c.data, closed: c.closed, activity_ended_on: c.activityEndedOn })))])
  }
  const toSync = cases.filter((c) => c.sync).map((c) => c.id)
  if (toSync.length > 0) {
    await tx.query(
      `INSERT INTO case_sync_queue (index_case_id) SELECT unnest($1::bigint[]) ORDER BY 1
       ON CONFLICT (index_case_id) DO UPDATE SET generation = case_sync_queue.generation + 1, requested_at = now(),
         -- a change to a case whose sync had failed is a new job, with its attempts anew
         attempts = CASE WHEN case_sync_queue.failed_at IS NULL THEN case_sync_queue.attempts ELSE 0 END, failed_at = NULL`, [toSync])
  }

  await tx.copyInto('lab_results', ['id', 'index_case_id', 'accession_number', 'lab_row_id', 'positive', 'tested_on', 'data'],
    s.newResults.map((r) => [r.id, r.indexCase.id, r.accession, r.labRowId, r.positive, r.testedOn, r.data]))
  const updatedResults = cases.flatMap((c) => [...c.results.values()]).filter((r) => !r.isNew && r.changed)
  if (updatedResults.length > 0) {
    await tx.query(
      `UPDATE lab_results r SET data = x.data, updated_at = now()
       FROM json_to_recordset($1::json) AS x(id bigint, data jsonb) WHERE r.id = x.id`,
      [JSON.stringify(updatedResults.map((r) => ({ id: r.id, data: r.data })))])
  }

  const seq = numbering()
  await tx.copyInto('link_events', ['lab_row_id', 'seq', 'kind', 'person_id', 'index_case_id', 'lab_result_id', 'detail'],
    s.events.map((e) => [e.row, seq(e.row), e.kind, PERSON_EVENTS.has(e.kind) ? e.person!.id : null, e.indexCase?.id ?? null, e.result?.id ?? null, e.detail ?? null]))
  const changeSeq = numbering()
  await tx.copyInto('link_changes', ['lab_row_id', 'seq', 'target', 'target_id', 'applied', 'dropped'],
    s.changes.map((c) => [c.row, changeSeq(c.row), c.target, c.record.id, c.applied, c.dropped]))
  await tx.copyInto('exposure_queue', ['lab_result_id', 'person_id'],
    s.exposures.map((r: ResultRec) => [r.id, r.indexCase.person.id]))
}
