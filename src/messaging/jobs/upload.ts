/**
 * A bulk job's upload: every row checked by the rules a single text meets (prepareText: the number,
 * the personalisation, who may be texted, the length; not a number that replied STOP), under the
 * same limits (admit.ts), then the file stored sealed (src/privacy/file-seal.ts) and the job recorded. Two ways in, one check:
 *   createJob  the API's and the CLI's: checked and started at once, or refused with its problems
 *              (nothing recorded);
 *   uploadJob  the console's, as GOV.UK Notify's check page: recorded as `uploaded` with every row's
 *              problem, then startJob (now or at a time) or cancelJob. A file with problems is not
 *              stored and cannot be started.
 * A problem names its row as a spreadsheet does (the header is row 1) and Notify's message; never a
 * value from the file.
 */
import { randomUUID } from 'node:crypto'
import type { Db } from '../../db/types.ts'
import type { Sealer } from '../../privacy/seal.ts'
import type { ObjectStore } from '../../storage/types.ts'
import { admitOne, limitError, type Refusal } from '../api/admit.ts'
import type { Directory } from '../api/directory.ts'
import { ApiError } from '../api/errors.ts'
import type { KeyType } from '../keys.ts'
import { OPTED_OUT, optedOutSet } from '../inbound/optouts.ts'
import { prepareText } from '../prepare.ts'
import type { Service, Template } from '../services.ts'
import { placeholders } from '../templates.ts'
import { CsvProblem, jobRows } from './csv.ts'

export const SEALED = '.csv.sealed'
/** The API answers with the first problems; the console lists them all, up to this many (the count says how many more). */
const API_PROBLEMS = 50
const KEPT_PROBLEMS = 10_000
/** As GOV.UK Notify: a job may be scheduled up to 4 days ahead (the console's choice of times). */
export const SCHEDULE_DAYS = 4

export interface JobInput { service: Service; template: Template; keyType: KeyType; apiKeyId: string | null; csv: Buffer; name: string; scheduledFor?: Date; createdBy: string }
/** Refused: its rows named with their problems, or over a limit (`limit`, with Notify's message in `errors`). */
export type JobCheck = { ok: true; id: string; rows: number; status: string } | { ok: false; errors: string[]; limit?: Refusal }
/** One problem of a file: its row (none: the file's own, such as a missing column) and what is wrong. */
export interface JobProblem { row: number | null; message: string }
export interface FileCheck { rows: number; badRows: number; problems: JobProblem[]; limit?: Refusal }

export interface UploadCtx { db: Db; dir: Directory; sealer: Sealer; region: string; store: ObjectStore }

export class JobStateError extends Error {}

/**
 * The check every upload goes through: one request under the rate limit (first, as Notify checks
 * its limits), every row, then all its rows against the room left today (checked, not taken: the
 * rows count when the job starts, and are checked again then, on that day).
 */
export async function checkJobFile(ctx: UploadCtx, j: Pick<JobInput, 'service' | 'template' | 'keyType' | 'csv'>, keep: number): Promise<FileCheck> {
  const request = await admitOne(ctx.db, { service: j.service, keyType: j.keyType, request: true, texts: 0 })
  if (!request.ok) return { rows: 0, badRows: 0, problems: [], limit: request.limit }
  const problems: JobProblem[] = []
  let rows = 0
  let badRows = 0
  // Numbers that replied STOP to the service: each such row is refused with the API's message.
  const optedOut = await optedOutSet(ctx.db, j.service.id)
  try {
    for await (const r of jobRows(j.csv, placeholders(j.template.body))) {
      rows++
      const prepared = await prepareText(ctx, j.service, j.keyType, j.template, r.phone, r.personalisation)
      const ready = !(prepared instanceof ApiError) && optedOut.has(prepared.hash.toString('hex')) ? new ApiError(400, 'BadRequestError', OPTED_OUT) : prepared
      if (ready instanceof ApiError) {
        badRows++
        if (problems.length < keep) problems.push({ row: r.row, message: ready.message })
      }
    }
  } catch (err) {
    const code = (err as { code?: unknown }).code
    // A parser's message may quote a field (a number): its code names the problem without it.
    const message = err instanceof CsvProblem ? err.message
      : `The file is not a CSV file${typeof code === 'string' ? ` (${code})` : ''}: save it from your spreadsheet as CSV and upload it again`
    return { rows, badRows, problems: [{ row: null, message }] }
  }
  if (rows === 0) return { rows, badRows, problems: [{ row: null, message: 'The file has no recipients' }] }
  if (badRows) return { rows, badRows, problems }
  const room = await admitOne(ctx.db, { service: j.service, keyType: j.keyType, request: false, texts: rows })
  return room.ok ? { rows, badRows, problems } : { rows, badRows, problems, limit: room.limit }
}

async function record(ctx: UploadCtx, j: JobInput, c: FileCheck, status: string, scheduledFor: Date | null): Promise<string> {
  const id = randomUUID()
  let uri: string | null = null
  if (c.problems.length === 0) {
    // Sealed at rest, bound to the job's id; the name says so when it is read.
    const sealed = ctx.sealer.files.seal(j.csv, id)
    uri = await ctx.store.put(`${id}${SEALED}`, sealed.body, sealed.size)
  }
  // A scheduled job is a queue row with a time: not due (retry_at) before it.
  await ctx.db.query(
    `INSERT INTO jobs (id, service_id, template_id, template_version, api_key_id, key_type, file_uri, original_name, rows, status, scheduled_for, retry_at,
       created_by, problems, bad_rows)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, $14)`,
    [id, j.service.id, j.template.id, j.template.version, j.apiKeyId, j.keyType, uri, j.name, c.rows, status, scheduledFor, j.createdBy,
      JSON.stringify(c.problems), c.badRows])
  return id
}

const problemText = (p: JobProblem) => (p.row === null ? p.message : `row ${p.row}: ${p.message}`)

/** An upload through the API or the CLI: checked, then stored and started (pending, or scheduled); or the problems, by row. */
export async function createJob(ctx: UploadCtx, j: JobInput): Promise<JobCheck> {
  const c = await checkJobFile(ctx, j, API_PROBLEMS)
  if (c.problems.length) {
    const errors = c.problems.map(problemText)
    const more = c.badRows - c.problems.filter((p) => p.row !== null).length
    return { ok: false, errors: more > 0 && c.problems[0].row !== null ? [...errors, `and ${more} more rows with problems`] : errors }
  }
  if (c.limit) return { ok: false, limit: c.limit, errors: [limitError(j.service, j.keyType, c.limit).message] }
  const status = j.scheduledFor && j.scheduledFor > new Date() ? 'scheduled' : 'pending'
  const id = await record(ctx, j, c, status, j.scheduledFor ?? null)
  return { ok: true, id, rows: c.rows, status }
}

/**
 * An upload through the console: recorded as `uploaded` with its problems (every row's, up to
 * KEPT_PROBLEMS), nothing sent until startJob. Over the rate limit nothing is recorded (`limit`);
 * over today's daily limit it is recorded with that as its problem, as Notify's check page says it.
 */
export async function uploadJob(ctx: UploadCtx, j: Omit<JobInput, 'scheduledFor'>): Promise<{ id: string } | { limit: 'rate' }> {
  const c = await checkJobFile(ctx, j, KEPT_PROBLEMS)
  if (c.limit === 'rate') return { limit: 'rate' }
  const problems = c.limit === 'daily' ? [{ row: null, message: limitError(j.service, j.keyType, 'daily').message }] : c.problems
  return { id: await record(ctx, j, { ...c, problems }, 'uploaded', null) }
}

/**
 * Starts an uploaded job without problems: now (pending) or at a time up to SCHEDULE_DAYS ahead
 * (scheduled), its rows checked again against today's room. Throws JobStateError with the reason.
 */
export async function startJob(db: Db, service: Service, id: string, at: Date | null): Promise<'pending' | 'scheduled'> {
  if (at && (at.getTime() <= Date.now() || at.getTime() > Date.now() + SCHEDULE_DAYS * 86_400_000)) {
    throw new JobStateError(`A job can be scheduled up to ${SCHEDULE_DAYS} days ahead, not in the past`)
  }
  const [job] = await db.query(`SELECT status, rows, key_type, file_uri, bad_rows, jsonb_array_length(problems) AS problems FROM jobs WHERE id = $1 AND service_id = $2`,
    [id, service.id])
  if (!job) throw new JobStateError('No such job')
  if (job.status !== 'uploaded') throw new JobStateError(`This job is ${job.status}: it cannot be started again`)
  if (job.problems > 0) throw new JobStateError('This file has problems: fix them and upload it again')
  if (!job.file_uri) throw new JobStateError('This upload was removed after the service’s retention period: upload the file again')
  const room = await admitOne(db, { service, keyType: job.key_type, request: false, texts: job.rows })
  if (!room.ok) throw new JobStateError(limitError(service, job.key_type, 'daily').message)
  const status = at ? 'scheduled' : 'pending'
  const [done] = await db.query(`UPDATE jobs SET status = $3, scheduled_for = $4, retry_at = $4 WHERE id = $1 AND service_id = $2 AND status = 'uploaded' RETURNING id`,
    [id, service.id, status, at])
  if (!done) throw new JobStateError('This job was started or cancelled meanwhile')
  return status
}
