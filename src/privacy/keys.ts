/**
 * One secret, HERALD_SECRET_KEY (a KMS in production), or on the embedded default a key kept in the
 * data folder; every key Herald uses is derived from it, one per purpose (HKDF-SHA256), so no two
 * purposes share a key and none is stored. Purposes: messaging:encrypt, messaging:search,
 * messaging:api-keys, messaging:receipts, messaging:job-files, exposure:uuid, exposure:lookup.
 */
import { hkdfSync, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ConfigError, type Config } from '../config.ts'

export function secretKey(config: Pick<Config, 'databaseUrl' | 'dataDir' | 'exposure'>): string {
  if (config.exposure.secretKey) return config.exposure.secretKey
  // loadConfig refuses this already; a config made another way must not get a per-host key either.
  if (config.databaseUrl) throw new ConfigError('HERALD_SECRET_KEY', 'is required when DATABASE_URL is set')
  const path = join(config.dataDir, 'secret.key')
  if (!existsSync(path)) {
    mkdirSync(config.dataDir, { recursive: true })
    writeFileSync(path, randomBytes(32).toString('hex'), { flag: 'wx', mode: 0o600 })
  }
  return readFileSync(path, 'utf8').trim()
}

/** A 32-byte key for one purpose, e.g. 'messaging:encrypt'. */
export const deriveKey = (secret: string, purpose: string): Buffer => Buffer.from(hkdfSync('sha256', secret, '', `herald:${purpose}`, 32))
