/**
 * Bulk-job files in S3 are sealed as in a folder (the sealing sits above the store): after an upload, no byte of the S3 server's
 * storage holds a number or a value of the file; the job runs from it; retention deletes it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CreateBucketCommand, GetObjectCommand } from '@aws-sdk/client-s3'
import S3rver from 's3rver'
import { randomInt } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createLogger } from '../../src/log.ts'
import { Directory } from '../../src/messaging/api/directory.ts'
import { createJob, jobsEngine } from '../../src/messaging/jobs/jobs.ts'
import { runRetention } from '../../src/messaging/retention/retention.ts'
import { S3Store, s3Client } from '../../src/storage/s3.ts'
import { tempDir } from '../helpers/files.ts'
import { messagingWorld, sealer } from '../helpers/messaging.ts'

const w = messagingWorld()
const tmp = tempDir()
let server: S3rver
let store: S3Store
let client: ReturnType<typeof s3Client>

beforeAll(async () => {
  process.env.AWS_ACCESS_KEY_ID = 'S3RVER'
  process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER'
  server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: tmp.dir })
  const { port } = await server.run()
  client = s3Client({ endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1' })
  await client.send(new CreateBucketCommand({ Bucket: 'herald-jobs' }))
  store = new S3Store('s3://herald-jobs/jobs/', client)
})
afterAll(async () => {
  await server?.close()
  tmp.cleanup()
})

const everyFile = (dir: string): string[] =>
  readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? everyFile(join(dir, e.name)) : [join(dir, e.name)]))

describe('a bulk job file in S3', () => {
  it('holds no number or value of the file; the job runs from it; retention deletes it', async () => {
    const tag = randomInt(1e6, 9e6)
    const first = randomInt(1000, 8000)
    const ps = Array.from({ length: 25 }, (_, i) => ({ phone: `(212) 555-${first + i}`, e164: `+1212555${first + i}`, name: `Zyx${tag}S3Name${i}` }))
    const csv = ['phone number,name,ref', ...ps.map((p) => `${p.phone},${p.name},R${tag}`)].join('\n')
    const template = (await new Directory(w.t.db, 0).template(w.service.id, w.template.id))!
    const ctx = { db: w.t.db, dir: new Directory(w.t.db, 0), sealer, region: 'US', store }
    const job = await createJob(ctx, { service: w.service, template, keyType: 'normal', apiKeyId: null, csv: Buffer.from(csv), name: 'people.csv', createdBy: 'test' })
    if (!job.ok) throw new Error(job.errors.join())
    const [{ file_uri: uri }] = await w.t.db.query('SELECT file_uri FROM jobs WHERE id = $1', [job.id])
    expect(uri).toBe(`s3://herald-jobs/jobs/${job.id}.csv.sealed`)

    // The object is there, whole (its length given with the stream), and not a byte of the server's storage is plaintext.
    const got = await client.send(new GetObjectCommand({ Bucket: 'herald-jobs', Key: `jobs/${job.id}.csv.sealed` }))
    expect(Number(got.ContentLength)).toBe(sealer.files.seal(Buffer.from(csv), job.id).size)
    ;(got.Body as { destroy?: () => void }).destroy?.()
    const stored = everyFile(tmp.dir).map((f) => readFileSync(f).toString('latin1')).join('\n')
    expect(stored.length).toBeGreaterThan(csv.length)
    for (const p of ps) for (const form of [p.phone, p.e164, p.e164.slice(1), p.e164.slice(2), p.name]) expect(stored).not.toContain(form)
    expect(stored).not.toContain(`R${tag}`)

    expect(await jobsEngine({ sealer, region: 'US', store }, createLogger('silent')).step(w.t.db, new AbortController().signal)).toEqual({ rows: 25 })
    const [r] = await runRetention(w.t.db, { store, log: createLogger('silent'), asOf: new Date(Date.now() + 10 * 86400_000) })
    expect(r.files).toBe(1)
    const left: string[] = []
    for await (const o of store.list()) left.push(o.uri)
    expect(left).toEqual([])
  })
})
