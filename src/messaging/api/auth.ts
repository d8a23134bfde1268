/**
 * JWT auth exactly as GOV.UK Notify's: `Authorization: Bearer <JWT>`, HS256, `iss` the service id,
 * `iat` within 30 s of now, signed with the secret of any of the service's keys; the checks in
 * Notify's order, with its messages (401 for a missing token or scheme, 403 for the rest).
 */
import { createSecretKey, type KeyObject } from 'node:crypto'
import { compactVerify, decodeJwt, decodeProtectedHeader, type JWTPayload } from 'jose'
import { secretHash, type KeySecrets } from '../keys.ts'
import type { Service } from '../services.ts'
import type { ApiKey, Directory } from './directory.ts'
import { auth } from './errors.ts'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const CLOCK_SKEW_SECONDS = 30
const GENERAL = 'Invalid token: make sure your API token matches the example at https://docs.notifications.service.gov.uk/rest-api.html#authorisation-header'

export interface Caller { service: Service; key: ApiKey }

export class Authenticator {
  /** Each key's secret as a signing key, or null when it no longer matches its stored hash (HERALD_SECRET_KEY changed). */
  private readonly signing = new Map<string, KeyObject | null>()

  constructor(private readonly dir: Directory, private readonly secrets: KeySecrets) {}

  private signingKey(key: ApiKey): KeyObject | null {
    let k = this.signing.get(key.id)
    if (k === undefined) {
      const secret = this.secrets.secretOf(key.id)
      k = secretHash(secret).equals(key.secretHash) ? createSecretKey(Buffer.from(secret, 'utf8')) : null
      this.signing.set(key.id, k)
    }
    return k
  }

  async authenticate(header: string | undefined): Promise<Caller> {
    if (!header) throw auth('Unauthorized: authentication token must be provided', 401)
    if (header.slice(0, 7).toLowerCase() !== 'bearer ') throw auth('Unauthorized: authentication bearer scheme must be used', 401)
    const token = header.slice(7).trim()
    let claims: JWTPayload
    let alg: string | undefined
    try {
      claims = decodeJwt(token)
      alg = decodeProtectedHeader(token).alg
    } catch {
      throw auth(GENERAL)
    }
    if (claims.iss === undefined) throw auth('Invalid token: iss field not provided')
    if (typeof claims.iss !== 'string' || !UUID.test(claims.iss)) throw auth('Invalid token: service id is not the right data type')
    const service = await this.dir.service(claims.iss.toLowerCase())
    if (!service) throw auth('Invalid token: service not found')
    const keys = await this.dir.keysOf(service.id)
    if (keys.length === 0) throw auth('Invalid token: service has no API keys')
    if (alg !== 'HS256') throw auth('Invalid token: algorithm used is not HS256')
    for (const key of keys) {
      const signing = this.signingKey(key)
      if (!signing) continue
      try {
        await compactVerify(token, signing, { algorithms: ['HS256'] })
      } catch {
        continue // signed with another key (or not at all): try the next
      }
      if (typeof claims.iat !== 'number') continue // Notify counts a missing iat as a decode error
      if (Math.abs(Date.now() / 1000 - claims.iat) > CLOCK_SKEW_SECONDS) throw auth('Error: Your system clock must be accurate to within 30 seconds')
      if (key.revoked) throw auth('Invalid token: API key revoked')
      return { service, key }
    }
    throw auth('Invalid token: API key not found')
  }
}
