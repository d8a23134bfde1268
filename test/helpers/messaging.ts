/** Messaging in tests: a service with a key of each type and a template, and Herald's API on a free loopback port. */
import { afterAll, beforeAll, beforeEach } from 'vitest'
import { createSigner } from 'fast-jwt'
import type { FastifyInstance } from 'fastify'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig } from '../../src/config.ts'
import { startHttpServer } from '../../src/http/server.ts'
import { messagingKeys, messagingRoutes } from '../../src/messaging/index.ts'
import { createKey, createService, createTemplate, type Service, type ServiceInput } from '../../src/messaging/services.ts'
import { createLogger } from '../../src/log.ts'
import { createTestDb, type TestDb } from './db.ts'
import { resetDb } from './link.ts'
import { SECRET } from './exposure.ts'
import type { Db } from '../../src/db/types.ts'
import { receiptUrls } from '../../src/messaging/receipts/routes.ts'
import { registerProviders } from '../../src/messaging/send/providers.ts'
import { TwilioSms } from '../../src/messaging/send/twilio.ts'
import { VonageSms } from '../../src/messaging/send/vonage.ts'
import { startSmsSandbox } from '../../src/sandbox/sms/server.ts'

export const jobStore = mkdtempSync(join(tmpdir(), 'herald-jobs-'))
export const config = loadConfig({ HERALD_SECRET_KEY: SECRET, HERALD_API_CACHE_MS: '0', HERALD_PHONE_REGION: 'US', HERALD_JOB_STORE: jobStore })
export const { sealer, secrets } = messagingKeys(config)

export interface World {
  t: TestDb
  url: string
  service: Service
  keys: { normal: string; team: string; test: string }
  template: { id: string }
}

/** One database and API server for the file, emptied before each test; a fresh service each test. */
export function messagingWorld(service: Partial<ServiceInput> = {}): World {
  const w = {} as World
  let app: FastifyInstance
  beforeAll(async () => {
    w.t = await createTestDb()
    app = await startHttpServer('127.0.0.1', 0, [messagingRoutes(config, w.t.db, createLogger('silent'))])
    const a = app.server.address()
    w.url = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`
  })
  afterAll(async () => {
    await app?.close()
    await w.t?.drop()
    rmSync(jobStore, { recursive: true, force: true })
  })
  beforeEach(async () => {
    await resetDb(w.t.db)
    w.service = await createService(w.t.db, { name: 'Test results', smsSender: 'NYSDOH', ...service })
    w.keys = {
      normal: (await createKey(w.t.db, secrets, w.service.id, 'live', 'normal')).key,
      team: (await createKey(w.t.db, secrets, w.service.id, 'team', 'team')).key,
      test: (await createKey(w.t.db, secrets, w.service.id, 'test', 'test')).key,
    }
    w.template = await createTemplate(w.t.db, w.service.id, 'Result ready', 'Hello ((name)), your test result is ready. Ref ((ref)).', 'tester')
  })
  return w
}

/** A request to Herald's API signed with one of the world's keys (the live one by default). */
export function callApi(w: World, method: string, path: string, body?: object, key = w.keys.normal): Promise<Response> {
  const jwt = createSigner({ key: key.slice(-36), algorithm: 'HS256' })({ iss: w.service.id })
  return fetch(`${w.url}${path}`, {
    method, headers: { authorization: `Bearer ${jwt}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined,
  })
}

/** The Twilio and Vonage sandboxes and Herald's providers for them (receipts to `publicUrl`), registered in the database. */
export async function smsProviders(db: Db, publicUrl: string, timeoutMs: number) {
  const twilio = await startSmsSandbox({ provider: 'twilio', accountSid: 'ACtest', authToken: 'token', seed: 1 })
  const vonage = await startSmsSandbox({ provider: 'vonage', apiKey: 'vk', apiSecret: 'vs', seed: 2 })
  const urls = receiptUrls(publicUrl, SECRET)
  const providers = [
    new TwilioSms({ url: twilio.url, accountSid: 'ACtest', authToken: 'token', timeoutMs, callbackUrl: urls.twilio }),
    new VonageSms({ url: vonage.url, apiKey: 'vk', apiSecret: 'vs', timeoutMs, callbackUrl: urls.vonage }),
  ]
  await registerProviders(db, ['twilio', 'vonage'])
  return { twilio, vonage, providers, close: () => Promise.all([twilio.close(), vonage.close(), ...providers.map((p) => p.close())]) }
}
