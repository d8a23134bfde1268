/** `herald queue`, `herald queue failed ENGINE`, `herald queue retry ENGINE [IDS]` on the embedded default. */
import { afterAll, describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { migrate } from '../../src/db/migrate.ts'
import { PgliteDb } from '../../src/db/pglite.ts'
import { claim, fail } from '../../src/engine/queue.ts'
import { inboxQueue } from '../../src/ingest/queue.ts'
import { tempDir } from '../helpers/files.ts'

const run = promisify(execFile)
const tmp = tempDir()
afterAll(() => tmp.cleanup())
const BIN = new URL('../../bin/herald.js', import.meta.url).pathname
const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: '', HERALD_DATA_DIR: join(tmp.dir, '.herald'), HERALD_LOG_LEVEL: 'silent' }
const herald = (...args: string[]) => run(process.execPath, [BIN, ...args], { env })

describe('herald queue', () => {
  it('shows every queue, an engine failures with their errors and events, and tries them again', { timeout: 120_000 }, async () => {
    // A file that failed for good, through the primitive, as the ingest engine records it.
    mkdirSync(join(tmp.dir, '.herald'))
    const db = await PgliteDb.open(join(tmp.dir, '.herald', 'pgdata'))
    await migrate(db)
    await db.query(`INSERT INTO inbox_files (uri, size, modified_at) VALUES ('/inbox/a.txt', 1, now())`)
    const [item] = await claim(db, inboxQueue, 'w1', 1)
    await fail(db, inboxQueue, 'w1', [{ id: item.id, error: 'the header is not ECLRS', permanent: true }])
    await db.close()

    const all = (await herald('queue')).stdout
    expect(all).toMatch(/^engine\s+waiting\s+in flight\s+retrying\s+failed\s+oldest waiting$/m)
    expect(all).toMatch(/^ingest\s+0\s+0\s+0\s+1\s*$/m)
    expect(all).toMatch(/^send\s+0\s+0\s+0\s+0\s*$/m)
    expect(all).toContain('herald queue failed ingest')

    const failed = (await herald('queue', 'failed', 'ingest')).stdout
    expect(failed).toMatch(new RegExp(`^ingest ${item.id}: failed .* after 1 attempt: the header is not ECLRS$`, 'm'))
    expect(failed).toMatch(/ failed {2}\{.*"error":"the header is not ECLRS"/)

    await expect(herald('queue', 'retry', 'ingest', 'x1')).rejects.toMatchObject({ code: 1, stderr: expect.stringContaining('not an id of ingest') })
    expect((await herald('queue', 'retry', 'ingest', item.id)).stdout).toContain(`1 failed ingest item due again: ${item.id}`)
    const after = JSON.parse((await herald('queue', '--json')).stdout)
    expect(after.find((q: { engine: string }) => q.engine === 'ingest')).toMatchObject({ waiting: 1, failed: 0 })
  })
})
