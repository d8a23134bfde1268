/**
 * Reports: every notification of a bulk job, or of a service over local days, as CSV, streamed.
 * Pages are read in key order from both tables (notifications, then whatever retention moved to
 * history), the next pages' queries running while one is written; a page's phone numbers are
 * decrypted together as it is written and forgotten after it. Nothing holds more than three pages,
 * whatever the size: there is no cache of anyone's numbers. A row past retention has no ciphertext
 * any more, so its number is blank. Every cell is written by the shared CSV writer
 * (src/util/csv.ts): one a spreadsheet would run as a formula gets an apostrophe in front, as GOV.UK
 * Notify writes it.
 */
import type { Db, Row } from '../../db/types.ts'
import type { Sealer } from '../../privacy/seal.ts'
import { csvCell, csvLine, sqlCsvCell } from '../../util/csv.ts'

const PAGE = 10_000

export const REPORT_HEADER = ['Phone number', 'Template', 'Status', 'Failure reason', 'Provider', 'Created at', 'Sent at', 'Completed at', 'Job', 'Row', 'Reference']

export type ReportScope =
  | { serviceId: string; jobId: string }
  | { serviceId: string; from: string; to: string } // local days, inclusive (YYYY-MM-DD)

// Times, ids and row numbers are written as they are: none can start with a formula character.
const local = (column: string) => `coalesce(to_char(n.${column} AT TIME ZONE $tz, 'YYYY-MM-DD HH24:MI:SS'), '')`

/**
 * Everything of a row but its number comes from PostgreSQL as the finished rest of its CSV line, so
 * this process parses three columns a row, not twelve. The text cells go through the shared writer's
 * SQL form (the template's name and the reference are the caller's; status and provider are
 * Herald's, and cost one regular expression to be sure of).
 */
const COLUMNS = (ct: string, keys: string) => `${ct} AS sealed, ${keys},
  concat_ws(',', ${sqlCsvCell('coalesce(t.name, n.template_id::text)')}, ${sqlCsvCell('n.status')}, ${sqlCsvCell("coalesce(n.failure_reason, '')")},
    ${sqlCsvCell("coalesce(n.provider, '')")},
    ${local('created_at')}, ${local('sent_at')}, ${local('completed_at')}, coalesce(n.job_id::text, ''), coalesce(n.job_row::text, ''),
    ${sqlCsvCell("coalesce(n.reference, '')")}) AS rest`

/**
 * The rows of both tables that `where` picks, each branch in `order` (a row is in exactly one of them
 * in a snapshot), with the keys of the order. The sealed number comes as hex text, so a page's make
 * one Buffer, not one a row.
 */
const both = (where: string, keys: string, order: string, limit: string) => ['notifications', 'notification_history'].map((table) =>
  `(SELECT ${COLUMNS(table === 'notifications' ? "encode(n.recipient_ct, 'hex')" : 'NULL', keys)} FROM ${table} n LEFT JOIN templates t ON t.id = n.template_id
    WHERE ${where} ORDER BY ${order}${limit})`)
  .join(' UNION ALL ')

/**
 * A job's page is a range of its row numbers ($2 < job_row <= $3), so the pages do not wait on each
 * other: two are queried at once, on two connections, while a third is written (PostgreSQL's work
 * per row, the cells and the times, is as much as this process's). Only the key of the order goes
 * back with the row: each column more is parsed a million times.
 */
const JOB_PAGE = `SELECT sealed, rest FROM (${both('n.job_id = $1 AND n.job_row > $2 AND n.job_row <= $3', 'n.job_row', 'n.job_row', '')}) u
  ORDER BY job_row`.replaceAll('$tz', '$4')
const JOB_END = `SELECT greatest((SELECT max(job_row) FROM notifications WHERE job_id = $1),
  (SELECT max(job_row) FROM notification_history WHERE job_id = $1)) AS last`
/** A service's page: the next $6 rows after the previous page's last key, in time order. */
const DAY_PAGE = `SELECT sealed, after_at, after_id, rest FROM (${both(
  `n.service_id = $1 AND n.created_at >= $3 AND n.created_at < $4 AND n.key_type <> 'test' AND (n.created_at, n.id) > ($2::timestamptz, $5::uuid)`,
  'n.created_at AS at, n.created_at::text AS after_at, n.id AS after_id', 'n.created_at, n.id', ' LIMIT $6')}) u ORDER BY at, after_id LIMIT $6`.replaceAll('$tz', '$7')
const AHEAD = 2

/** The CSV, header first, a page of rows at a time. Throws before the first chunk if the job or service is not there. */
export async function* reportCsv(db: Db, sealer: Sealer, scope: ReportScope, pageSize = PAGE): AsyncGenerator<string> {
  const [s] = await db.query(`SELECT timezone FROM services WHERE id = $1`, [scope.serviceId])
  if (!s) throw new ReportNotFound(`no service ${scope.serviceId}`)
  let pages: AsyncGenerator<Row[]>
  if ('jobId' in scope) {
    const [job] = await db.query(`SELECT 1 FROM jobs WHERE id = $1 AND service_id = $2`, [scope.jobId, scope.serviceId])
    if (!job) throw new ReportNotFound(`no job ${scope.jobId} in this service`)
    pages = jobPages(db, scope.jobId, s.timezone, pageSize)
  } else {
    const [b] = await db.query(`SELECT ($1::date)::timestamp AT TIME ZONE $3 AS start, ($2::date + 1)::timestamp AT TIME ZONE $3 AS end`,
      [scope.from, scope.to, s.timezone])
    pages = dayPages(db, [scope.serviceId, b.start, b.end], s.timezone, pageSize)
  }
  yield csvLine(REPORT_HEADER)
  for await (const rows of pages) yield writeRows(sealer, rows)
}

/** A job's pages in row order, AHEAD of them queried while one is written; its last row is read again at the end, for rows added since. */
async function* jobPages(db: Db, jobId: string, tz: string, size: number): AsyncGenerator<Row[]> {
  const lastRow = async () => Number((await db.query(JOB_END, [jobId]))[0].last ?? 0)
  const ahead: Promise<Row[]>[] = []
  let end = await lastRow()
  let from = 0
  for (;;) {
    while (ahead.length < AHEAD && from < end) {
      const page = db.query(JOB_PAGE, [jobId, from, from + size, tz])
      page.catch(() => {}) // awaited below, in order; an error then is the one that counts
      ahead.push(page)
      from += size
    }
    if (ahead.length === 0) {
      const more = await lastRow()
      if (more <= end) return
      end = more
      continue
    }
    const rows = await ahead.shift()!
    if (rows.length > 0) yield rows // a range past rows that were never made is empty
  }
}

/** A service's pages in time order, each after the last key of the one before; the next is queried while one is written. */
async function* dayPages(db: Db, [serviceId, start, end]: unknown[], tz: string, size: number): AsyncGenerator<Row[]> {
  const fetch = (afterAt: unknown, afterId: unknown) => db.query(DAY_PAGE, [serviceId, afterAt, start, end, afterId, size, tz])
  let rows = await fetch('-infinity', '00000000-0000-0000-0000-000000000000')
  while (rows.length > 0) {
    const last = rows[rows.length - 1]
    const next = rows.length === size ? fetch(last.after_at, last.after_id) : undefined
    next?.catch(() => {}) // awaited below; an error then is the one that counts
    yield rows
    rows = next ? await next : []
  }
}

/** A page's CSV lines, each number opened as it is written and forgotten with the page. */
function writeRows(sealer: Sealer, rows: Row[]): string {
  let chunk = ''
  for (const r of rows) chunk += `${r.sealed === null ? '' : csvCell(sealer.open(Buffer.from(r.sealed, 'hex')))},${r.rest}\n`
  return chunk
}

export class ReportNotFound extends Error {}
