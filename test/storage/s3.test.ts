import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3'
import S3rver from 's3rver'
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { S3Store, s3Client } from '../../src/storage/s3.ts'
import { LocalStore } from '../../src/storage/local.ts'
import { ObjectChanged } from '../../src/storage/types.ts'
import { createTestDb, type TestDb } from '../helpers/db.ts'
import { FIXTURES, tempDir } from '../helpers/files.ts'
import { counts, ingestPath } from '../helpers/ingest.ts'

let server: S3rver
let endpoint: string
let t: TestDb
const tmp = tempDir()

beforeAll(async () => {
  process.env.AWS_ACCESS_KEY_ID = 'S3RVER'
  process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER'
  server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: tmp.dir })
  const { port } = await server.run()
  endpoint = `http://127.0.0.1:${port}`
  t = await createTestDb()
})
afterAll(async () => {
  await t.drop()
  await server.close()
  tmp.cleanup()
})

describe('S3 inbox', () => {
  it('lists a prefix and ingests each export from a local S3-compatible server', async () => {
    const client = s3Client({ endpoint, region: 'us-east-1' })
    await client.send(new CreateBucketCommand({ Bucket: 'exports' }))
    for (const name of ['new_records.txt', 'v3_new_records.txt', 'duplicate_rows.txt']) {
      await client.send(new PutObjectCommand({ Bucket: 'exports', Key: `eclrs/2026/${name}`, Body: readFileSync(FIXTURES + name) }))
    }
    await client.send(new PutObjectCommand({ Bucket: 'exports', Key: 'other/ignored.txt', Body: 'x' }))
    const results = await ingestPath(t.db, 's3://exports/eclrs/', {}, { s3: { endpoint, region: 'us-east-1' } })
    expect(results.map((r) => [r.file, r.outcome])).toEqual([
      ['s3://exports/eclrs/2026/duplicate_rows.txt', 'ingested'],
      ['s3://exports/eclrs/2026/new_records.txt', 'ingested'],
      ['s3://exports/eclrs/2026/v3_new_records.txt', 'ingested'],
    ])
    expect(counts(results[0])).toEqual({ rows: 3, new: 2, seen: 0, duplicate: 1, error: 0 })
    expect(counts(results[2])).toMatchObject({ rows: 3, new: 0, seen: 3 })
  })
})

describe('reading one object twice', () => {
  it('fails when the S3 object was overwritten between the two reads', async () => {
    const client = s3Client({ endpoint, region: 'us-east-1' })
    await client.send(new CreateBucketCommand({ Bucket: 'versions' }))
    await client.send(new PutObjectCommand({ Bucket: 'versions', Key: 'x.txt', Body: 'first' }))
    const store = new S3Store('s3://versions/', client)
    const { body, version } = await store.open('s3://versions/x.txt')
    body.destroy()
    expect((await store.open('s3://versions/x.txt', version)).version).toBe(version)
    await client.send(new PutObjectCommand({ Bucket: 'versions', Key: 'x.txt', Body: 'second' }))
    await expect(store.open('s3://versions/x.txt', version)).rejects.toBeInstanceOf(ObjectChanged)
  })

  it('fails when a local file was rewritten between the two reads', async () => {
    const path = join(tmp.dir, 'local.txt')
    writeFileSync(path, 'first')
    const store = new LocalStore(path)
    const { body, version } = await store.open(path)
    body.destroy()
    writeFileSync(path, 'second, longer')
    await expect(store.open(path, version)).rejects.toBeInstanceOf(ObjectChanged)
  })

  it('reads a local file as it was when opened, even while it grows', async () => {
    const path = join(tmp.dir, 'growing.txt')
    writeFileSync(path, 'rows so far\n')
    const { body } = await new LocalStore(path).open(path)
    appendFileSync(path, 'a row written later\n')
    let text = ''
    for await (const chunk of body) text += chunk
    expect(text).toBe('rows so far\n')
  })
})
