/**
 * What the messaging tables keep instead of a phone number or personalisation: an AES-256-GCM
 * ciphertext, to read the value back while it is needed (sending, reports), and an HMAC, to find
 * equal values (search, a team's members) without reading any. Retention deletes the ciphertext;
 * the HMAC alone reveals nothing without the key.
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto'
import { FileSealer } from './file-seal.ts'
import { deriveKey } from './keys.ts'

// A ciphertext is VERSION | iv (12) | encrypted bytes | tag (16); the version names the key, so keys can rotate.
const VERSION = 1

export class Sealer {
  private readonly encKey: Buffer
  private readonly macKey: Buffer
  /** Bulk-job files (a key of their own, messaging:job-files): what needs a value's key needs the file's too. */
  readonly files: FileSealer

  constructor(secret: string) {
    this.encKey = deriveKey(secret, 'messaging:encrypt')
    this.macKey = deriveKey(secret, 'messaging:search')
    this.files = new FileSealer(secret)
  }

  // IVs are taken from a pool of random bytes filled 4 KB at a time: one call to the system's random
  // source per 341 seals instead of one each (a busy API seals two values a request).
  private pool = Buffer.alloc(0)
  private taken = 0

  private iv(): Buffer {
    if (this.taken + 12 > this.pool.length) {
      this.pool = randomBytes(4092)
      this.taken = 0
    }
    return this.pool.subarray(this.taken, (this.taken += 12))
  }

  seal(text: string): Buffer {
    const iv = this.iv()
    const c = createCipheriv('aes-256-gcm', this.encKey, iv)
    const body = Buffer.concat([c.update(text, 'utf8'), c.final()])
    return Buffer.concat([Buffer.of(VERSION), iv, body, c.getAuthTag()])
  }

  open(sealed: Buffer): string {
    if (sealed[0] !== VERSION) throw new Error(`sealed value of unknown key version ${sealed[0]}`)
    const d = createDecipheriv('aes-256-gcm', this.encKey, sealed.subarray(1, 13), { authTagLength: 16 }) // a short tag is refused, not checked short
    d.setAuthTag(sealed.subarray(sealed.length - 16))
    return Buffer.concat([d.update(sealed.subarray(13, sealed.length - 16)), d.final()]).toString('utf8')
  }

  /** The keyed hash of a value (a phone number in E.164): equal values, equal hashes. */
  hash(text: string): Buffer {
    return createHmac('sha256', this.macKey).update(text).digest()
  }
}
