/**
 * Settings with rules: the master secret (required with DATABASE_URL, hosts sharing a database share it;
 * a key file only on the embedded default), and case sync's settings for a real project space.
 */
import { execFile } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, describe, expect, it } from 'vitest'
import { ConfigError, loadConfig, SECRETS } from '../src/config.ts'
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

describe('secrets from files (NAME_FILE, as Docker secrets and systemd credentials arrive)', () => {
  const file = (name: string, text: string) => {
    const path = join(tmp.dir, name)
    writeFileSync(path, text)
    return path
  }

  it('reads the secret from the file, its final line break dropped, and checks it as the variable', () => {
    const config = loadConfig({ HERALD_SECRET_KEY_FILE: file('key', `${KEY}\n`), DATABASE_URL_FILE: file('db', `${PG}\r\n`),
      HERALD_COMMCARE_URL: 'http://127.0.0.1:1', HERALD_COMMCARE_USER: 'u', HERALD_COMMCARE_ROOT_DOMAIN: 'd',
      HERALD_COMMCARE_API_KEY_FILE: file('commcare', 'cc-key') })
    expect(config.exposure.secretKey).toBe(KEY)
    expect(config.databaseUrl).toBe(PG)
    expect(config.commcare.apiKey).toBe('cc-key')
    expect(() => loadConfig({ HERALD_SECRET_KEY_FILE: file('short', 'short\n') })).toThrow(/^HERALD_SECRET_KEY: must be at least 32 characters/)
    // Required with DATABASE_URL: from a file as from the variable.
    expect(() => loadConfig({ DATABASE_URL_FILE: file('db2', PG) })).toThrow(/^HERALD_SECRET_KEY: is required when DATABASE_URL is set/)
  })

  it('refuses a missing or empty file, or both ways at once, naming the variable and never the secret', () => {
    const missing = join(tmp.dir, 'no-such-file')
    expect(() => loadConfig({ HERALD_SECRET_KEY_FILE: missing })).toThrow(`HERALD_SECRET_KEY_FILE: cannot read ${missing} (ENOENT)`)
    expect(() => loadConfig({ HERALD_SECRET_KEY_FILE: file('empty', '\n') })).toThrow(/^HERALD_SECRET_KEY_FILE: .* is empty$/)
    const both = () => loadConfig({ HERALD_SECRET_KEY: KEY, HERALD_SECRET_KEY_FILE: file('key2', KEY) })
    expect(both).toThrow('HERALD_SECRET_KEY_FILE: is set and so is HERALD_SECRET_KEY: set one of them')
    expect(() => loadConfig({ DATABASE_URL: PG, DATABASE_URL_FILE: file('db3', PG) })).toThrow(/^DATABASE_URL_FILE: is set and so is DATABASE_URL/)
  })

  it('covers every credential Herald holds', () => {
    for (const name of ['DATABASE_URL', 'HERALD_SECRET_KEY', 'HERALD_TWILIO_AUTH_TOKEN', 'HERALD_VONAGE_API_SECRET', 'HERALD_ENX_API_KEY',
      'HERALD_COMMCARE_API_KEY', 'HERALD_COMMCARE_FORWARDER_PASSWORD', 'HERALD_EMAIL_SMTP_URL']) expect(SECRETS).toContain(name)
    const config = loadConfig({ HERALD_SMS_PROVIDERS: 'vonage', HERALD_VONAGE_API_KEY: 'k', HERALD_VONAGE_API_SECRET_FILE: file('vonage', 'v-secret\n'),
      HERALD_EMAIL_PROVIDER: 'smtp', HERALD_EMAIL_FROM: 'a@example.org', HERALD_EMAIL_SMTP_URL_FILE: file('smtp', 'smtp://u:p@127.0.0.1:1\n') })
    expect(config.messaging.vonageApiSecret).toBe('v-secret')
    expect(config.email.smtpUrl).toBe('smtp://u:p@127.0.0.1:1')
  })

  it('stops herald with exit 2 when the file cannot be read', async () => {
    const env = { ...process.env, HERALD_SECRET_KEY: '', HERALD_SECRET_KEY_FILE: join(tmp.dir, 'absent.key'), HERALD_DATA_DIR: join(tmp.dir, 'cli-file') }
    const run = promisify(execFile)(process.execPath, [new URL('../bin/herald.js', import.meta.url).pathname, 'migrate'], { env })
    const err = await run.then(() => undefined, (e: { code: number; stderr: string }) => e)
    expect(err?.code).toBe(2)
    expect(err?.stderr).toMatch(/^herald: configuration error: HERALD_SECRET_KEY_FILE: cannot read .*absent\.key \(ENOENT\)/)
  })
})

describe('HERALD_COMMCARE_* for a real project space', () => {
  const REAL = { HERALD_COMMCARE_URL: 'https://www.commcarehq.org', HERALD_COMMCARE_USER: 'herald@ny.example', HERALD_COMMCARE_API_KEY: 'k',
    HERALD_COMMCARE_ROOT_DOMAIN: 'ny-covid' }

  it('HERALD_COMMCARE_LAB_RESULT_INDEX: child by default, extension by choice, anything else refused by name', () => {
    expect(loadConfig({}).commcare.labResultIndex).toBe('child')
    expect(loadConfig({ HERALD_COMMCARE_LAB_RESULT_INDEX: 'child' }).commcare.labResultIndex).toBe('child')
    expect(loadConfig({ HERALD_COMMCARE_LAB_RESULT_INDEX: ' Extension ' }).commcare.labResultIndex).toBe('extension')
    expect(() => loadConfig({ HERALD_COMMCARE_LAB_RESULT_INDEX: 'host' })).toThrow(ConfigError)
    expect(() => loadConfig({ HERALD_COMMCARE_LAB_RESULT_INDEX: 'host' })).toThrow(/^HERALD_COMMCARE_LAB_RESULT_INDEX: must be one of child, extension, got "host"/)
  })

  it('HERALD_COMMCARE_FORM_NAME and _FORM_XMLNS: Herald\'s own by default; the xmlns must be a URL', () => {
    expect(loadConfig({}).commcare).toMatchObject({ formName: 'Herald case sync', formXmlns: 'http://herald.invalid/casesync' })
    const set = loadConfig({ HERALD_COMMCARE_FORM_NAME: 'Lab import', HERALD_COMMCARE_FORM_XMLNS: 'http://openrosa.org/formdesigner/ABC' }).commcare
    expect(set).toMatchObject({ formName: 'Lab import', formXmlns: 'http://openrosa.org/formdesigner/ABC' })
    expect(() => loadConfig({ HERALD_COMMCARE_FORM_XMLNS: 'lab-import' })).toThrow(/^HERALD_COMMCARE_FORM_XMLNS: is not a URL/)
  })

  it('HERALD_COMMCARE_PULL_SINCE: a date (UTC midnight); by default 14 days back; a bad date refused by name', () => {
    expect(loadConfig({ HERALD_COMMCARE_PULL_SINCE: '2024-02-29' }).commcare.pullSince.toISOString()).toBe('2024-02-29T00:00:00.000Z')
    const back = (Date.now() - loadConfig({}).commcare.pullSince.getTime()) / 86_400_000
    expect(back).toBeGreaterThan(13.99)
    expect(back).toBeLessThan(14.01)
    for (const bad of ['2023-02-29', '29/02/2024', 'yesterday', '2024-02-29T10:00']) {
      expect(() => loadConfig({ HERALD_COMMCARE_PULL_SINCE: bad })).toThrow(/^HERALD_COMMCARE_PULL_SINCE: must be a date \(YYYY-MM-DD\)/)
    }
  })

  it('HERALD_COMMCARE_USER_ID: required with a real CommCare URL, not with the sandbox on loopback', () => {
    expect(() => loadConfig(REAL)).toThrow(/^HERALD_COMMCARE_USER_ID: is required when HERALD_COMMCARE_URL is set/)
    expect(() => loadConfig({ ...REAL, HERALD_COMMCARE_USER_ID: '  ' })).toThrow(/^HERALD_COMMCARE_USER_ID: /)
    expect(loadConfig({ ...REAL, HERALD_COMMCARE_USER_ID: 'f8df11f165c24606afc47c5ce74b7da1' }).commcare.userId).toBe('f8df11f165c24606afc47c5ce74b7da1')
    expect(loadConfig({ ...REAL, HERALD_COMMCARE_URL: 'http://127.0.0.1:8990' }).commcare.userId).toBe('herald')
    expect(loadConfig({}).commcare.userId).toBe('herald')
  })
})

describe('the settings a fleet sizes (docs/operations.md)', () => {
  it('has defaults for one process, and refuses a bad value naming the variable', () => {
    const one = loadConfig({ DATABASE_URL: '' })
    expect([one.dbPool, one.reportsDatabaseUrl, one.autoMigrate, one.metricsHost]).toEqual([8, undefined, true, '127.0.0.1'])
    const fleet = loadConfig({ DATABASE_URL: PG, HERALD_SECRET_KEY: KEY, HERALD_DB_POOL: '4', HERALD_REPORTS_DATABASE_URL: `${PG}_replica`,
      HERALD_AUTO_MIGRATE: 'off', HERALD_METRICS_HOST: '0.0.0.0' })
    expect([fleet.dbPool, fleet.reportsDatabaseUrl, fleet.autoMigrate, fleet.metricsHost]).toEqual([4, `${PG}_replica`, false, '0.0.0.0'])
    expect(() => loadConfig({ HERALD_DB_POOL: '0' })).toThrow(/^HERALD_DB_POOL: must be at least 1/)
    expect(() => loadConfig({ HERALD_AUTO_MIGRATE: 'sometimes' })).toThrow(/^HERALD_AUTO_MIGRATE: must be on or off/)
    expect(() => loadConfig({ HERALD_REPORTS_DATABASE_URL: 'mysql://x' })).toThrow(/^HERALD_REPORTS_DATABASE_URL/)
  })
})
