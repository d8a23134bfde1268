import { afterEach, describe, expect, it } from 'vitest'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { DataFolderBusy, openEmbedded } from '../../src/db/embedded.ts'
import { migrate } from '../../src/db/migrate.ts'
import type { Db } from '../../src/db/types.ts'
import { tempDir } from '../helpers/files.ts'

const open: Db[] = []
const tmp = tempDir()
afterEach(async () => {
  for (const db of open.splice(0).reverse()) await db.close()
})

describe('the embedded data folder', () => {
  it('is opened by one process at a time', { timeout: 180_000 }, async () => {
    const dir = join(tmp.dir, 'a')
    const db = await openEmbedded(dir)
    open.push(db)
    expect(db.kind).toBe('pglite')
    await expect(openEmbedded(dir)).rejects.toBeInstanceOf(DataFolderBusy)
  })

  it('is shared through the running instance when it serves it, COPY and transactions included', async () => {
    const dir = join(tmp.dir, 'b')
    const host = await openEmbedded(dir, { serve: true })
    open.push(host)
    await migrate(host)
    const client = await openEmbedded(dir)
    open.push(client)
    expect(client.kind).toBe('pglite-server')
    await client.exec('CREATE TABLE t (a int, b bytea, c text[], d jsonb)')
    await client.copyInto('t', ['a', 'b', 'c', 'd'], [[1, Buffer.from([1, 2]), ['x', 'y|z'], { k: 1 }], [2, null, [], null]])
    await expect(client.transaction(async (tx) => {
      await tx.query('INSERT INTO t (a) VALUES (3)')
      throw new Error('roll back')
    })).rejects.toThrow('roll back')
    const rows = await host.query("SELECT a, encode(b, 'hex') AS b, c, d FROM t ORDER BY a")
    expect(rows).toEqual([{ a: 1, b: '0102', c: ['x', 'y|z'], d: { k: 1 } }, { a: 2, b: null, c: [], d: null }])
  })

  it('takes over a lock left by a process that died', async () => {
    const dir = join(tmp.dir, 'c')
    const db = await openEmbedded(dir)
    await db.close()
    writeFileSync(join(dir, 'herald.lock'), JSON.stringify({ pid: 2 ** 22 + 12345, nonce: 'dead' }))
    const again = await openEmbedded(dir)
    open.push(again)
    expect((await again.query('SELECT 1 AS one'))[0].one).toBe(1)
  })

  it('takes over a lock naming its own pid that it does not hold (a restarted container\'s PID 1)', async () => {
    const dir = join(tmp.dir, 'd')
    const db = await openEmbedded(dir)
    await db.close()
    writeFileSync(join(dir, 'herald.lock'), JSON.stringify({ pid: process.pid, nonce: 'from-an-earlier-process', port: 1 }))
    const again = await openEmbedded(dir)
    open.push(again)
    expect(again.kind).toBe('pglite')
    expect(JSON.parse(readFileSync(join(dir, 'herald.lock'), 'utf8'))).toMatchObject({ pid: process.pid, nonce: expect.not.stringMatching('from-an-earlier') })
  })

  it('leaves an unreadable lock alone while it is fresh', async () => {
    const dir = join(tmp.dir, 'e')
    mkdirSync(dir, { recursive: true })
    writeFileSync(join(dir, 'herald.lock'), '')
    await expect(openEmbedded(dir)).rejects.toThrow(/cannot be read/)
  })
})
