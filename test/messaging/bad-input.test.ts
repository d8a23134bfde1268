/**
 * Bad input is a 4xx, never a 500, and no answer leaks an internal code: each request here answered
 * 500 (or Fastify's own body) before issue 15. Also: JSON read whatever the content type, the token
 * checked before the body is read, a bad value's echo cut short.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createSigner } from 'fast-jwt'
import type { FastifyInstance } from 'fastify'
import { forwarderRoutes } from '../../src/casesync/forwarder.ts'
import { startHttpServer } from '../../src/http/server.ts'
import { createLogger } from '../../src/log.ts'
import { receiptRoutes } from '../../src/messaging/receipts/routes.ts'
import { startCommCareSandbox, type CommCareSandbox } from '../../src/sandbox/commcare/server.ts'
import { casesync } from '../helpers/casesync.ts'
import { SECRET } from '../helpers/exposure.ts'
import { callApi, messagingWorld } from '../helpers/messaging.ts'

const w = messagingWorld()
const LEAK = /ERR_|FST_|SQLSTATE|database error|\n\s+at |\.ts:\d+/
const FWD = 'Basic ' + Buffer.from('fwd:secret').toString('base64')
let edge: FastifyInstance
let edgeUrl: string
let sandbox: CommCareSandbox

beforeAll(async () => {
  sandbox = await startCommCareSandbox({ user: 'herald', apiKey: 'sandbox', rootDomain: 'ny-covid', seed: 1 })
  const cs = casesync(sandbox, { HERALD_COMMCARE_FORWARDER_USER: 'fwd', HERALD_COMMCARE_FORWARDER_PASSWORD: 'secret' })
  const log = createLogger('silent')
  edge = await startHttpServer('127.0.0.1', 0, [
    receiptRoutes({ db: w.t.db, log, publicUrl: 'https://herald.test', secret: SECRET, twilioAuthToken: 'twilio-token' }),
    forwarderRoutes({ db: w.t.db, client: cs.client, commcare: cs.config.commcare, log }),
  ], log)
  const a = edge.server.address()
  edgeUrl = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`
})
afterAll(async () => {
  await edge?.close()
  await sandbox?.close()
})

/** Status and text of an answer, checked for leaks. */
async function answer(res: Response) {
  const text = await res.text()
  expect(text).not.toMatch(LEAK)
  return { status: res.status, text, body: text.startsWith('{') ? JSON.parse(text) : undefined }
}
const jwtOf = (key = w.keys.normal) => createSigner({ key: key.slice(-36), algorithm: 'HS256' })({ iss: w.service.id })
const raw = (method: string, path: string, body: string | undefined, headers: Record<string, string> = {}) =>
  fetch(`${w.url}${path}`, { method, body, headers: { authorization: `Bearer ${jwtOf()}`, ...headers } }).then(answer)
const sms = (extra: object = {}) => ({ phone_number: '+12125550100', template_id: w.template.id, personalisation: { name: 'A', ref: 'B' }, ...extra })
const notifyError = (status: number, error: string, message: string | RegExp) =>
  ({ status, body: { status_code: status, errors: [{ error, message: typeof message === 'string' ? message : expect.stringMatching(message) }] } })

describe('bad input on the API', () => {
  it('a template version past the integer range is not found (Notify answers its DataError so)', async () => {
    const r = await answer(await callApi(w, 'GET', `/v2/template/${w.template.id}/version/99999999999`))
    expect(r).toMatchObject(notifyError(404, 'NoResultFound', 'No result found'))
  })

  it('a report day that is no calendar day (2026-02-31) is a validation error', async () => {
    const r = await answer(await callApi(w, 'GET', '/v2/reports/notifications?from=2026-02-31&to=2026-03-01'))
    expect(r).toMatchObject(notifyError(400, 'ValidationError', 'from 2026-02-31 is not a date (YYYY-MM-DD)'))
  })

  it('personalisation nested 200,000 levels deep is refused as JSON too deep, on every route that reads a body', async () => {
    const deep = `{"phone_number":"+12125550100","template_id":"${w.template.id}","personalisation":{"name":${'['.repeat(200_000)}${']'.repeat(200_000)},"ref":"x"}}`
    for (const path of ['/v2/notifications/sms', `/v2/template/${w.template.id}/preview`, '/v2/jobs']) {
      const r = await raw('POST', path, deep, { 'content-type': 'application/json' })
      expect(r).toMatchObject(notifyError(400, 'BadRequestError', /^Invalid JSON supplied in POST data: nested deeper than 100 levels$/))
    }
    const fine = `{"name":${'['.repeat(20)}"a"${']'.repeat(20)},"ref":"x"}`
    expect((await raw('POST', `/v2/template/${w.template.id}/preview`, `{"personalisation":${fine}}`)).status).toBe(200)
  })

  it('a NUL in a reference, which the database cannot store, is a 4xx', async () => {
    const r = await answer(await callApi(w, 'POST', '/v2/notifications/sms', sms({ reference: 'a\u0000b' })))
    expect(r.status).toBeGreaterThanOrEqual(400)
    expect(r.status).toBeLessThan(500)
    expect(r.body.status_code).toBe(r.status)
  })

  it('a 5 MB reference is not echoed back: the value is cut to 100 characters', async () => {
    const res = await callApi(w, 'POST', '/v2/notifications/sms', sms({ reference: 'r'.repeat(5 * 1024 * 1024) }))
    const r = await answer(res)
    expect(r).toMatchObject(notifyError(400, 'ValidationError', `reference ${'r'.repeat(100)}… is too long`))
    expect(r.text.length).toBeLessThan(400)
  })

  it('a token of ~100 KB gets Notify\'s 403, not a bare 431', async () => {
    const r = await answer(await fetch(`${w.url}/v2/notifications`, { headers: { authorization: `Bearer ${'x'.repeat(100 * 1024)}` } }))
    expect(r).toMatchObject(notifyError(403, 'AuthError', /^Invalid token: make sure your API token matches the example/))
  })

  it('authenticates before reading the body: a bad token with broken JSON, or with a body past the limit, is refused for the token', async () => {
    const noToken = await fetch(`${w.url}/v2/notifications/sms`, { method: 'POST', body: '{not json', headers: { 'content-type': 'application/json' } }).then(answer)
    expect(noToken).toMatchObject(notifyError(401, 'AuthError', 'Unauthorized: authentication token must be provided'))
    const huge = await fetch(`${w.url}/v2/jobs`, { method: 'POST', body: 'x'.repeat(11 * 1024 * 1024), headers: { authorization: 'Bearer nope' } }).then(answer)
    expect(huge).toMatchObject(notifyError(403, 'AuthError', /^Invalid token/))
    // With a good token the same body is refused for its size, as before.
    expect((await raw('POST', '/v2/jobs', 'x'.repeat(11 * 1024 * 1024))).status).toBe(413)
  })

  it('reads a JSON body sent as text/plain, with no content type, or with a malformed one, as Notify does', async () => {
    const body = JSON.stringify(sms())
    for (const headers of [{ 'content-type': 'text/plain' }, {} as Record<string, string>, { 'content-type': 'application/x-www-form-urlencoded' }, { 'content-type': 'not a type;;' }]) {
      const r = await raw('POST', '/v2/notifications/sms', body, headers)
      expect(r.status, JSON.stringify(headers)).toBe(201)
      expect(r.body.content.body).toBe('Hello A, your test result is ready. Ref B.')
    }
    expect(await raw('POST', '/v2/notifications/sms', 'phone_number=1', { 'content-type': 'text/plain' }))
      .toMatchObject(notifyError(400, 'BadRequestError', 'Invalid JSON supplied in POST data'))
    // A POST without a body (cancel) still needs none.
    expect((await raw('POST', '/v2/jobs/00000000-0000-4000-8000-000000000000/cancel', undefined)).status).toBe(404)
  })
})

describe('bad input on the receipt and forwarder endpoints', () => {
  it('an X-Twilio-Signature of non-ASCII characters is refused as a bad signature', async () => {
    const res = await fetch(`${edgeUrl}/receipts/twilio?notification=00000000-0000-4000-8000-000000000000`, {
      method: 'POST', body: 'MessageStatus=delivered&MessageSid=SM1',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': '\u00e9'.repeat(28) },
    })
    expect((await answer(res)).status).toBe(403)
  })

  it('broken JSON to a receipt or the forwarder is a 400 without Fastify\'s internal code', async () => {
    const vonage = await fetch(`${edgeUrl}/receipts/vonage/abc`, { method: 'POST', body: '{', headers: { 'content-type': 'application/json' } })
    expect((await answer(vonage)).status).toBe(400)
    const fwd = await fetch(`${edgeUrl}/commcare/cases`, { method: 'POST', body: '{', headers: { 'content-type': 'application/json', authorization: FWD } })
    expect(await answer(fwd)).toMatchObject({ status: 400, body: { error: 'invalid JSON' } })
  })

  it('a forwarded case that parses but is malformed is a 400, so that CommCare does not send it again for ever', async () => {
    const push = (body: unknown) => fetch(`${edgeUrl}/commcare/cases`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json', authorization: FWD } }).then(answer)
    const good = {
      case_id: 'c-1', domain: 'ny-albany-cdcms', closed: false, date_closed: null, server_date_modified: '2026-11-01T10:00:00.000000Z', child_cases: {},
      properties: { case_type: 'patient', first_name: 'Ann', last_name: 'Example', dob: '1980-01-02' },
    }
    const bad = [
      { ...good, properties: null },
      { ...good, server_date_modified: 'not a time' },
      { ...good, properties: { ...good.properties, first_name: 5 } },
      { ...good, child_cases: { x: { properties: { case_type: 'lab_result', accession_number: 'A1', lab_result: 5 } } } },
      { ...good, properties: { ...good.properties, dob: '2026-02-31' } }, // the database's own refusal (a data exception)
    ]
    for (const b of bad) {
      const r = await push(b)
      expect(r.status, JSON.stringify(b)).toBe(400)
      expect(r.text).not.toMatch(/Ann|Example|2026-02-31/)
    }
    expect(await push(good)).toMatchObject({ status: 200, body: { outcomes: ['new_person'] } })
    const noAuth = await fetch(`${edgeUrl}/commcare/cases`, { method: 'POST', body: '{', headers: { 'content-type': 'application/json' } })
    expect((await answer(noAuth)).status).toBe(401) // checked before the body is read
  })
})
