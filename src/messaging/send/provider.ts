/**
 * One interface for every SMS provider. A send either returns the provider's id for the text, or
 * fails with what is known of it:
 *   recipient  the provider refused the number itself (invalid, not a mobile, opted out): no other
 *              provider will do better, the text fails for good;
 *   retry      the provider surely did not take it (no connection, 429, 5xx, a refused account):
 *              the next provider may be tried at once;
 *   unknown    it may have been taken (no answer in time): trying again could text twice, so the
 *              text waits for a receipt instead.
 */
import { ServiceError } from '../../http/outbound.ts'
import type { Failure } from './failure-reasons.ts'

export interface OutgoingSms {
  /** The notification id: the provider echoes it in receipts. */
  id: string
  to: string
  from: string
  body: string
  encoding: 'gsm' | 'ucs2'
}

export interface SmsProvider {
  readonly name: string
  send(sms: OutgoingSms): Promise<string>
  close(): Promise<void>
}

export class ProviderError extends Error {
  /** `failure`: why, in words a person can act on, and the provider's code (failure-reasons.ts). */
  constructor(message: string, readonly kind: 'recipient' | 'retry' | 'unknown', readonly status = 0, readonly failure: Failure | null = null) {
    super(message)
    this.name = 'ProviderError'
  }
}

/** A transport failure: unknown unless the request never left. */
export function transportError(provider: string, err: unknown): ProviderError {
  if (err instanceof ServiceError) return new ProviderError(`${provider}: ${err.message}`, err.unsent ? 'retry' : 'unknown')
  return new ProviderError(`${provider}: ${(err as Error).message}`, 'unknown')
}
