/**
 * HERALD_AUTO_MIGRATE=off, as a fleet runs (docs/operations.md): no process migrates at start; one behind
 * the schema refuses to run and names what is pending; `herald migrate` applies it once and says so.
 */
import { afterAll, describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { migrations } from '../../src/db/migrate.ts'
import { createTestDb, onPostgres, type TestDb } from '../helpers/db.ts'
import { tempDir } from '../helpers/files.ts'
import { BIN } from '../helpers/kill.ts'

const run = promisify(execFile)
const tmp = tempDir()
let t: TestDb | undefined
afterAll(async () => {
  await t?.drop()
  tmp.cleanup()
})

/** A database no Herald has touched: on PostgreSQL a fresh one (unmigrated), else a new PGlite data folder. */
async function emptyDatabase(): Promise<NodeJS.ProcessEnv> {
  const env = { ...process.env, HERALD_DATA_DIR: join(tmp.dir, '.herald'), HERALD_AUTO_MIGRATE: 'off', DATABASE_URL: '' }
  if (!onPostgres) return env
  t = await createTestDb(async () => {})
  return { ...env, DATABASE_URL: t.url }
}

const herald = (env: NodeJS.ProcessEnv, ...args: string[]) =>
  run(process.execPath, [BIN, ...args], { env }).then((r) => ({ code: 0, ...r }), (e) => ({ code: e.code as number, stdout: e.stdout as string, stderr: e.stderr as string }))

describe('HERALD_AUTO_MIGRATE=off', () => {
  it('refuses to run behind the schema, and herald migrate brings it level once', { timeout: 120_000 }, async () => {
    const env = await emptyDatabase()
    const all = migrations().map((m) => m.name)

    const behind = await herald(env, 'files')
    expect(behind.code).not.toBe(0)
    expect(behind.stderr).toContain(`the database is behind this release: ${all.length} migration(s) pending (${all[0]}, `)
    expect(behind.stderr).toContain('run herald migrate first')

    const first = await herald(env, 'migrate')
    expect(first.code).toBe(0)
    expect(first.stdout.trim()).toBe(`applied ${all.join(', ')}`)
    const again = await herald(env, 'migrate')
    expect(again.stdout.trim()).toBe('nothing to apply: the schema is current')

    const level = await herald(env, 'files')
    expect(level.code).toBe(0)
  })
})
