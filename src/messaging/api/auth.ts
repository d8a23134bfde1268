/**
 * JWT auth exactly as GOV.UK Notify's: `Authorization: Bearer <JWT>`, HS256, `iss` the service id,
 * `iat` within 30 s of now, signed with the secret of any of the service's keys; the checks in
 * Notify's order, with its messages (401 for a missing token or scheme, 403 for the rest).
 * The token is checked when the request arrives, before its body is read (authenticateFirst).
 */
import { createDecoder, createVerifier } from 'fast-jwt'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { secretHash, type KeySecrets } from '../keys.ts'
import type { Service } from '../services.ts'
import type { ApiKey, Directory } from './directory.ts'
import { auth } from './errors.ts'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const CLOCK_SKEW_SECONDS = 30
const decode = createDecoder({ complete: true })
const GENERAL = 'Invalid token: make sure your API token matches the example at https://docs.notifications.service.gov.uk/rest-api.html#authorisation-header'

export interface Caller { service: Service; key: ApiKey }

/** The routes anyone may read. */
const PUBLIC = new Set(['/v2/openapi.json'])
/** Each request's caller, as found by the onRequest hook. */
const callers = new WeakMap<FastifyRequest, Promise<Caller>>()

export class Authenticator {
  /** Each key's verifier, or null when its secret no longer matches its stored hash (HERALD_SECRET_KEY changed). */
  private readonly verifiers = new Map<string, ((token: string) => unknown) | null>()

  constructor(private readonly dir: Directory, private readonly secrets: KeySecrets) {}

  private verifier(key: ApiKey) {
    let v = this.verifiers.get(key.id)
    if (v === undefined) {
      const secret = this.secrets.secretOf(key.id)
      // iat is checked below, as Notify checks it; exp and nbf, when a token has them, by the verifier.
      v = secretHash(secret).equals(key.secretHash) ? createVerifier({ key: secret, algorithms: ['HS256'], cache: false }) : null
      this.verifiers.set(key.id, v)
    }
    return v
  }

  /** The request's caller: found once, when the request arrived (authenticateFirst), or now. */
  callerOf(req: FastifyRequest): Promise<Caller> {
    return callers.get(req) ?? this.authenticate(req.headers.authorization)
  }

  async authenticate(header: string | undefined): Promise<Caller> {
    if (!header) throw auth('Unauthorized: authentication token must be provided', 401)
    if (header.slice(0, 7).toLowerCase() !== 'bearer ') throw auth('Unauthorized: authentication bearer scheme must be used', 401)
    const token = header.slice(7).trim()
    let claims: { iss?: unknown; iat?: unknown }
    let alg: string | undefined
    try {
      const decoded = decode(token) as { header: { alg?: string }; payload: typeof claims }
      claims = decoded.payload
      alg = decoded.header.alg
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
      const verify = this.verifier(key)
      if (!verify) continue
      try {
        verify(token)
      } catch (err) {
        if ((err as { code?: string }).code === 'FAST_JWT_INVALID_SIGNATURE') continue // signed with another key: try the next
        throw auth(GENERAL) // signed with this key, but expired or not yet valid (exp, nbf)
      }
      if (typeof claims.iat !== 'number') continue // Notify counts a missing iat as a decode error
      if (Math.abs(Date.now() / 1000 - claims.iat) > CLOCK_SKEW_SECONDS) throw auth('Error: Your system clock must be accurate to within 30 seconds')
      if (key.revoked) throw auth('Invalid token: API key revoked')
      return { service, key }
    }
    throw auth('Invalid token: API key not found')
  }
}

/**
 * Authenticates every request of the scope before its body is read, as Notify's before-request hook
 * does: a caller without a valid token cannot make Herald read and parse 10 MB. An unknown URL is
 * still a 404.
 */
export function authenticateFirst(app: FastifyInstance, authenticator: Authenticator) {
  app.addHook('onRequest', async (req) => {
    if (req.is404 || PUBLIC.has(req.routeOptions.url ?? '')) return
    const caller = authenticator.authenticate(req.headers.authorization)
    callers.set(req, caller)
    await caller
  })
}
