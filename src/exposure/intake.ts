/**
 * Intake: link's marks (exposure_queue) become notices. Each mark is a new positive result of a
 * person with a phone. It counts if its test type is one that counts and its test date is within
 * the look-back window before the lab reported it (else Herald got it, in the configured time zone;
 * so a backlog taken in late still counts); it then opens the person's episode (a
 * notice), or joins the episode already open (a result within `episodeDays` of the episode's first
 * one): one code per person per episode. The people of a batch are locked first, so two workers
 * never open two episodes for one person.
 */
import type { Db } from '../db/types.ts'
import type { ExposureConfig } from '../config.ts'

export type IntakeOutcome = 'opened' | 'joined' | 'ineligible'

interface Mark {
  lab_result_id: string
  person_id: string
  tested_on: string | null
  received_on: string
  data: Record<string, string>
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

interface Episode { id?: string; start: string }

export async function intake(db: Db, config: ExposureConfig, limit: number): Promise<Record<string, number>> {
  return db.transaction(async (tx) => {
    const marks = await tx.query<Mark>(
      `WITH taken AS (
         DELETE FROM exposure_queue WHERE lab_result_id IN (
           SELECT lab_result_id FROM exposure_queue ORDER BY lab_result_id LIMIT $1 FOR UPDATE SKIP LOCKED)
         RETURNING lab_result_id, person_id)
       SELECT t.lab_result_id::text, t.person_id::text, r.tested_on::text, (r.created_at AT TIME ZONE $2)::date::text AS received_on, r.data
       FROM taken t JOIN lab_results r ON r.id = t.lab_result_id ORDER BY r.tested_on, t.lab_result_id`, [limit, config.timezone])
    const counts: Record<IntakeOutcome, number> = { opened: 0, joined: 0, ineligible: 0 }
    if (marks.length === 0) return {}
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
        const symptom = /^\d{4}-\d{2}-\d{2}/.test(m.data.eclrs_symptom_onset_date ?? '') ? m.data.eclrs_symptom_onset_date.slice(0, 10) : null
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
  })
}
