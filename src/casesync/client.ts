/**
 * CommCare HQ's API (v0.5), as case sync uses it: the county list, one case with its child cases,
 * search by external_id, changed cases page by page, and XForm submission to the receiver.
 * Every call has a timeout. Failures are CommCareError, which says whether trying again may help
 * and, for a 429, how long CommCare asked us to wait.
 *
 * Transport: undici's request() over a keep-alive agent rather than fetch(): at dozens of requests
 * in flight, fetch's web streams cost about half of case sync's CPU (measured: bench:casesync).
 */
import { Agent, request, errors } from 'undici'
import type { CommCareConfig } from '../config.ts'

/** A case as CommCare's case API answers it (fixtures/commcare/*.json). */
export interface CommCareCase {
  case_id: string
  domain?: string
  /** Absent from some answers (cases reached through a duplicate chain). */
  closed?: boolean
  date_closed?: string | null
  date_modified?: string
  server_date_modified: string
  server_date_opened?: string
  user_id?: string
  properties: Record<string, string | null>
  indices: Record<string, { case_id: string; case_type: string; relationship?: string }>
  child_cases?: Record<string, CommCareCase>
}

interface Page {
  meta: { next: string | null; total_count?: number }
  objects: CommCareCase[]
}

export class CommCareError extends Error {
  constructor(
    message: string,
    /** HTTP status; 0 when no answer came (network, timeout). */
    readonly status: number,
    /** Seconds a 429 asked us to wait. */
    readonly retryAfter?: number,
  ) {
    super(message)
    this.name = 'CommCareError'
  }

  get rateLimited() {
    return this.status === 429
  }

  /** No answer, a server error, a timeout, an auth problem an operator can fix: worth trying later. A form refused (400, 404, 422) is not. */
  get retryable() {
    return this.status === 0 || this.status >= 500 || [401, 403, 408, 409, 429].includes(this.status)
  }
}

/** Retry-After in seconds (CommCare sends seconds; an HTTP date is accepted too). */
function retryAfterSeconds(header: string | null): number | undefined {
  if (!header) return undefined
  const n = Number(header)
  if (Number.isFinite(n)) return Math.max(0, n)
  const at = Date.parse(header)
  return Number.isNaN(at) ? undefined : Math.max(0, (at - Date.now()) / 1000)
}

interface Answer {
  status: number
  headers: Record<string, string | string[] | undefined>
  text(): Promise<string>
  json(): Promise<unknown>
  discard(): Promise<void>
}

export class CommCareClient {
  private readonly auth: string
  private readonly agent: Agent

  constructor(private readonly config: Pick<CommCareConfig, 'user' | 'apiKey' | 'rootDomain' | 'timeoutMs'> & { url: string; connections?: number }) {
    this.auth = `ApiKey ${config.user}:${config.apiKey}`
    this.agent = new Agent({ connections: config.connections ?? null, keepAliveTimeout: 30_000 })
  }

  get baseUrl() {
    return this.config.url
  }

  async close() {
    await this.agent.close()
  }

  private async request(path: string, init: { method?: 'GET' | 'POST'; body?: string; contentType?: string } = {}): Promise<Answer> {
    const method = init.method ?? 'GET'
    const where = `${method} ${path.split('?')[0]}`
    const timeout = this.config.timeoutMs
    try {
      const res = await request(this.config.url + path, {
        // undici's own timeouts tick coarsely (about a second); the signal holds the exact limit.
        method, dispatcher: this.agent, body: init.body, headersTimeout: timeout, bodyTimeout: timeout, signal: AbortSignal.timeout(timeout),
        headers: { authorization: this.auth, accept: 'application/json', ...(init.contentType ? { 'content-type': init.contentType } : {}) },
      })
      return {
        status: res.statusCode, headers: res.headers,
        text: () => res.body.text(), json: () => res.body.json(), discard: () => res.body.dump(),
      }
    } catch (err) {
      const timedOut = err instanceof errors.HeadersTimeoutError || err instanceof errors.BodyTimeoutError || (err as Error).name === 'TimeoutError'
      throw new CommCareError(`CommCare ${where}: ${timedOut ? `no answer within ${timeout} ms` : (err as Error).message}`, 0)
    }
  }

  private async json<T>(path: string, allow404 = false): Promise<T | null> {
    const res = await this.request(path)
    if (res.status === 404 && allow404) {
      await res.discard()
      return null
    }
    if (res.status !== 200) throw await failure(res, `GET ${path.split('?')[0]}`)
    return (await res.json()) as T
  }

  async countyList(): Promise<unknown> {
    return this.json(`/a/${enc(this.config.rootDomain)}/api/v0.5/fixture/?fixture_type=county_list&limit=1000`)
  }

  /** One case with its child (and extension) cases; null when the domain has no such case. */
  async getCase(domain: string, caseId: string): Promise<CommCareCase | null> {
    return this.json<CommCareCase>(`/a/${enc(domain)}/api/v0.5/case/${enc(caseId)}/?format=json&child_cases__full=true`, true)
  }

  async findByExternalId(domain: string, externalId: string): Promise<CommCareCase[]> {
    const page = await this.json<Page>(`/a/${enc(domain)}/api/v0.5/case/?format=json&external_id=${enc(externalId)}&limit=100`)
    return page!.objects
  }

  /** Patient cases modified at or after `since`, a page at a time, following meta.next. */
  async *changedCases(domain: string, since: Date | null, limit = 100): AsyncGenerator<CommCareCase[]> {
    const base = `/a/${enc(domain)}/api/v0.5/case/`
    const query = new URLSearchParams({ format: 'json', type: 'patient', limit: String(limit) })
    if (since) query.set('server_date_modified_start', since.toISOString())
    let path: string | null = `${base}?${query}`
    while (path) {
      const page: Page = (await this.json<Page>(path))!
      yield page.objects
      // meta.next is a query string relative to the list's own address.
      path = page.meta.next ? base + (page.meta.next.startsWith('?') ? page.meta.next : `?${page.meta.next.split('?')[1] ?? ''}`) : null
    }
  }

  /** Posts an XForm to the domain's receiver; resolves when CommCare answered 201 submit_success. */
  async submitForm(domain: string, xml: string): Promise<void> {
    const res = await this.request(`/a/${enc(domain)}/receiver/`, { method: 'POST', body: xml, contentType: 'text/xml' })
    const text = await res.text()
    if (res.status === 201 && text.includes('submit_success')) return
    throw await failure(res, `POST /a/${domain}/receiver/`, text)
  }
}

const enc = encodeURIComponent
const header = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v) ?? null

async function failure(res: Answer, where: string, body?: string): Promise<CommCareError> {
  const text = body ?? (await res.text().catch(() => ''))
  // CommCare's OpenRosa answer names the problem in <message>; keep it short, it is stored with the job.
  const message = /<message[^>]*>([^<]*)<\/message>/.exec(text)?.[1]?.trim() || text.trim().slice(0, 200)
  return new CommCareError(`CommCare ${where}: HTTP ${res.status}${message ? ` ${message}` : ''}`, res.status, retryAfterSeconds(header(res.headers['retry-after'])))
}
