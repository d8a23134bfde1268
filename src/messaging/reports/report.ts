/**
 * Reports: every notification of a bulk job, or of a service over local days, as CSV, streamed.
 * Pages are read in key order from both tables (notifications, then whatever retention moved to
 * history), the next page's query running while this one is written; each phone number is
 * decrypted from its own row as the row is written and forgotten after it. Nothing holds more than
 * two pages, whatever the size: there is no cache of anyone's numbers. A row past retention has no
 * ciphertext any more, so its number is blank. Every cell is written by the shared CSV writer
 * (src/util/csv.ts): one a spreadsheet would run as a formula gets an apostrophe in front, as GOV.UK
 * Notify writes it.
 */
import type { Db } from '../../db/types.ts'
import type { Sealer } from '../../privacy/seal.ts'
import { csvCell, csvLine, sqlCsvCell } from '../../util/csv.ts'

const PAGE = 5000

export const REPORT_HEADER = ['Phone number', 'Template', 'Status', 'Failure reason', 'Provider', 'Created at', 'Sent at', 'Completed at', 'Job', 'Row', 'Reference']

export type ReportScope =
  | { serviceId: string; jobId: string }
  | { serviceId: string; from: string; to: string } // local days, inclusive (YYYY-MM-DD)

// Times, ids and row numbers are written as they are: none can start with a formula character.
const local = (column: string) => `coalesce(to_char(n.${column} AT TIME ZONE $tz, 'YYYY-MM-DD HH24:MI:SS'), '')`

/**
 * Everything of a row but its number comes from PostgreSQL as the finished rest of its CSV line, so
 * this process parses three columns a row, not twelve: the report's speed is the decrypting. The
 * text cells go through the shared writer's SQL form (the template's name and the reference are the
 * caller's; status and provider are Herald's, and cost one regular expression to be sure of).
 */
const COLUMNS = (ct: string) => `${ct} AS recipient_ct, n.job_row, n.created_at AS at, n.created_at::text AS after_at, n.id AS after_id,
  concat_ws(',', ${sqlCsvCell('coalesce(t.name, n.template_id::text)')}, ${sqlCsvCell('n.status')}, ${sqlCsvCell("coalesce(n.failure_reason, '')")},
    ${sqlCsvCell("coalesce(n.provider, '')")},
    ${local('created_at')}, ${local('sent_at')}, ${local('completed_at')}, coalesce(n.job_id::text, ''), coalesce(n.job_row::text, ''),
    ${sqlCsvCell("coalesce(n.reference, '')")}) AS rest`

/** One page after the previous page's last key, from both tables, in key order: a row is in exactly one of them in a snapshot. */
function pageSql(scope: ReportScope): string {
  const both = (where: string, order: string) => ['notifications', 'notification_history'].map((table) =>
    `(SELECT ${COLUMNS(table === 'notifications' ? 'n.recipient_ct' : 'NULL::bytea')} FROM ${table} n LEFT JOIN templates t ON t.id = n.template_id
      WHERE ${where} ORDER BY ${order} LIMIT $limit)`)
    .join(' UNION ALL ')
  // Only the key of the scope's order goes back with the row: each column more is parsed a million times.
  const page = (where: string, order: string, merged: string, key: string) =>
    `SELECT recipient_ct, ${key}, rest FROM (${both(where, order)}) u ORDER BY ${merged} LIMIT $limit`
  return 'jobId' in scope
    ? page('n.job_id = $1 AND n.job_row > $2', 'n.job_row', 'job_row', 'job_row')
    : page(`n.service_id = $1 AND n.created_at >= $3 AND n.created_at < $4 AND n.key_type <> 'test' AND (n.created_at, n.id) > ($2::timestamptz, $5::uuid)`,
      'n.created_at, n.id', 'at, after_id', 'after_at, after_id')
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
    params = [scope.serviceId, '-infinity', b.start, b.end, '00000000-0000-0000-0000-000000000000']
  }
  // $tz and $limit come after the scope's own parameters.
  const n = params.length
  const sql = pageSql(scope).replaceAll('$tz', () => `$${n + 1}`).replaceAll('$limit', () => `$${n + 2}`)
  const fetch = (p: unknown[]) => db.query(sql, [...p, s.timezone, pageSize])

  yield csvLine(REPORT_HEADER)
  let page = await fetch(params)
  while (page.length > 0) {
    const last = page[page.length - 1]
    const next = page.length === pageSize
      ? fetch('jobId' in scope ? [scope.jobId, last.job_row] : [scope.serviceId, last.after_at, params[2], params[3], last.after_id])
      : undefined
    next?.catch(() => {}) // awaited below; an error then is the one that counts
    let chunk = ''
    for (const r of page) {
      const ct = r.recipient_ct // a Buffer from node-postgres, a Uint8Array from PGlite
      chunk += `${ct ? csvCell(sealer.open(Buffer.isBuffer(ct) ? ct : Buffer.from(ct))) : ''},${r.rest}\n`
    }
    yield chunk
    page = next ? await next : []
  }
}

export class ReportNotFound extends Error {}
