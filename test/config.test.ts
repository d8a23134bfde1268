/** The master secret: required with DATABASE_URL (hosts sharing a database share it); a key file only on the embedded default. */
import { execFile } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { ConfigError, loadConfig } from '../src/config.ts'
import { secretKey } from '../src/privacy/keys.ts'
import { tempDir } from './helpers/files.ts'

const tmp = tempDir()
afterAll(() => tmp.cleanup())
const KEY = 'x'.repeat(40)
const PG = 'postgres://postgres@127.0.0.1:1/herald'

describe('HERALD_SECRET_KEY', () => {
  it('is required when DATABASE_URL is set, and the error names it', () => {
    expect(() => loadConfig({ DATABASE_URL: PG })).toThrow(ConfigError)
    expect(() => loadConfig({ DATABASE_URL: PG })).toThrow(/^HERALD_SECRET_KEY: is required when DATABASE_URL is set/)
    expect(() => loadConfig({ DATABASE_URL: PG, HERALD_SECRET_KEY: '  ' })).toThrow(/HERALD_SECRET_KEY/)
    expect(loadConfig({ DATABASE_URL: PG, HERALD_SECRET_KEY: KEY }).exposure.secretKey).toBe(KEY)
    expect(() => loadConfig({ DATABASE_URL: PG, HERALD_SECRET_KEY: 'short' })).toThrow(/at least 32 characters/)
  })

  it('is kept in the data folder on the embedded default, made once', () => {
    const dataDir = join(tmp.dir, 'embedded')
    const config = loadConfig({ HERALD_DATA_DIR: dataDir, DATABASE_URL: '' })
    const key = secretKey(config)
    expect(key).toMatch(/^[0-9a-f]{64}$/)
    expect(readFileSync(join(dataDir, 'secret.key'), 'utf8')).toBe(key)
    expect(secretKey(config)).toBe(key)
    expect(secretKey(loadConfig({ HERALD_DATA_DIR: dataDir, HERALD_SECRET_KEY: KEY }))).toBe(KEY)
  })

  it('is never made per host for a PostgreSQL database, however the config was built', () => {
    const dataDir = join(tmp.dir, 'shared')
    const config = { ...loadConfig({ HERALD_DATA_DIR: dataDir }), databaseUrl: PG }
    expect(() => secretKey(config)).toThrow(/HERALD_SECRET_KEY: is required when DATABASE_URL is set/)
    expect(existsSync(join(dataDir, 'secret.key'))).toBe(false)
  })

  it('stops herald before it touches the database: a configuration error, exit 2', async () => {
    const env = { ...process.env, DATABASE_URL: PG, HERALD_DATA_DIR: join(tmp.dir, 'cli'), HERALD_SECRET_KEY: '' }
    const run = promisify(execFile)(process.execPath, [new URL('../bin/herald.js', import.meta.url).pathname, 'migrate'], { env })
    const err = await run.then(() => undefined, (e: { code: number; stderr: string }) => e)
    expect(err?.code).toBe(2)
    expect(err?.stderr).toMatch(/^herald: configuration error: HERALD_SECRET_KEY: is required when DATABASE_URL is set/)
    expect(existsSync(join(tmp.dir, 'cli', 'secret.key'))).toBe(false)
  })
})
