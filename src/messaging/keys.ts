/**
 * API keys as GOV.UK Notify's clients take them: `{name}-{service id}-{secret}`, the secret a uuid.
 * A key's secret is derived from HERALD_SECRET_KEY and the key's id, so it is never stored: the
 * database keeps its SHA-256 only, and a copy of the database alone cannot sign a token.
 */
import { createHash, createHmac, randomUUID } from 'node:crypto'
import { deriveKey } from '../privacy/keys.ts'

export type KeyType = 'normal' | 'team' | 'test'
export const KEY_TYPES: readonly KeyType[] = ['normal', 'team', 'test']

export class KeySecrets {
  private readonly key: Buffer
  private readonly cache = new Map<string, string>()

  constructor(secret: string) {
    this.key = deriveKey(secret, 'messaging:api-keys')
  }

  /** The secret of key `id`: a uuid (v4 layout) made of the keyed hash of the id. */
  secretOf(id: string): string {
    let s = this.cache.get(id)
    if (!s) {
      const b = createHmac('sha256', this.key).update(id).digest().subarray(0, 16)
      b[6] = (b[6] & 0x0f) | 0x40
      b[8] = (b[8] & 0x3f) | 0x80
      const h = b.toString('hex')
      s = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`
      this.cache.set(id, s)
    }
    return s
  }

  /** A new key's id, the hash to store, and the key string to show once. */
  newKey(serviceId: string, name: string): { id: string; secretHash: Buffer; key: string } {
    const id = randomUUID()
    const secret = this.secretOf(id)
    const slug = name.trim().toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_|_$/g, '') || 'key'
    return { id, secretHash: secretHash(secret), key: `${slug}-${serviceId}-${secret}` }
  }
}

export const secretHash = (secret: string) => createHash('sha256').update(secret).digest()
