/**
 * Intake: link's marks (exposure_queue) become notices. Each mark is a new positive result of a
 * person with a phone. It counts if its test type is one that counts and its test date is within
 * the look-back window before the lab reported it (else Herald got it, in the configured time zone;
 * so a backlog taken in late still counts); it then opens the person's episode (a
 * notice), or joins the episode already open (a result within `episodeDays` of the episode's first
 * one): one code per person per episode. The people of a batch are locked first, so two workers
 * never open two episodes for one person.
 */
import type { Db, Queryable } from '../db/types.ts'
import type { ExposureConfig } from '../config.ts'

export type IntakeOutcome = 'opened' | 'joined' | 'ineligible'

interface Mark {
  lab_result_id: string
  person_id: string
  tested_on: string | null
  received_on: string
  data: Record<string, string>
}

async function event(tx: Queryable, noticeId: string | null, labResultId: string, kind: string, detail: object | null) {
  await tx.query('INSERT INTO exposure_events (notice_id, lab_result_id, kind, detail) VALUES ($1, $2, $3, $4)', [noticeId, labResultId, kind, detail])
}

const daysBetween = (a: string, b: string) => Math.round((Date.parse(b) - Date.parse(a)) / 86_400_000)

/** Why a mark does not count, or null when it does. */
function ineligible(m: Mark, config: ExposureConfig): string | null {
  if (!m.tested_on) return 'no_test_date'
  const reported = /^\d{4}-\d{2}-\d{2}/.test(m.data.eclrs_create_date ?? '') ? m.data.eclrs_create_date.slice(0, 10) : m.received_on
  if (daysBetween(m.tested_on, reported) > config.lookbackDays) return 'too_old'
  if (config.testTypes.length > 0) {
    const names = [m.data.eclrs_loinc, m.data.test_type].filter(Boolean).map((s) => s.toLowerCase())
    if (!config.testTypes.some((t) => names.includes(t.toLowerCase()))) return 'test_type'
  }
  return null
}

export async function intake(db: Db, config: ExposureConfig, limit: number): Promise<Record<string, number>> {
  return db.transaction(async (tx) => {
    const marks = await tx.query<Mark>(
      `WITH taken AS (
         DELETE FROM exposure_queue WHERE lab_result_id IN (
           SELECT lab_result_id FROM exposure_queue ORDER BY lab_result_id LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING lab_result_id, person_id)
       SELECT t.lab_result_id::text, t.person_id::text, r.tested_on::text, (r.created_at AT TIME ZONE $2)::date::text AS received_on, r.data
       FROM taken t JOIN lab_results r ON r.id = t.lab_result_id ORDER BY r.tested_on, t.lab_result_id`, [limit, config.timezone])
    const counts: Record<string, number> = {}
    if (marks.length === 0) return counts
    await tx.query('SELECT 1 FROM people WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE', [[...new Set(marks.map((m) => m.person_id))]])
    for (const m of marks) {
      const why = ineligible(m, config)
      let outcome: IntakeOutcome
      if (why) {
        await event(tx, null, m.lab_result_id, 'ineligible', { reason: why })
        outcome = 'ineligible'
      } else {
        const [open] = await tx.query(
          `SELECT id::text FROM exposure_notices WHERE person_id = $1 AND abs($2::date - episode_start) < $3 ORDER BY episode_start DESC LIMIT 1`,
          [m.person_id, m.tested_on, config.episodeDays])
        if (open) {
          await event(tx, open.id, m.lab_result_id, 'joined', null)
          outcome = 'joined'
        } else {
          const symptom = /^\d{4}-\d{2}-\d{2}/.test(m.data.eclrs_symptom_onset_date ?? '') ? m.data.eclrs_symptom_onset_date.slice(0, 10) : null
          const [n] = await tx.query(
            `INSERT INTO exposure_notices (person_id, episode_start, lab_result_id, test_type, test_date, symptom_date)
             VALUES ($1, $2, $3, 'confirmed', $2, $4) RETURNING id::text`, [m.person_id, m.tested_on, m.lab_result_id, symptom])
          await event(tx, n.id, m.lab_result_id, 'opened', { episode_start: m.tested_on })
          outcome = 'opened'
        }
      }
      counts[outcome] = (counts[outcome] ?? 0) + 1
    }
    return counts
  })
}
