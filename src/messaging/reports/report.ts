/**
 * Reports: every notification of a bulk job, or of a service over local days, as CSV, streamed.
 * Pages are read in key order from both tables (notifications, then whatever retention moved to
 * history), the next page's query running while this one is written; each phone number is
 * decrypted from its own row as the row is written and forgotten after it. Nothing holds more than
 * two pages, whatever the size: there is no cache of anyone's numbers. A row past retention has no
 * ciphertext any more, so its number is blank.
 */
import { stringify } from 'csv-stringify/sync'
import type { Db } from '../../db/types.ts'
import type { Sealer } from '../../privacy/seal.ts'

const PAGE = 5000

export const REPORT_HEADER = ['Phone number', 'Template', 'Status', 'Provider', 'Created at', 'Sent at', 'Completed at', 'Job', 'Row', 'Reference']

export type ReportScope =
  | { serviceId: string; jobId: string }
  | { serviceId: string; from: string; to: string } // local days, inclusive (YYYY-MM-DD)

const COLUMNS = (ct: string) => `id, template_id, status, provider, created_at, job_id, job_row, reference, ${ct} AS recipient_ct,
  to_char(created_at AT TIME ZONE $tz, 'YYYY-MM-DD HH24:MI:SS') AS created, to_char(sent_at AT TIME ZONE $tz, 'YYYY-MM-DD HH24:MI:SS') AS sent,
  to_char(completed_at AT TIME ZONE $tz, 'YYYY-MM-DD HH24:MI:SS') AS completed`

/** One page after the key `after`, from both tables, in key order: a row is in exactly one of them in a snapshot. */
function pageSql(scope: ReportScope): string {
  const both = (where: string, order: string) => ['notifications', 'notification_history'].map((table) =>
    `(SELECT ${COLUMNS(table === 'notifications' ? 'recipient_ct' : 'NULL::bytea')} FROM ${table} WHERE ${where} ORDER BY ${order} LIMIT $limit)`)
    .join(' UNION ALL ') + ` ORDER BY ${order} LIMIT $limit`
  return 'jobId' in scope
    ? both('job_id = $1 AND job_row > $2', 'job_row')
    : both(`service_id = $1 AND created_at >= $3 AND created_at < $4 AND key_type <> 'test' AND (created_at, id) > ($2::timestamptz, $5::uuid)`, 'created_at, id')
}

/** The CSV, header first, a page of rows at a time. Throws before the first chunk if the job or service is not there. */
export async function* reportCsv(db: Db, sealer: Sealer, scope: ReportScope, pageSize = PAGE): AsyncGenerator<string> {
  const [s] = await db.query(`SELECT timezone FROM services WHERE id = $1`, [scope.serviceId])
  if (!s) throw new ReportNotFound(`no service ${scope.serviceId}`)
  let params: unknown[]
  if ('jobId' in scope) {
    const [job] = await db.query(`SELECT 1 FROM jobs WHERE id = $1 AND service_id = $2`, [scope.jobId, scope.serviceId])
    if (!job) throw new ReportNotFound(`no job ${scope.jobId} in this service`)
    params = [scope.jobId, 0]
  } else {
    const [b] = await db.query(`SELECT ($1::date)::timestamp AT TIME ZONE $3 AS start, ($2::date + 1)::timestamp AT TIME ZONE $3 AS end`,
      [scope.from, scope.to, s.timezone])
    params = [scope.serviceId, new Date(0), b.start, b.end, '00000000-0000-0000-0000-000000000000']
  }
  // $tz and $limit come after the scope's own parameters.
  const n = params.length
  const sql = pageSql(scope).replaceAll('$tz', () => `$${n + 1}`).replaceAll('$limit', () => `$${n + 2}`)
  const fetch = (p: unknown[]) => db.query(sql, [...p, s.timezone, pageSize])
  const templates = new Map<string, string>() // a service has few templates: their names are read once

  yield stringify([REPORT_HEADER])
  let page = await fetch(params)
  while (page.length > 0) {
    const last = page[page.length - 1]
    const next = page.length === pageSize
      ? fetch('jobId' in scope ? [scope.jobId, last.job_row] : [scope.serviceId, last.created_at, params[2], params[3], last.id])
      : undefined
    next?.catch(() => {}) // awaited below; an error then is the one that counts
    const unnamed = [...new Set(page.map((r) => r.template_id as string))].filter((id) => !templates.has(id))
    if (unnamed.length) {
      for (const t of await db.query(`SELECT id, name FROM templates WHERE id = ANY($1::uuid[])`, [unnamed])) templates.set(t.id, t.name)
    }
    const rows = page.map((r) => [r.recipient_ct ? sealer.open(Buffer.from(r.recipient_ct)) : '', templates.get(r.template_id) ?? r.template_id, r.status,
      r.provider ?? '', r.created, r.sent ?? '', r.completed ?? '', r.job_id ?? '', r.job_row ?? '', r.reference ?? ''])
    yield stringify(rows)
    page = next ? await next : []
  }
}

export class ReportNotFound extends Error {}
