/**
 * Intake: link's marks (exposure_queue) become notices. Each mark is a new positive result of a
 * person with a phone. It counts if its test type is one that counts and its test date is within
 * the look-back window before the lab reported it (else Herald got it, in the configured time zone;
 * so a backlog taken in late still counts); it then opens the person's episode (a
 * notice), or joins the episode already open (a result within `episodeDays` of the episode's first
 * one): one code per person per episode. The people of a batch are locked first, so two workers
 * never open two episodes for one person.
 *
 * Marks are claimed with claimInTx (intakeQueue): locked by the transaction that turns them into
 * notices and deletes them, so a crash gives them back. A batch that fails is taken again one mark
 * at a time: the mark that fails backs off (and after intakeQueue's attempts fails for good, visible
 * in `herald queue failed exposure-intake`), and the others go on.
 */
import type { Db, Queryable } from '../db/types.ts'
import type { ExposureConfig } from '../config.ts'
import { claimInTx, fail, finish } from '../engine/queue.ts'
import { errorText } from '../log.ts'
import { intakeQueue } from './queue.ts'

export type IntakeOutcome = 'opened' | 'joined' | 'ineligible'

interface Mark {
  lab_result_id: string
  person_id: string
  tested_on: string | null
  received_on: string | null
  /** Null when the result is gone (marks carry no foreign key). */
  data: Record<string, string> | null
}

const daysBetween = (a: string, b: string) => Math.round((Date.parse(b) - Date.parse(a)) / 86_400_000)

/** Why a mark does not count, or null when it does. */
function ineligible(m: Mark, config: ExposureConfig): string | null {
  if (!m.received_on || !m.data) return 'no_result'
  if (!m.tested_on) return 'no_test_date'
  const reported = /^\d{4}-\d{2}-\d{2}/.test(m.data.eclrs_create_date ?? '') ? m.data.eclrs_create_date.slice(0, 10) : m.received_on
  if (daysBetween(m.tested_on, reported) > config.lookbackDays) return 'too_old'
  if (config.testTypes.length > 0) {
    const names = [m.data.eclrs_loinc, m.data.test_type].filter(Boolean).map((s) => s.toLowerCase())
    if (!config.testTypes.some((t) => names.includes(t.toLowerCase()))) return 'test_type'
  }
  return null
}

interface Episode { id?: string; start: string }

export async function intake(db: Db, config: ExposureConfig, limit: number): Promise<Record<string, number>> {
  let taken: string[] = []
  try {
    return await db.transaction(async (tx) => {
      const marks = await claimMarks(tx, config, limit)
      taken = marks.map((m) => m.lab_result_id)
      return await decide(tx, config, marks)
    })
  } catch (err) {
    if (taken.length === 0) throw err // not a mark's fault (no marks were taken): the runner logs it
    return isolate(db, config, taken)
  }
}

/** The batch failed: each of its marks on its own, so the one at fault backs off and the rest go on. */
async function isolate(db: Db, config: ExposureConfig, ids: string[]): Promise<Record<string, number>> {
  const counts: Record<string, number> = {}
  for (const id of ids) {
    try {
      const got = await db.transaction(async (tx) => decide(tx, config, await claimMarks(tx, config, 1, id)))
      for (const [k, n] of Object.entries(got)) counts[k] = (counts[k] ?? 0) + n
    } catch (err) {
      // Its own transaction rolled back: the failure is recorded in another, if the mark is still due.
      const failed = await db.transaction(async (tx) => {
        if ((await claimInTx(tx, intakeQueue, 1, { where: 'lab_result_id = $1', params: [id] })).length === 0) return []
        return fail(tx, intakeQueue, null, [{ id, error: errorText(err) }])
      })
      for (const f of failed) counts[f.failed ? 'failed' : 'retrying'] = (counts[f.failed ? 'failed' : 'retrying'] ?? 0) + 1
    }
  }
  return counts
}

/** Due marks (or the one mark `only`), locked by `tx`, with their results, in test-date order. */
async function claimMarks(tx: Queryable, config: ExposureConfig, limit: number, only?: string): Promise<Mark[]> {
  const claimed = await claimInTx(tx, intakeQueue, limit, only ? { where: 'lab_result_id = $1', params: [only] } : {})
  if (claimed.length === 0) return []
  return tx.query<Mark>(
    `SELECT m.lab_result_id::text, m.person_id::text, r.tested_on::text, (r.created_at AT TIME ZONE $2)::date::text AS received_on, r.data
     FROM exposure_queue m LEFT JOIN lab_results r ON r.id = m.lab_result_id
     WHERE m.lab_result_id = ANY($1::bigint[]) ORDER BY r.tested_on, m.lab_result_id`, [claimed.map((c) => c.id), config.timezone])
}

/** Opens, joins or drops each mark, and deletes the marks (finish) in the same transaction. */
async function decide(tx: Queryable, config: ExposureConfig, marks: Mark[]): Promise<Record<string, number>> {
  const counts: Record<IntakeOutcome, number> = { opened: 0, joined: 0, ineligible: 0 }
  if (marks.length === 0) return {}
  await finish(tx, intakeQueue, null, marks.map((m) => ({ id: m.lab_result_id })), { delete: true })
  const people = [...new Set(marks.map((m) => m.person_id))]
  await tx.query('SELECT 1 FROM people WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE', [people])
  // The people's episodes so far; the batch's marks are decided in test-date order, in memory,
  // so a mark sees the episodes opened by earlier marks of the same batch.
  const episodes = new Map<string, Episode[]>(people.map((p) => [p, []]))
  for (const e of await tx.query(`SELECT id::text, person_id::text, episode_start::text FROM exposure_notices WHERE person_id = ANY($1::bigint[])`, [people])) {
    episodes.get(e.person_id)!.push({ id: e.id, start: e.episode_start })
  }
  const opened: { mark: Mark; symptom: string | null }[] = []
  const events: { mark: Mark; episode?: Episode; kind: IntakeOutcome; detail: object | null }[] = []
  for (const m of marks) {
    const why = ineligible(m, config)
    if (why) {
      events.push({ mark: m, kind: 'ineligible', detail: { reason: why } })
      counts.ineligible++
      continue
    }
    const own = episodes.get(m.person_id)!
    const open = own.filter((e) => Math.abs(daysBetween(e.start, m.tested_on!)) < config.episodeDays).sort((a, b) => b.start.localeCompare(a.start))[0]
    if (open) {
      events.push({ mark: m, episode: open, kind: 'joined', detail: null })
      counts.joined++
    } else {
      const episode: Episode = { start: m.tested_on! }
      own.push(episode)
      const symptom = /^\d{4}-\d{2}-\d{2}/.test(m.data!.eclrs_symptom_onset_date ?? '') ? m.data!.eclrs_symptom_onset_date.slice(0, 10) : null
      opened.push({ mark: m, symptom })
      events.push({ mark: m, episode, kind: 'opened', detail: { episode_start: m.tested_on } })
      counts.opened++
    }
  }
  if (opened.length > 0) {
    const ids = await tx.query(
      `INSERT INTO exposure_notices (person_id, episode_start, lab_result_id, test_type, test_date, symptom_date)
       SELECT person_id, test_date, lab_result_id, 'confirmed', test_date, symptom_date
       FROM unnest($1::bigint[], $2::date[], $3::bigint[], $4::date[]) AS x(person_id, test_date, lab_result_id, symptom_date)
       RETURNING id::text, person_id::text, episode_start::text`,
      [opened.map((o) => o.mark.person_id), opened.map((o) => o.mark.tested_on), opened.map((o) => o.mark.lab_result_id), opened.map((o) => o.symptom)])
    for (const r of ids) episodes.get(r.person_id)!.find((e) => e.start === r.episode_start)!.id = r.id
  }
  await tx.copyInto('exposure_events', ['notice_id', 'lab_result_id', 'kind', 'detail'],
    events.map((e) => [e.episode?.id ?? null, e.mark.lab_result_id, e.kind, e.detail]))
  return Object.fromEntries(Object.entries(counts).filter(([, n]) => n > 0))
}
