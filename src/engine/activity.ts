/**
 * The pipeline's work by day, for the console's home page: files and rows in (ingest), people
 * created (link), cases posted (case sync out), codes issued (exposure). Days are the database
 * session's calendar days; each count is one grouped scan of its table since the first day.
 */
import type { Queryable } from '../db/types.ts'

export const ACTIVITY = ['files', 'rows', 'people', 'casesPosted', 'codesIssued'] as const
export type ActivityKind = (typeof ACTIVITY)[number]
export type DayActivity = { day: string } & Record<ActivityKind, number>

const SOURCES: Record<ActivityKind, string> = {
  files: `SELECT started_at::date::text AS day, count(*) AS n FROM files WHERE started_at >= $1::date GROUP BY 1`,
  rows: `SELECT started_at::date::text AS day, sum(total_rows) AS n FROM files WHERE started_at >= $1::date GROUP BY 1`,
  people: `SELECT created_at::date::text AS day, count(*) AS n FROM people WHERE created_at >= $1::date GROUP BY 1`,
  // A case posted twice in a day is one case posted that day.
  casesPosted: `SELECT at::date::text AS day, count(DISTINCT index_case_id) AS n FROM case_sync_events WHERE kind = 'posted' AND at >= $1::date GROUP BY 1`,
  codesIssued: `SELECT at::date::text AS day, count(*) AS n FROM exposure_events WHERE kind = 'issued' AND at >= $1::date GROUP BY 1`,
}

/** The last `days` days, oldest first, today last; a day without work has zeros. */
export async function dailyActivity(db: Queryable, days = 14): Promise<DayActivity[]> {
  const dates = await db.query<{ day: string }>(
    `SELECT (current_date - g)::text AS day FROM generate_series($1::int - 1, 0, -1) AS g`, [days])
  const out = new Map(dates.map(({ day }) => [day, { day, files: 0, rows: 0, people: 0, casesPosted: 0, codesIssued: 0 } as DayActivity]))
  for (const kind of ACTIVITY) {
    for (const r of await db.query<{ day: string; n: string | number }>(SOURCES[kind], [dates[0].day])) {
      const d = out.get(r.day)
      if (d) d[kind] = Number(r.n)
    }
  }
  return [...out.values()]
}
