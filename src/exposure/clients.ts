/**
 * The two services exposure talks to, on their wire formats (EXTERNAL_APIS.md sections 2 and 3):
 * Twilio Lookup v2 (line type of a number) and the verification server's batch-issue. Both over
 * undici with a timeout on every call. A failure that trying again may cure is a ServiceError with
 * `retryable`; Retry-After is carried when the service sent one.
 */
import { Agent, request } from 'undici'

export class ServiceError extends Error {
  constructor(message: string, readonly status: number, readonly retryable: boolean, readonly retryAfter?: number) {
    super(message)
    this.name = 'ServiceError'
  }
}

const header = (h: Record<string, string | string[] | undefined>, name: string) => {
  const v = h[name]
  return (Array.isArray(v) ? v[0] : v) ?? undefined
}
const seconds = (v: string | undefined) => (v !== undefined && v !== '' && Number.isFinite(Number(v)) ? Number(v) : undefined)
/** A header that is seconds or an HTTP date (the real verification server sends dates), as a unix time in seconds. */
const instant = (v: string | undefined) => {
  const n = seconds(v)
  if (n !== undefined) return n
  const at = v ? Date.parse(v) : NaN
  return Number.isNaN(at) ? undefined : at / 1000
}
/** Retry-After: seconds, or an HTTP date. */
const retryAfter = (v: string | undefined) => {
  const n = seconds(v)
  if (n !== undefined) return n
  const at = instant(v)
  return at === undefined ? undefined : Math.max(0, Math.ceil(at - Date.now() / 1000))
}

async function send(agent: Agent, url: string, timeoutMs: number, init: { method: 'GET' | 'POST'; headers: Record<string, string>; body?: string }) {
  try {
    return await request(url, { ...init, dispatcher: agent, headersTimeout: timeoutMs, bodyTimeout: timeoutMs, signal: AbortSignal.timeout(timeoutMs) })
  } catch (err) {
    const e = err as Error
    throw new ServiceError(`${init.method} ${new URL(url).pathname}: ${e.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : e.message}`, 0, true)
  }
}

export interface LineType {
  valid: boolean
  /** line_type_intelligence.type; null when the lookup gave none. */
  lineType: string | null
}

export class LookupClient {
  private readonly agent = new Agent({ keepAliveTimeout: 30_000 })
  private readonly auth: string

  constructor(private readonly opts: { url: string; accountSid: string; authToken: string; timeoutMs: number }) {
    this.auth = `Basic ${Buffer.from(`${opts.accountSid}:${opts.authToken}`).toString('base64')}`
  }

  async lineType(e164: string): Promise<LineType> {
    const url = `${this.opts.url}/v2/PhoneNumbers/${encodeURIComponent(e164)}?Fields=line_type_intelligence`
    const res = await send(this.agent, url, this.opts.timeoutMs, { method: 'GET', headers: { authorization: this.auth, accept: 'application/json' } })
    const body = (await res.body.json().catch(() => ({}))) as { valid?: boolean; line_type_intelligence?: { type?: string } | null; code?: number }
    if (res.statusCode === 200) return { valid: body.valid !== false, lineType: body.line_type_intelligence?.type ?? null }
    // 429 (20429, too many concurrent requests), 5xx, and auth an operator can fix: try again later.
    const retryable = res.statusCode === 429 || res.statusCode >= 500 || res.statusCode === 401 || res.statusCode === 403
    throw new ServiceError(`lookup: HTTP ${res.statusCode}${body.code ? ` (${body.code})` : ''}`, res.statusCode, retryable, retryAfter(header(res.headers, 'retry-after')))
  }

  close = () => this.agent.close()
}

export interface IssueItem {
  testType: string
  testDate?: string
  symptomDate?: string
  tzOffset: number
  phone: string
  uuid: string
}

export interface IssueAnswer {
  uuid?: string
  code?: string
  expiresAtTimestamp?: number
  error?: string
  errorCode?: string
}

export interface BatchAnswer {
  status: number
  /** Index i answers request item i; absent when the server answered no JSON (a 429's plain text). */
  items?: IssueAnswer[]
  retryAfter?: number
  /** X-RateLimit-*: codes left in the window, and when it ends (unix seconds). */
  rate?: { remaining: number; reset: number; limit?: number }
}

export class VerificationClient {
  private readonly agent = new Agent({ keepAliveTimeout: 30_000 })

  constructor(private readonly opts: { url: string; apiKey: string; timeoutMs: number }) {}

  async batchIssue(items: IssueItem[]): Promise<BatchAnswer> {
    const res = await send(this.agent, `${this.opts.url}/api/batch-issue`, this.opts.timeoutMs, {
      method: 'POST',
      headers: { 'x-api-key': this.opts.apiKey, 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ codes: items.map((i) => ({ ...i, smsTemplateLabel: 'default' })) }),
    })
    const remaining = seconds(header(res.headers, 'x-ratelimit-remaining'))
    const reset = instant(header(res.headers, 'x-ratelimit-reset'))
    const answer: BatchAnswer = {
      status: res.statusCode,
      retryAfter: retryAfter(header(res.headers, 'retry-after')),
      rate: remaining !== undefined && reset !== undefined
        ? { remaining, reset, limit: seconds(header(res.headers, 'x-ratelimit-limit')) } : undefined,
    }
    const text = await res.body.text()
    // A 429 answers in plain text; any other answer is JSON with one entry per item.
    try {
      const json = JSON.parse(text) as { codes?: IssueAnswer[] }
      if (Array.isArray(json.codes)) answer.items = json.codes
    } catch {
      /* plain text */
    }
    return answer
  }

  close = () => this.agent.close()
}
