/**
 * The two services exposure talks to, on their wire formats (EXTERNAL_APIS.md sections 2 and 3):
 * Twilio Lookup v2 (line type of a number) and the verification server's batch-issue. Both over
 * undici with a timeout on every call. A failure that trying again may cure is a ServiceError with
 * `retryable`; Retry-After is carried when the service sent one.
 */
import { Agent } from 'undici'
import { header, instant, retryAfter, seconds, send, ServiceError } from '../http/outbound.ts'

export { ServiceError }

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
