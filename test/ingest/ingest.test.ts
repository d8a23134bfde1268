import { describe, expect, it } from 'vitest'
import { readFileSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'
import type { Db } from '../../src/db/types.ts'
import { ingestFile } from '../../src/ingest/file.ts'
import { convertRow } from '../../src/ingest/generate.ts'
import { claim, fail, finish, IngestConflict, register, release } from '../../src/ingest/inbox.ts'
import { processInboxFile } from '../../src/ingest/index.ts'
import { inboxQueue } from '../../src/ingest/queue.ts'
import { foldSightings } from '../../src/ingest/sightings.ts'
import { createLogger } from '../../src/log.ts'
import { storeFor, type StoredObject } from '../../src/storage/index.ts'
import { copyFixture, exportText, row, writeExport } from '../helpers/files.ts'
import { counts, crashingAt, ingestPath, options, testConfig } from '../helpers/ingest.ts'
import { freshDbEachTest } from '../helpers/link.ts'

let db: Db
let dir: string
freshDbEachTest((d, x) => {
  db = d
  dir = x
})

const one = async (path: string, extra = {}) => (await ingestPath(db, path, extra))[0]

describe('ingest', () => {
  it('stores each new row once with typed fields, and recognises a later export of the same rows as seen', async () => {
    const first = await one(copyFixture('new_records.txt', dir))
    expect(counts(first)).toEqual({ rows: 3, new: 3, seen: 0, duplicate: 0, error: 0 })
    const [r] = await db.query(`SELECT last_name, date_of_birth::text AS dob, county_fips, phone, accession_number,
      collected_at, result_created_at, result_positive, raw, sha256(convert_to(raw, 'UTF8')) = checksum AS raw_hashes_to_checksum
      FROM lab_rows WHERE line = 2`)
    expect(r).toMatchObject({ last_name: 'LASTNAME', dob: '1947-03-01', county_fips: 1111, phone: '(555) 123-4567',
      accession_number: '102695116', result_positive: 'POSITIVE', raw_hashes_to_checksum: true })
    expect(r.raw.split('|')).toHaveLength(45)
    expect(new Date(r.result_created_at).toISOString()).toBe('2020-03-20T10:03:36.589Z')

    // v2 and v3 exports of the same people: seen, in the version of the earlier rows.
    expect(counts(await one(copyFixture('v2_new_records.txt', dir)))).toEqual({ rows: 3, new: 0, seen: 3, duplicate: 0, error: 0 })
    expect(counts(await one(copyFixture('v3_new_records.txt', dir)))).toEqual({ rows: 3, new: 0, seen: 3, duplicate: 0, error: 0 })
    // Stored once (rows that only add columns are kept apart, seen_before); the v2 and v3 rows leave
    // their own checksums as keys, all last sighted by file 3: so says lab_row_last_seen while the
    // sightings wait for their fold, and lab_row_keys once they are folded.
    expect((await db.query('SELECT count(*) AS n FROM lab_rows WHERE NOT seen_before'))[0].n).toBe(3)
    const pending = await db.query('SELECT last_file_id FROM lab_row_last_seen')
    expect(pending.map((k) => k.last_file_id)).toEqual(Array(9).fill(3))
    await foldSightings(db)
    const keys = await db.query('SELECT last_file_id FROM lab_row_keys')
    expect(keys.map((k) => k.last_file_id)).toEqual(Array(9).fill(3))
  })

  it('counts a row repeated inside one file as a duplicate', async () => {
    const r = await one(copyFixture('duplicate_rows.txt', dir))
    expect(counts(r)).toEqual({ rows: 3, new: 2, seen: 0, duplicate: 1, error: 0 })
  })

  it('keeps a seen row that adds columns its earlier version lacked (the added_info fixtures), for link to use', async () => {
    await one(copyFixture('new_records.txt', dir))
    const v2 = await one(copyFixture('v2_new_records_added_info.txt', dir))
    expect(counts(v2)).toEqual({ rows: 3, new: 0, seen: 3, duplicate: 0, error: 0 })
    const kept = await db.query(`SELECT line, version, seen_before, last_name FROM lab_rows WHERE file_id = $1`, [v2.fileId])
    // Line 2 adds "cool employer", line 3 the employer and school columns; line 4 adds nothing.
    expect(kept).toEqual([
      { line: 2, version: 2, seen_before: true, last_name: 'LASTNAME' },
      { line: 3, version: 2, seen_before: true, last_name: 'SMITH' },
    ])
    // v3: line 2 adds symptoms over the v1 row; line 3 only repeats the v2 columns already kept;
    // line 4 adds v3 columns over the v2 form.
    const v3 = await one(copyFixture('v3_new_records_added_info.txt', dir))
    expect(counts(v3)).toMatchObject({ rows: 3, new: 0, seen: 3 })
    expect((await db.query(`SELECT line FROM lab_rows WHERE file_id = $1 AND seen_before ORDER BY line`, [v3.fileId])).map((r) => r.line)).toEqual([2, 4])
    // The same rows again (another file: CRLF endings) add nothing: they are known in their own version.
    const again = await one(writeExport(dir, 'again.txt', readFileSync(join(dir, 'v3_new_records_added_info.txt'), 'utf8').replaceAll('\n', '\r\n')))
    expect(counts(again)).toMatchObject({ rows: 3, new: 0, seen: 3 })
    expect((await db.query(`SELECT count(*) AS n FROM lab_rows WHERE file_id = $1`, [again.fileId]))[0].n).toBe(0)
  })

  it('recognises a row through a row that was itself only seen, in that row\'s version', async () => {
    const v3 = row(3, { PIDLASTNAME: 'CHAIN' })
    await one(writeExport(dir, 'a.txt', exportText(3, [v3])))
    const v1 = convertRow(v3, 1)
    expect(counts(await one(writeExport(dir, 'b.txt', exportText(1, [v1]))))).toMatchObject({ new: 0, seen: 1 })
    // A v2 row that equals that v1 row padded, plus an employer: its v1 form is the v1 row's checksum.
    const v2 = [...v1.slice(0, 44), 'ACME EMPLOYER', ...Array(10).fill(''), v1[44]]
    expect(counts(await one(writeExport(dir, 'c.txt', exportText(2, [v2]))))).toMatchObject({ new: 0, seen: 1 })
  })

  it('counts as seen, not duplicate, two different rows of one file matching the same earlier row', async () => {
    const v1 = row(1, { PIDLASTNAME: 'TWIN' })
    await one(writeExport(dir, 'a.txt', exportText(1, [v1])))
    const up = (extra: string) => [...v1.slice(0, 44), extra, ...Array(19).fill(''), v1[44]]
    expect(counts(await one(writeExport(dir, 'b.txt', exportText(3, [up('EMPLOYER A'), up('EMPLOYER B'), up('EMPLOYER A')])))))
      .toEqual({ rows: 3, new: 0, seen: 2, duplicate: 1, error: 0 })
  })

  it('turns values PostgreSQL would refuse into error rows instead of failing the file', async () => {
    const year0 = row(1, { PIDDATEOFBIRTH: '01MAR0000:00:00:00.000000' })
    const nul = row(1, { PIDLASTNAME: 'DO\0E' })
    const r = await one(writeExport(dir, 'odd.txt', exportText(1, [year0, nul, row(1)])))
    expect(r.outcome).toBe('ingested')
    expect(counts(r)).toEqual({ rows: 3, new: 1, seen: 0, duplicate: 0, error: 2 })
    expect(r.errors.map((e) => e.reason)).toEqual([
      'PIDDATEOFBIRTH is not a date like 01MAR1947:00:00:00.000000', 'holds a NUL byte, which text cannot store'])
  })

  it('counts duplicates across batch boundaries, and totals per county', async () => {
    const rows = [row(3, { PIDCOUNTYCODE: '61' }), row(3, { PIDCOUNTYCODE: '47' })]
    const path = writeExport(dir, 'x.txt', exportText(3, [rows[0], rows[1], rows[0], rows[1], rows[0]]))
    const r = await one(path, { batchRows: 2 })
    expect(counts(r)).toEqual({ rows: 5, new: 2, seen: 0, duplicate: 3, error: 0 })
    const [f] = await db.query('SELECT by_county FROM files')
    expect(f.by_county).toEqual({ 61: { new: 1, seen: 0, duplicate: 2, error: 0 }, 47: { new: 1, seen: 0, duplicate: 1, error: 0 } })
  })

  it('keeps rows it cannot use as errors with line and reason, and still takes the rest', async () => {
    const good = row(1)
    const short = row(1).slice(0, 40)
    const noCounty = row(1, { PIDCOUNTYCODE: '' })
    const badDate = row(1, { OBRCOLLECTIONDATE: '32MAR2020:00:00:00.000000' })
    const path = writeExport(dir, 'bad.txt', exportText(1, [good, short, noCounty, badDate]))
    const r = await one(path)
    expect(counts(r)).toEqual({ rows: 4, new: 1, seen: 0, duplicate: 0, error: 3 })
    expect(r.errors).toEqual([
      { line: 3, reason: 'has 40 fields, the v1 header has 45' },
      { line: 4, reason: 'no county: PIDCOUNTYCODE is empty' },
      { line: 5, reason: 'OBRCOLLECTIONDATE is not a date like 20MAR2020:06:03:36.589000' },
    ])
    const stored = await db.query('SELECT line, raw FROM ingest_errors ORDER BY line')
    expect(stored[0].raw).toBe(short.join('|'))
  })

  it('takes quoted fields holding | and doubled quotes, CRLF endings and a byte-order mark', async () => {
    const quoted = row(2, { PIDADDRESSLINE1: '12 "B" ST|REAR' })
    const line = quoted.map((f) => (f.includes('|') || f.includes('"') ? `"${f.replaceAll('"', '""')}"` : f))
    const text = exportText(2, [line, row(2)], '\r\n')
    const r = await one(writeExport(dir, 'q.txt', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(text)])))
    expect(counts(r)).toEqual({ rows: 2, new: 2, seen: 0, duplicate: 0, error: 0 })
    const [stored] = await db.query('SELECT address1, last_name FROM lab_rows ORDER BY line LIMIT 1')
    expect(stored.address1).toBe('12 "B" ST|REAR')
  })

  it('stores a row that is not UTF-8 as Latin-1 text', async () => {
    const text = Buffer.from(exportText(1, [row(1, { PIDLASTNAME: 'MUNOZ' })]).replace('MUNOZ', 'MU\u00d1OZ'), 'latin1')
    const r = await one(writeExport(dir, 'latin1.txt', text))
    expect(r.totals.new).toBe(1)
    expect((await db.query('SELECT last_name FROM lab_rows'))[0].last_name).toBe('MUÑOZ')
  })

  it('counts a truncated last line as an error and keeps the rows before it', async () => {
    const text = exportText(1, [row(1), row(1)])
    const r = await one(writeExport(dir, 'cut.txt', text.slice(0, text.length - 120)))
    expect(counts(r)).toMatchObject({ rows: 2, new: 1, error: 1 })
    expect(r.errors[0].line).toBe(3)
  })

  it('rejects an empty file and an unknown header with a recorded reason, and accepts a header-only file', async () => {
    const empty = await one(writeExport(dir, 'empty.txt', ''))
    expect(empty).toMatchObject({ outcome: 'rejected', rejection: 'empty file: there is no header line' })
    const unknown = await one(writeExport(dir, 'unknown.txt', 'PIDLASTNAME|SOMETHING|ELSE\na|b|c\n'))
    expect(unknown.outcome).toBe('rejected')
    expect(unknown.rejection).toMatch(/^line 1: unknown header.*column 2 should be PIDMIDDLENAME/)
    const headerOnly = await one(writeExport(dir, 'header.txt', exportText(3, [])))
    expect(headerOnly).toMatchObject({ outcome: 'ingested', version: 3, rows: 0 })
    const files = await db.query('SELECT status, error FROM files ORDER BY id')
    expect(files.map((f) => f.status)).toEqual(['rejected', 'rejected', 'ingested'])
  })

  it('never ingests the same content twice, under another name or path', async () => {
    copyFixture('new_records.txt', dir, 'a.txt')
    copyFixture('new_records.txt', dir, 'b.txt')
    const [a, b] = await ingestPath(db, dir)
    expect(a.outcome).toBe('ingested')
    expect(b).toMatchObject({ outcome: 'already_ingested', fileId: a.fileId })
    expect((await db.query('SELECT count(*) AS n FROM lab_rows'))[0].n).toBe(3)
    // Registering the folder again finds the same inbox entries, already done: nothing is claimed twice.
    const store = storeFor(dir, testConfig)
    const objects = []
    for await (const o of store.list()) objects.push(o)
    await register(db, objects)
    expect(await claim(db, 'again', 60)).toBeUndefined()
  })

  it('after a crash mid-file, a rerun counts every row exactly once', async () => {
    const rows = Array.from({ length: 50 }, () => row(3))
    // The connection dies during the fourth batch: three batches (30 rows) are committed.
    const { store, item, dying } = await crashingAt(db, writeExport(dir, 'big.txt', exportText(3, [...rows, rows[3], rows[40]])), 4)
    await expect(ingestFile(dying, store, item, options({ workerId: 'doomed', leaseSeconds: 1, batchRows: 10 }))).rejects.toThrow('connection lost')
    expect((await db.query('SELECT total_rows FROM files'))[0].total_rows).toBe(30)

    // A later export arrives meanwhile. Nobody renews the dead worker's lease: until it runs out no
    // file is taken, then the crashed file is finished before the later one starts.
    const later = writeExport(dir, 'later.txt', exportText(3, [rows[3], row(3)]))
    const laterObjects = []
    for await (const o of storeFor(later, testConfig).list()) laterObjects.push(o)
    await register(db, laterObjects)
    expect(await claim(db, 'rescuer', 60)).toBeUndefined()
    await new Promise((r) => setTimeout(r, 1100))
    const again = (await claim(db, 'rescuer', 60))!
    expect(again.id).toBe(item.id)
    const r = await ingestFile(db, store, again, options({ workerId: 'rescuer', batchRows: 10 }))
    expect(counts(r)).toEqual({ rows: 52, new: 50, seen: 0, duplicate: 2, error: 0 })
    expect((await db.query('SELECT count(*) AS n FROM lab_rows'))[0].n).toBe(50)
    const next = (await claim(db, 'rescuer', 60))!
    expect(counts(await ingestFile(db, storeFor(later, testConfig), next, options({ workerId: 'rescuer' })))).toEqual({ rows: 2, new: 1, seen: 1, duplicate: 0, error: 0 })
  })

  it('stops between batches when asked, gives the file back, and the next run resumes where it stopped', async () => {
    const path = writeExport(dir, 'stop.txt', exportText(1, Array.from({ length: 25 }, () => row(1))))
    const store = storeFor(path, testConfig)
    const objects = []
    for await (const o of store.list()) objects.push(o)
    const [id] = await register(db, objects)
    const item = (await claim(db, 'w1', 60))!
    const controller = new AbortController()
    const opts = { ...options({ workerId: 'w1', batchRows: 10 }), signal: controller.signal, onProgress: () => controller.abort() }
    const first = await processInboxFile(db, store, item, opts, createLogger('silent'))
    expect(first.outcome).toBe('released')
    expect((first as { rows: number }).rows).toBeLessThan(25)
    // Released, not left to its lease: another worker takes it at once, and no attempt was spent.
    expect((await db.query('SELECT state, claimed_by, claimed_until, attempts FROM inbox_files WHERE id = $1', [id]))[0])
      .toEqual({ state: 'pending', claimed_by: null, claimed_until: null, attempts: 0 })
    const again = (await claim(db, 'w2', 60))!
    expect(again).toMatchObject({ id, attempts: 0 })
    const second = await ingestFile(db, store, again, options({ workerId: 'w2', batchRows: 10 }))
    expect(counts(second)).toEqual({ rows: 25, new: 25, seen: 0, duplicate: 0, error: 0 })
  })
})

const registerFiles = async (...names: string[]) => {
  for (const name of names) writeExport(dir, name, exportText(1, [row(1)]))
  const objects: StoredObject[] = []
  for await (const o of storeFor(dir, testConfig).list()) objects.push(o)
  return register(db, objects)
}
const inboxRow = async (id: number) => (await db.query('SELECT * FROM inbox_files WHERE id = $1', [id]))[0]

describe('inbox failures', () => {
  it('back off in SQL, leave a file failed after its last attempt, and a person naming it takes it again', async () => {
    const [id] = await registerFiles('flaky.txt')
    const max = inboxQueue.retry.maxAttempts
    for (let attempt = 1; attempt <= max; attempt++) {
      await db.query(`UPDATE inbox_files SET retry_at = NULL WHERE id = $1`, [id]) // past the backoff
      const item = (await claim(db, 'w', 60))!
      expect(item.attempts).toBe(attempt - 1)
      expect(await fail(db, item, 'w', 'storage unreachable')).toBe(attempt < max ? 'retry' : 'failed')
      if (attempt === 1) {
        const [{ s }] = await db.query('SELECT extract(epoch FROM retry_at - now())::float8 AS s FROM inbox_files WHERE id = $1', [id])
        expect(s).toBeGreaterThan(8.9) // 10 s ± 10%
        expect(s).toBeLessThan(11.1)
      }
    }
    expect(await inboxRow(id)).toMatchObject({ state: 'failed', last_error: 'storage unreachable', attempts: max, retry_at: null, claimed_by: null })
    expect((await inboxRow(id)).failed_at).not.toBeNull()
    expect(await claim(db, 'w', 60)).toBeUndefined() // engines leave it alone
    const again = (await claim(db, 'person', 60, [id]))! // herald ingest PATH: a retry, then the claim
    expect(again.attempts).toBe(0)
    const kinds = await db.query(`SELECT kind FROM queue_events WHERE engine = 'ingest' AND item = $1 ORDER BY id`, [String(id)])
    expect(kinds.map((k) => k.kind)).toEqual([...Array(max - 1).fill('retrying'), 'failed', 'retry_requested'])
    expect(counts(await ingestFile(db, storeFor(join(dir, 'flaky.txt'), testConfig), again, options({ workerId: 'person' })))).toMatchObject({ rows: 1, new: 1 })
    expect(await inboxRow(id)).toMatchObject({ state: 'done', outcome: 'ingested', attempts: 0, last_error: null, failed_at: null })
  })

  it('leave a file failed when its worker died during every attempt, and let the next file go', async () => {
    const [id, next] = await registerFiles('killer.txt', 'next.txt')
    // Four workers died holding it; the lease of the fifth has just run out.
    await db.query(`UPDATE inbox_files SET claimed_by = 'dead', attempts = 4, claimed_until = now() - interval '1 second' WHERE id = $1`, [id])
    expect((await claim(db, 'w', 60))!.id).toBe(next)
    const r = await inboxRow(id)
    expect(r).toMatchObject({ state: 'failed', attempts: 5, claimed_by: null })
    expect(r.last_error).toMatch(/stopped during each of 5 attempts/)
  })

  it('resume first a file whose worker died, counting the attempt', async () => {
    const [a1] = await registerFiles('d1.txt', 'd2.txt')
    expect((await claim(db, 'dies', 60))!.id).toBe(a1)
    expect(await claim(db, 'w', 60)).toBeUndefined() // a live lease: later files wait
    await db.query(`UPDATE inbox_files SET claimed_until = now() - interval '1 second' WHERE id = $1`, [a1])
    expect(await claim(db, 'w', 60)).toMatchObject({ id: a1, attempts: 1 })
    expect((await inboxRow(a1)).last_error).toMatch(/lease ran out/)
  })

  it('take a live claim as dead when the database is this process\'s alone (embedded)', async () => {
    const [a1] = await registerFiles('e1.txt', 'e2.txt')
    await claim(db, 'before-restart', 60)
    expect(await claim(db, 'w', 60, undefined, false)).toBeUndefined()
    expect(await claim(db, 'w', 60, undefined, true)).toMatchObject({ id: a1, attempts: 1 })
    expect((await inboxRow(a1)).claimed_by).toBe('w')
  })

  it('never let a worker that lost its claim overwrite the state the new holder set', async () => {
    const [id] = await registerFiles('lost.txt')
    const mine = (await claim(db, 'slow', 60))!
    await db.query(`UPDATE inbox_files SET claimed_by = 'other'`) // the lease ran out and another took it
    expect(await fail(db, mine, 'slow', 'too late')).toBe('conflict')
    await expect(finish(db, id, 'slow', 1, 'rejected')).rejects.toBeInstanceOf(IngestConflict)
    await release(db, [id], 'slow')
    expect(await inboxRow(id)).toMatchObject({ state: 'pending', claimed_by: 'other', last_error: null, outcome: null })
  })

  it('hold later files back while an earlier one backs off after a failure', async () => {
    const [a1, a2] = await registerFiles('a1.txt', 'a2.txt')
    expect(await fail(db, (await claim(db, 'w', 60))!, 'w', 'read error')).toBe('retry')
    expect(await claim(db, 'w', 60)).toBeUndefined() // a2 waits for a1's backoff
    await db.query('UPDATE inbox_files SET retry_at = NULL WHERE id = $1', [a1])
    expect((await claim(db, 'w', 60))!.id).toBe(a1)
    // A person naming a2 does not jump the queue either: a1 is claimed by a live worker.
    expect(await claim(db, 'person', 60, [a2])).toBeUndefined()
  })

  it('through the engine: a failure is recorded with its backoff, and the file is not lost', async () => {
    const [id] = await registerFiles('gone.txt')
    const item = (await claim(db, 'w', 60))!
    const gone = join(dir, 'gone.txt')
    unlinkSync(gone) // removed from the inbox after it was found: reading it fails
    const r = await processInboxFile(db, storeFor(gone, testConfig), item, options({ workerId: 'w' }), createLogger('silent'))
    expect(r.outcome).toBe('retry')
    const after = await inboxRow(id)
    expect(after).toMatchObject({ state: 'pending', attempts: 1, claimed_by: null })
    expect(after.last_error).toBeTruthy()
    expect(after.retry_at).not.toBeNull()
  })
})
