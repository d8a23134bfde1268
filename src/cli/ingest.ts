/** `herald ingest`, `herald files`, `herald inspect`: files in, and what became of them. */
import { createReadStream } from 'node:fs'
import { isUtf8 } from 'node:buffer'
import cliProgress from 'cli-progress'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Queryable } from '../db/types.ts'
import { checksums } from '../ingest/eclrs/checksum.ts'
import { headerVersion } from '../ingest/eclrs/columns.ts'
import { readRecords } from '../ingest/eclrs/records.ts'
import { typeRow } from '../ingest/eclrs/row.ts'
import { ingestOptions, processInboxFile } from '../ingest/index.ts'
import { claim, register } from '../ingest/inbox.ts'
import { countyTotals, fileExists, fileSummary, inboxFiles, listFiles, type FileSummary } from '../ingest/report.ts'
import { storeFor } from '../storage/index.ts'
import { displayName } from '../storage/local.ts'
import { table, withDb } from './context.ts'

export type { FileSummary }

/** `herald ingest` and `herald files ID` name files that exist. */
const summaryOf = async (db: Queryable, fileId: number, name?: string) => (await fileSummary(db, fileId, name))!

export async function ingestCommand(paths: string[], opts: { json?: boolean }) {
  return withDb(async ({ config, db, log }) => {
    const summaries: (FileSummary & { outcome: string })[] = []
    const bar = !opts.json && process.stderr.isTTY
      ? new cliProgress.SingleBar({ format: '{file} [{bar}] {percentage}% | {rows} rows | {rate} rows/s', hideCursor: true }, cliProgress.Presets.shades_classic)
      : undefined
    const ids: number[] = []
    for (const path of paths) {
      const store = storeFor(path, config)
      const objects = []
      for await (const o of store.list()) objects.push(o)
      if (objects.length === 0) throw new Error(`${path}: no files there`)
      for (const id of await register(db, objects)) ids.push(id)
    }
    // Files go one at a time, in the order found (see claim): another worker may be ingesting one,
    // a file whose worker died may have to be finished first, or an earlier file may be backing off
    // after a failure. A named file that had failed is put back in line by the claim (a retry).
    const remaining = new Set(ids)
    let waited = false
    while (remaining.size > 0) {
      const item = await claim(db, config.workerId, config.claimLeaseSeconds, [...remaining], db.kind === 'pglite')
      if (!item) {
        const done = await db.query('SELECT id, uri, file_id FROM inbox_files WHERE id = ANY($1::bigint[]) AND state = $2', [[...remaining], 'done'])
        for (const d of done) {
          summaries.push({ ...(await summaryOf(db, d.file_id, d.uri)), outcome: 'already_ingested' })
          remaining.delete(d.id)
        }
        if (remaining.size > 0) {
          if (!waited) console.error('waiting: an earlier file is being ingested by another worker, or waits to be tried again (herald inbox)')
          waited = true
          await sleep(500)
        }
        continue
      }
      const store = storeFor(item.uri, config)
      const started = Date.now()
      bar?.start(item.size, 0, { file: displayName(item.uri), rows: 0, rate: 0 })
      const result = await processInboxFile(db, store, item, {
        ...ingestOptions(config),
        onProgress: (p) => bar?.update(p.bytesRead, { rows: p.rows, rate: Math.round(p.rows / ((Date.now() - started) / 1000)) }),
      }, log).finally(() => bar?.stop())
      remaining.delete(item.id)
      if ('fileId' in result) summaries.push({ ...(await summaryOf(db, result.fileId, item.uri)), outcome: result.outcome })
      else summaries.push({ ...emptySummary(item.uri), outcome: result.outcome, rejection: result.error })
    }
    if (opts.json) console.log(JSON.stringify(summaries.map(({ by_county, fileId, ...s }) => s), null, 2))
    else {
      console.log(table(summaries.map((s) => ({
        file: displayName(s.file), outcome: s.outcome, version: s.version ? `v${s.version}` : '', rows: s.rows, new: s.new,
        seen: s.seen, duplicate: s.duplicate, error: s.error,
      }))))
      for (const s of summaries) {
        if (s.rejection) console.log(`${displayName(s.file)}: ${s.status === 'rejected' ? 'rejected' : s.outcome}: ${s.rejection}`)
        for (const e of s.errors.slice(0, 20)) console.log(`${displayName(s.file)}:${e.line}: ${e.reason}`)
        if (s.errors.length > 20) console.log(`${displayName(s.file)}: ... and ${s.errors.length - 20} more errors (herald files ${s.fileId} lists them all)`)
      }
    }
    const bad = summaries.filter((s) => s.status === 'rejected' || ['failed', 'retry', 'conflict'].includes(s.outcome))
    process.exitCode = bad.length > 0 ? 1 : 0
  })
}

function emptySummary(file: string): FileSummary {
  return { file, sha256: '', version: null, status: 'unknown', rows: 0, new: 0, seen: 0, duplicate: 0, error: 0, errors: [] }
}

/** Everything found in the inbox and what became of it: waiting, being ingested, retrying, done, or failed with its error. */
export async function inboxCommand(opts: { json?: boolean; failed?: boolean; limit: string }) {
  return withDb(async ({ db }) => {
    const rows = await inboxFiles(db, { failed: opts.failed, limit: Number(opts.limit) })
    if (opts.json) return console.log(JSON.stringify(rows, null, 2))
    const when = (t: unknown) => (t ? new Date(t as string).toISOString().slice(0, 19).replace('T', ' ') : '')
    console.log(table(rows.map((r) => ({
      id: r.id, file: displayName(r.uri), state: r.state, outcome: r.outcome ?? '', attempts: r.attempts,
      'next try': r.state === 'retrying' ? when(r.retry_at) : '', 'file id': r.file_id ?? '', error: (r.last_error ?? '').slice(0, 80),
    }))))
    if (rows.some((r) => r.state === 'failed')) console.log('\nto try a failed file again: herald ingest PATH')
  })
}

export async function filesCommand(id: string | undefined, opts: { json?: boolean; limit: string }) {
  return withDb(async ({ db }) => {
    if (id !== undefined) return fileDetail(db, id, opts)
    const rows = (await listFiles(db, Number(opts.limit))).map(({ failed, ...r }) => r)
    if (opts.json) return console.log(JSON.stringify(rows, null, 2))
    console.log(table(rows.map((r) => ({
      id: r.id, file: displayName(r.name), version: r.version ? `v${r.version}` : '', status: r.status, rows: r.total_rows,
      new: r.new_rows, seen: r.seen_rows, duplicate: r.duplicate_rows, error: r.error_rows, counties: Object.keys(r.by_county).length,
      started: new Date(r.started_at).toISOString().slice(0, 19).replace('T', ' '),
      seconds: r.finished_at ? ((new Date(r.finished_at).getTime() - new Date(r.started_at).getTime()) / 1000).toFixed(1) : '',
    }))))
  })
}

/** One file: its totals, per county, and every row it could not use. */
async function fileDetail(db: Queryable, id: string, opts: { json?: boolean }) {
  if (!/^\d+$/.test(id) || !(await fileExists(db, Number(id)))) {
    throw new Error(`no file ${id}: 'herald files' lists them with their ids`)
  }
  const s = await summaryOf(db, Number(id))
  if (opts.json) return console.log(JSON.stringify(s, null, 2))
  console.log(`${s.file}\n  sha256 ${s.sha256}, ${s.version ? `v${s.version}` : 'no version'}, ${s.status}${s.rejection ? `: ${s.rejection}` : ''}`)
  console.log(`  ${s.rows} rows: ${s.new} new, ${s.seen} seen, ${s.duplicate} duplicate, ${s.error} error\n`)
  console.log(table(countyTotals(s)))
  if (s.errors.length > 0) console.log('')
  for (const e of s.errors) console.log(`line ${e.line}: ${e.reason}`)
}

/** Validates a file without ingesting it: each row's line, version and checksums, and each error. */
export async function inspectCommand(path: string, opts: { json?: boolean }) {
  const records = readRecords(createReadStream(path))
  const first = await records.next()
  const version = first.done ? undefined : headerVersion(first.value.fields.join('|'))
  const out = (o: Record<string, unknown>) => console.log(opts.json ? JSON.stringify(o) : Object.values(o).join('\t'))
  if (!version) {
    out({ line: 1, error: first.done ? 'empty file: there is no header line' : 'unknown header (not ECLRS v1, v2 or v3)' })
    process.exitCode = 1
    return
  }
  let errors = 0
  for await (const r of records) {
    const typed = r.error ? undefined : typeRow(r, version)
    const problem = r.error ?? (typed && !typed.ok ? typed.reason : undefined)
    if (problem) {
      errors++
      out({ line: r.line, version: `v${version}`, error: problem })
      continue
    }
    const [v1, v2, v3] = checksums(r, version).map((b) => b.toString('base64'))
    out({ line: r.line, version: `v${version}`, v1, v2, v3, ...(isUtf8(r.bytes) ? {} : { encoding: 'latin1' }) })
  }
  process.exitCode = errors > 0 ? 1 : 0
}
