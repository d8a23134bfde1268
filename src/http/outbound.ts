/**
 * Calling outside services over HTTP (undici): a timeout on every call, and one error type. A failure
 * that trying again may cure is a ServiceError with `retryable`; Retry-After is carried when the
 * service sent one.
 */
import { type Agent, request } from 'undici'

export class ServiceError extends Error {
  /**
   * `unsent`: the request never reached the service (no connection), so it surely did nothing; a
   * timeout or a connection lost later leaves that unknown.
   */
  constructor(message: string, readonly status: number, readonly retryable: boolean, readonly retryAfter?: number, readonly unsent = false) {
    super(message)
    this.name = 'ServiceError'
  }
}

export const header = (h: Record<string, string | string[] | undefined>, name: string) => {
  const v = h[name]
  return (Array.isArray(v) ? v[0] : v) ?? undefined
}
export const seconds = (v: string | undefined) => (v !== undefined && v !== '' && Number.isFinite(Number(v)) ? Number(v) : undefined)
/** A header that is seconds or an HTTP date (the real verification server sends dates), as a unix time in seconds. */
export const instant = (v: string | undefined) => {
  const n = seconds(v)
  if (n !== undefined) return n
  const at = v ? Date.parse(v) : NaN
  return Number.isNaN(at) ? undefined : at / 1000
}
/** Retry-After: seconds, or an HTTP date. */
export const retryAfter = (v: string | undefined) => {
  const n = seconds(v)
  if (n !== undefined) return n
  const at = instant(v)
  return at === undefined ? undefined : Math.max(0, Math.ceil(at - Date.now() / 1000))
}

const NOT_CONNECTED = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'UND_ERR_CONNECT_TIMEOUT'])

export async function send(agent: Agent, url: string, timeoutMs: number, init: { method: 'GET' | 'POST'; headers: Record<string, string>; body?: string }) {
  try {
    return await request(url, { ...init, dispatcher: agent, headersTimeout: timeoutMs, bodyTimeout: timeoutMs, signal: AbortSignal.timeout(timeoutMs) })
  } catch (err) {
    const e = err as Error & { code?: string; cause?: { code?: string } }
    const unsent = NOT_CONNECTED.has(e.code ?? e.cause?.code ?? '')
    throw new ServiceError(`${init.method} ${new URL(url).pathname}: ${e.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : e.message}`, 0, true, undefined, unsent)
  }
}

