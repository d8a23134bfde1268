/**
 * One secret, HERALD_SECRET_KEY (a KMS in production), or on the embedded default a key kept in the
 * data folder; every key Herald uses is derived from it, one per purpose (HKDF-SHA256), so no two
 * purposes share a key and none is stored.
 */
import { hkdfSync, randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Config } from '../config.ts'

export function secretKey(config: Pick<Config, 'dataDir' | 'exposure'>): string {
  if (config.exposure.secretKey) return config.exposure.secretKey
  const path = join(config.dataDir, 'secret.key')
  if (!existsSync(path)) {
    mkdirSync(config.dataDir, { recursive: true })
    writeFileSync(path, randomBytes(32).toString('hex'), { flag: 'wx', mode: 0o600 })
  }
  return readFileSync(path, 'utf8').trim()
}

/** A 32-byte key for one purpose, e.g. 'messaging:encrypt'. */
export const deriveKey = (secret: string, purpose: string): Buffer => Buffer.from(hkdfSync('sha256', secret, '', `herald:${purpose}`, 32))
