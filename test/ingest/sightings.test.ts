import { describe, expect, it } from 'vitest'
import { loadConfig } from '../../src/config.ts'
import type { Db } from '../../src/db/types.ts'
import { ingestFile } from '../../src/ingest/file.ts'
import { claim, register } from '../../src/ingest/inbox.ts'
import { ingestEngine, processInboxFile } from '../../src/ingest/index.ts'
import { fileSummary } from '../../src/ingest/report.ts'
import { ChecksumSet, foldSightings } from '../../src/ingest/sightings.ts'
import { createLogger } from '../../src/log.ts'
import { storeFor } from '../../src/storage/index.ts'
import { TEST_SECRET_KEY } from '../helpers/db.ts'
import { exportText, row, tempDir, writeExport } from '../helpers/files.ts'
import { counts, crashingAt, ingestPath, options, testConfig } from '../helpers/ingest.ts'
import { freshDbEachTest } from '../helpers/link.ts'

let db: Db
let dir: string
freshDbEachTest((d, x) => {
  db = d
  dir = x
})

const one = async (name: string, rows: string[][], batchRows = 2) =>
  (await ingestPath(db, writeExport(dir, name, exportText(3, rows)), { batchRows }))[0]
const keyOf = async (r: string[]) =>
  (await db.query(`SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex') AS ck`, [r.join('|')]))[0].ck as string
/** Every key's last sighting, as lab_row_keys holds it, or as lab_row_last_seen gives it before the fold. */
const lastSeen = (from: 'lab_row_keys' | 'lab_row_last_seen') =>
  db.query(`SELECT encode(checksum, 'hex') AS ck, last_file_id, last_seen_at FROM ${from} ORDER BY checksum`)
const pending = async () => (await db.query('SELECT count(*)::int AS n FROM ingest_sightings'))[0].n

describe('sightings', () => {
  it('are recorded instead of an UPDATE per row, and folded after the file into the same answers', async () => {
    const rows = Array.from({ length: 6 }, () => row(3))
    const a = await one('a.txt', rows)
    const fresh = row(3)
    // Batches of two: r0 and r2 repeat in later batches, as duplicates, whatever the fold.
    const b = await one('b.txt', [rows[0], rows[1], rows[2], rows[0], fresh, rows[2]])
    expect(counts(b)).toEqual({ rows: 6, new: 1, seen: 3, duplicate: 2, error: 0 })
    const ck = await keyOf(rows[0])

    // Not folded yet (ingestFile alone, as a process that died after the last commit): lab_row_keys
    // still names file a, the sighting waits, and lab_row_last_seen already gives file b.
    expect(await pending()).toBe(3)
    const stored = new Map((await lastSeen('lab_row_keys')).map((k) => [k.ck, k.last_file_id]))
    expect(stored.get(ck)).toBe(a.fileId)
    const before = await lastSeen('lab_row_last_seen')
    const byKey = new Map(before.map((k) => [k.ck, k]))
    expect(byKey.get(ck)!.last_file_id).toBe(b.fileId)
    expect(byKey.get(await keyOf(rows[1]))!.last_file_id).toBe(b.fileId)
    expect(byKey.get(await keyOf(rows[5]))!.last_file_id).toBe(a.fileId)
    expect(byKey.get(await keyOf(fresh))!.last_file_id).toBe(b.fileId)
    // The time is that of the batch that sighted the row (the first of its two appearances).
    const [s] = await db.query(`SELECT seen_at FROM ingest_sightings WHERE checksum = decode($1, 'hex')`, [ck])
    expect(byKey.get(ck)!.last_seen_at).toEqual(s.seen_at)
    const [was] = await db.query(`SELECT last_seen_at FROM lab_row_keys WHERE checksum = decode($1, 'hex')`, [ck])
    expect(new Date(s.seen_at).getTime()).toBeGreaterThan(new Date(was.last_seen_at).getTime())

    const summary = await fileSummary(db, b.fileId)
    expect(await foldSightings(db)).toEqual({ files: 1, keys: 3 })
    expect(await lastSeen('lab_row_keys')).toEqual(before)
    expect(await lastSeen('lab_row_last_seen')).toEqual(before)
    expect(await pending()).toBe(0)
    expect(await foldSightings(db)).toEqual({ files: 0, keys: 0 })
    expect(await fileSummary(db, b.fileId)).toEqual(summary)

    // Seen again by a third file: the later sighting wins, folded or not.
    const c = await one('c.txt', [rows[1], rows[0], row(3)])
    expect(counts(c)).toMatchObject({ new: 1, seen: 2, duplicate: 0 })
    const view = await lastSeen('lab_row_last_seen')
    expect(view.find((k) => k.ck === ck)!.last_file_id).toBe(c.fileId)
    await foldSightings(db)
    expect(await lastSeen('lab_row_keys')).toEqual(view)
  })

  it('of a file that died after its last commit are folded by the next file, or by the engine when idle', async () => {
    const rows = Array.from({ length: 4 }, () => row(3))
    await one('a.txt', rows)
    await one('b.txt', [...rows, row(3)]) // no fold: the process "died" after the file's last commit
    expect(await pending()).toBe(4)
    const expected = await lastSeen('lab_row_last_seen')

    // The engine with nothing to claim folds what was left.
    const config = loadConfig({ HERALD_SECRET_KEY: TEST_SECRET_KEY, HERALD_INBOX: dir, HERALD_POLL_INTERVAL_MS: '3600000' })
    const engine = ingestEngine(config, createLogger('silent'), tempDir().dir)
    expect(await engine.step(db, new AbortController().signal)).toEqual({})
    expect(await pending()).toBe(0)
    expect(await lastSeen('lab_row_keys')).toEqual(expected)

    // Left again, then a next file through processInboxFile (the engine's and `herald ingest`'s way).
    await one('c.txt', [...rows, row(3), row(3)])
    const path = writeExport(dir, 'd.txt', exportText(3, [rows[0], row(3)]))
    const store = storeFor(path, testConfig)
    const objects = []
    for await (const o of store.list()) objects.push(o)
    const [id] = await register(db, objects)
    const item = (await claim(db, 'w', 60, [id]))!
    const expectedAfter = (await lastSeen('lab_row_last_seen')).length
    const r = await processInboxFile(db, store, item, options({ workerId: 'w' }), createLogger('silent'))
    expect(r.outcome).toBe('ingested')
    expect(await pending()).toBe(0)
    const folded = new Map((await lastSeen('lab_row_keys')).map((k) => [k.ck, k.last_file_id]))
    expect(folded.size).toBe(expectedAfter + 1)
    expect(folded.get(await keyOf(rows[0]))).toBe(4)
    expect(folded.get(await keyOf(rows[1]))).toBe(3)
  })

  it('of the batches committed before a crash count: a repeat after the resume is a duplicate', async () => {
    const rows = Array.from({ length: 30 }, () => row(3))
    await one('a.txt', rows, 10)
    // The connection dies during the third batch: rows 0–19 are committed, sighted and not folded.
    const { store, item, dying } = await crashingAt(db, writeExport(dir, 'b.txt', exportText(3, [...rows, rows[5], rows[25]])), 3)
    await expect(ingestFile(dying, store, item, options({ workerId: 'doomed', leaseSeconds: 1, batchRows: 10 }))).rejects.toThrow('connection lost')
    expect(await pending()).toBe(20)
    await new Promise((r) => setTimeout(r, 1100))
    const again = (await claim(db, 'rescuer', 60))!
    const r = await ingestFile(db, store, again, options({ workerId: 'rescuer', batchRows: 10 }))
    // rows[5] was sighted by the run that died, rows[25] by this one: both repeats are duplicates.
    expect(counts(r)).toEqual({ rows: 32, new: 0, seen: 30, duplicate: 2, error: 0 })
    expect(await foldSightings(db)).toEqual({ files: 1, keys: 30 })
  })

  it('keep the later sighting when an earlier file is folded after a later one (a file retried after others went ahead)', async () => {
    const rows = Array.from({ length: 3 }, () => row(3))
    await one('a.txt', rows)
    const b = await one('b.txt', [...rows, row(3)])
    const c = await one('c.txt', [rows[0], row(3)])
    // b as if it were still waiting for its retry: only c's sightings are folded first.
    await db.query(`UPDATE files SET status = 'ingesting' WHERE id = $1`, [b.fileId])
    expect(await foldSightings(db)).toEqual({ files: 1, keys: 1 })
    await db.query(`UPDATE files SET status = 'ingested' WHERE id = $1`, [b.fileId])
    expect(await foldSightings(db)).toEqual({ files: 1, keys: 2 })
    const folded = new Map((await lastSeen('lab_row_keys')).map((k) => [k.ck, k.last_file_id]))
    expect(folded.get(await keyOf(rows[0]))).toBe(c.fileId)
    expect(folded.get(await keyOf(rows[1]))).toBe(b.fileId)
  })

  it('through another version\'s form name the earlier row once, at the first batch that matched it', async () => {
    const v1 = row(1, { PIDLASTNAME: 'TWIN' })
    await ingestPath(db, writeExport(dir, 'a.txt', exportText(1, [v1])))
    const up = (extra: string) => [...v1.slice(0, 44), extra, ...Array(19).fill(''), v1[44]]
    const [b] = await ingestPath(db, writeExport(dir, 'b.txt', exportText(3, [up('EMPLOYER A'), up('EMPLOYER B'), up('EMPLOYER C')])), { batchRows: 1 })
    expect(counts(b)).toEqual({ rows: 3, new: 0, seen: 3, duplicate: 0, error: 0 })
    const sightings = await db.query(`SELECT seen_at FROM ingest_sightings WHERE checksum = sha256(convert_to($1, 'UTF8'))`, [v1.join('|')])
    expect(sightings).toHaveLength(1)
    const [first] = await db.query('SELECT min(last_seen_at) AS t FROM lab_row_keys WHERE last_file_id = $1', [b.fileId])
    expect(sightings[0].seen_at).toEqual(first.t) // the first batch's time, as the UPDATE kept it
  })
})

describe('ChecksumSet', () => {
  it('holds exactly the checksums added, through its growth', async () => {
    const { createHash } = await import('node:crypto')
    const sum = (i: number) => createHash('sha256').update(String(i)).digest()
    const set = new ChecksumSet()
    for (let i = 0; i < 20000; i += 2) set.add(sum(i))
    set.addHex(sum(0).toString('hex'))
    expect(set.size).toBe(10000)
    for (let i = 0; i < 20000; i++) expect(set.has(sum(i))).toBe(i % 2 === 0)
    expect(set.hasHex(sum(4).toString('hex'))).toBe(true)
  })
})
