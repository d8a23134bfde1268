/**
 * Fuzz (fast-check): random JSON bodies, headers (Authorization with good, garbage and huge tokens;
 * random content types) and query strings at every public route: the /v2/ routes of the OpenAPI
 * document and Herald's own, the receipts and the CommCare forwarder, with valid credentials half
 * the time. No answer may be a 5xx or carry an internal code (FST_ERR_*, SQLSTATE) or a stack.
 * Bounded: a fixed number of runs from a printed seed (FUZZ_SEED=n replays one).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { createSigner } from 'fast-jwt'
import type { FastifyInstance } from 'fastify'
import { forwarderRoutes } from '../../src/casesync/forwarder.ts'
import { startHttpServer } from '../../src/http/server.ts'
import { createLogger } from '../../src/log.ts'
import { receiptKey, receiptRoutes, receiptToken, twilioSignature } from '../../src/messaging/receipts/routes.ts'
import { startCommCareSandbox, type CommCareSandbox } from '../../src/sandbox/commcare/server.ts'
import { casesync } from '../helpers/casesync.ts'
import { SECRET } from '../helpers/exposure.ts'
import { messagingWorld } from '../helpers/messaging.ts'

const w = messagingWorld()
const SEED = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31))
const RUNS = 300
const LEAK = /ERR_|FST_|SQLSTATE|database error|\n\s+at |\.ts:\d+/
const PUBLIC_URL = 'https://herald.test'
const TWILIO_TOKEN = 'twilio-token'
let edge: FastifyInstance
let edgeUrl: string
let sandbox: CommCareSandbox
let apiRoutes: { method: string; path: string }[]

beforeAll(async () => {
  console.log(`fuzz seed ${SEED} (replay: FUZZ_SEED=${SEED})`)
  sandbox = await startCommCareSandbox({ user: 'herald', apiKey: 'sandbox', rootDomain: 'ny-covid', seed: 1 })
  const cs = casesync(sandbox, { HERALD_COMMCARE_FORWARDER_USER: 'fwd', HERALD_COMMCARE_FORWARDER_PASSWORD: 'secret' })
  const log = createLogger('silent')
  edge = await startHttpServer('127.0.0.1', 0, [
    receiptRoutes({ db: w.t.db, log, publicUrl: PUBLIC_URL, secret: SECRET, twilioAuthToken: TWILIO_TOKEN }),
    forwarderRoutes({ db: w.t.db, client: cs.client, commcare: cs.config.commcare, log }),
  ], log)
  const a = edge.server.address()
  edgeUrl = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`
  const doc = await (await fetch(`${w.url}/v2/openapi.json`)).json() as { paths: Record<string, Record<string, unknown>> }
  const own = [['POST', '/v2/jobs'], ['GET', '/v2/jobs'], ['GET', '/v2/jobs/{job_id}'], ['POST', '/v2/jobs/{job_id}/cancel'], ['GET', '/v2/jobs/{job_id}/report'],
    ['GET', '/v2/usage'], ['GET', '/v2/reports/notifications'], ['GET', '/v2/service/callbacks'], ['POST', '/v2/service/callbacks'],
    ['DELETE', '/v2/service/callbacks/{kind}']]
  apiRoutes = [...Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => ({ method: m.toUpperCase(), path }))),
    ...own.map(([method, path]) => ({ method, path }))]
  expect(apiRoutes.length).toBeGreaterThan(10)
})
afterAll(async () => {
  await edge?.close()
  await sandbox?.close()
})

// Header values: printable Latin-1 (what fetch can send), sometimes long.
const headerText = (max = 60) => fc.string({ unit: fc.integer({ min: 0x21, max: 0xff }).filter((c) => c < 0x7f || c > 0x9f).map((c) => String.fromCharCode(c)), maxLength: max })
const anyText = fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.constantFrom('', '\u0000', '2026-02-31', '99999999999', '-1', '1e400', 'null', '[]', "'; DROP TABLE x; --", '%00', '../..',
  '2026-03-01', 'TEMPLATE', 'a\u0000b', 'delivered', 'sms'))
const uuid = fc.uuid()
const deep = fc.oneof(fc.integer({ min: 50, max: 3000 }), fc.constant(200_000)).map((n) => `{"personalisation":{"a":${'['.repeat(n)}${']'.repeat(n)}}}`)
const jsonish = fc.oneof(fc.jsonValue(), fc.dictionary(fc.constantFrom('phone_number', 'template_id', 'personalisation', 'reference', 'sms_sender_id',
  'email_address', 'email_reply_to_id', 'one_click_unsubscribe_url', 'kind', 'url', 'bearer_token',
  'scheduled_for', 'csv', 'filename', 'status', 'client-ref', 'messageId', 'case_id', 'properties', 'server_date_modified', 'closed', 'child_cases'),
fc.oneof(anyText, fc.jsonValue(), uuid, fc.constant('+12125550100'))))
// Near a valid text (the real template, a valid number, its personalisation), so that bad values reach the database.
const smsLike = fc.record({
  phone_number: fc.oneof(fc.constant('+12125550100'), anyText, fc.jsonValue()), template_id: fc.oneof(fc.constant('TEMPLATE'), uuid, fc.jsonValue()),
  personalisation: fc.oneof(fc.constant({ name: 'a', ref: 'b' }), fc.dictionary(fc.constantFrom('name', 'ref', 'x'), fc.oneof(anyText, fc.jsonValue()))),
  reference: fc.oneof(anyText, fc.jsonValue()), scheduled_for: fc.oneof(anyText, fc.date({ noInvalidDate: true }).map((d) => d.toISOString())),
  csv: fc.oneof(anyText, fc.constant('phone number,name,ref\n+12125550100,a,b')), filename: anyText,
}, { requiredKeys: [] })
const body = fc.oneof(
  { weight: 4, arbitrary: smsLike.map((v) => JSON.stringify(v)) },
  { weight: 6, arbitrary: jsonish.map((v) => JSON.stringify(v)) },
  { weight: 2, arbitrary: anyText },
  { weight: 1, arbitrary: deep },
  { weight: 1, arbitrary: fc.constant(undefined) },
)
const contentType = fc.option(fc.oneof(fc.constantFrom('application/json', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x',
  'application/json; charset=latin1', 'application/xml'), headerText()), { nil: undefined })
const query = fc.dictionary(fc.oneof(fc.constantFrom('status', 'template_type', 'reference', 'older_than', 'include_jobs', 'type', 'year', 'from', 'to',
  'notification', 'client-ref', 'status', 'messageId'), fc.string({ maxLength: 8 })), fc.oneof(anyText, uuid), { maxKeys: 4 })
const extraHeaders = fc.dictionary(fc.constantFrom('accept', 'x-forwarded-for', 'x-forwarded-proto', 'x-twilio-signature', 'accept-language', 'x-custom'),
  headerText(), { maxKeys: 3 })
const garbageAuth = fc.option(fc.oneof(headerText(), headerText().map((t) => `Bearer ${t}`), fc.integer({ min: 1000, max: 110_000 }).map((n) => `Bearer ${'A'.repeat(n)}`),
  fc.record({ iss: fc.oneof(uuid, anyText, fc.jsonValue()), iat: fc.oneof(fc.integer(), fc.jsonValue()) }, { requiredKeys: [] })
    .map((claims) => `Bearer ${createSigner({ key: 'k'.repeat(36), algorithm: 'HS256' })(claims)}`)), { nil: undefined })

const qs = (q: Record<string, string>) => (Object.keys(q).length ? `?${new URLSearchParams(q)}` : '')

async function check(url: string, init: RequestInit) {
  const res = await fetch(url, init)
  const text = await res.text()
  const what = `${init.method} ${url.slice(0, 200)} → ${res.status} ${text.slice(0, 300)}`
  expect(res.status, what).toBeLessThan(500)
  expect(text, what).not.toMatch(LEAK)
}

describe('fuzz: no 5xx and no internal code for any input', () => {
  it('the /v2/ API', async () => {
    const param = fc.oneof(fc.constant('TEMPLATE'), uuid, anyText, fc.constantFrom('1', '99999999999', '0', '-1', '1.5'))
    await fc.assert(fc.asyncProperty(fc.nat(), param, param, fc.boolean(), fc.constantFrom('normal', 'team', 'test'), garbageAuth, body, contentType, query,
      extraHeaders, fc.option(fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH'), { freq: 5, nil: undefined }),
      async (pick, p1, p2, valid, keyType, garbage, b, ct, q, extra, otherMethod) => {
        const route = apiRoutes[pick % apiRoutes.length]
        const value = (p: string) => encodeURIComponent(p === 'TEMPLATE' ? w.template.id : p)
        let n = 0
        const path = route.path.replace(/\{[^}]+\}/g, () => value(n++ === 0 ? p1 : p2))
        const key = w.keys[keyType as keyof typeof w.keys]
        const auth = valid ? `Bearer ${createSigner({ key: key.slice(-36), algorithm: 'HS256' })({ iss: w.service.id })}` : garbage
        const method = otherMethod ?? route.method
        const headers: Record<string, string> = { ...extra, ...(auth !== undefined ? { authorization: auth } : {}), ...(ct ? { 'content-type': ct } : {}) }
        await check(`${w.url}${path}${qs(q)}`.replaceAll('TEMPLATE', w.template.id), { method, headers, body: method === 'GET' ? undefined : b?.replaceAll('TEMPLATE', w.template.id) })
      }), { seed: SEED, numRuns: RUNS, endOnFailure: true })
  }, 120_000)

  it('the receipts and the CommCare forwarder', async () => {
    const form = fc.dictionary(fc.oneof(fc.constantFrom('MessageStatus', 'SmsStatus', 'MessageSid', 'ErrorCode'), fc.string({ maxLength: 6 })),
      fc.oneof(anyText, fc.constantFrom('delivered', 'failed', 'undelivered', 'sent', '30006')), { maxKeys: 5 })
    const caseBody = fc.record({
      case_id: fc.oneof(fc.string(), fc.uuid(), fc.jsonValue()), domain: fc.oneof(fc.constant('ny-albany-cdcms'), anyText), closed: fc.oneof(fc.boolean(), fc.jsonValue()),
      server_date_modified: fc.oneof(fc.date({ noInvalidDate: true }).map((d) => d.toISOString()), anyText), child_cases: fc.oneof(fc.constant({}), fc.jsonValue()),
      properties: fc.oneof(fc.record({ case_type: fc.constantFrom('patient', 'lab_result'), dob: anyText, first_name: anyText, last_name: anyText, external_id: anyText },
        { requiredKeys: ['case_type'] }), fc.jsonValue()),
    }, { requiredKeys: [] })
    await fc.assert(fc.asyncProperty(fc.integer({ min: 0, max: 3 }), fc.boolean(), uuid, form, body, caseBody, contentType, query, extraHeaders, garbageAuth,
      async (target, valid, id, fields, b, cc, ct, q, extra, garbage) => {
        const headers: Record<string, string> = { ...extra }
        if (target === 0) { // Twilio: a form post, signed over the URL and fields half the time
          const path = `/receipts/twilio?notification=${valid ? id : encodeURIComponent(String(q.notification ?? id))}`
          headers['content-type'] = 'application/x-www-form-urlencoded'
          headers['x-twilio-signature'] = valid ? twilioSignature(TWILIO_TOKEN, `${PUBLIC_URL}${path}`, fields) : (extra['x-twilio-signature'] ?? '')
          await check(`${edgeUrl}${path}`, { method: 'POST', headers, body: new URLSearchParams(fields).toString() })
        } else if (target === 1) { // Vonage: the token made for client-ref half the time, fields as JSON, form or query
          const token = valid ? receiptToken(receiptKey(SECRET), id) : encodeURIComponent(String(fields.MessageSid ?? 'nope'))
          const json = { ...(typeof cc === 'object' ? cc : {}), ...fields, 'client-ref': id, status: fields.MessageStatus ?? 'delivered' }
          if (ct) headers['content-type'] = ct
          const get = q.status !== undefined
          await check(`${edgeUrl}/receipts/vonage/${token}${get ? qs({ ...q, 'client-ref': id }) : ''}`,
            { method: get ? 'GET' : 'POST', headers, body: get ? undefined : valid ? JSON.stringify(json) : b })
        } else { // The forwarder: its basic auth half the time, a near-case or anything
          headers.authorization = valid ? `Basic ${Buffer.from('fwd:secret').toString('base64')}` : garbage ?? ''
          if (ct) headers['content-type'] = ct
          else headers['content-type'] = 'application/json'
          await check(`${edgeUrl}/commcare/cases${qs(q)}`, { method: 'POST', headers, body: target === 2 ? JSON.stringify(cc) : b })
        }
      }), { seed: SEED, numRuns: RUNS, endOnFailure: true })
  }, 120_000)
})
