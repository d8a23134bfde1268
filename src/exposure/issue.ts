/**
 * Issue: phone-checked notices go to the verification server's batch-issue, 10 to a request, each
 * with its keyed-hash uuid. Batches are not atomic, so each item's own answer decides its notice:
 * a code, or 409 uuid_already_exists (it was texted by an earlier try: issued, not texted again),
 * is issued; a quota or maintenance answer waits for the window without spending an attempt; a
 * server error is tried again with backoff (the same uuid makes that safe); a refusal ends the
 * notice not sent. A batch's outcomes are recorded in one transaction.
 */
import type { ExposureConfig } from '../config.ts'
import type { Db } from '../db/types.ts'
import { ServiceError, type IssueAnswer, type IssueItem, type VerificationClient } from './clients.ts'
import { tzOffsetMinutes } from './keys.ts'
import { backoff, MAX_ATTEMPTS, type Change, type Notice } from './notices.ts'
import { exhaustQuota, reportQuota, takeQuota } from './pacer.ts'

export const BATCH = 10

const WAIT = new Set(['quota_exceeded', 'maintenance_mode', 'sms_queue_full'])
const RETRY = new Set(['internal_server_error', 'sms_failure'])
const INVALID_PHONE = new Set(['phone_number_invalid', 'missing_phone'])

function item(n: Notice, timezone: string): IssueItem {
  const day = n.testDate ?? n.symptomDate!
  return {
    testType: n.testType, ...(n.testDate ? { testDate: n.testDate } : {}), ...(n.symptomDate ? { symptomDate: n.symptomDate } : {}),
    tzOffset: tzOffsetMinutes(timezone, day), phone: n.phoneE164!, uuid: n.uuid!,
  }
}

function retry(n: Notice, why: string, seconds: number, attempt: boolean): Change {
  if (attempt && n.attempts + 1 >= MAX_ATTEMPTS) {
    return { id: n.id, state: 'not_sent', reason: 'out_of_attempts', attempt, event: { kind: 'not_sent', detail: { reason: 'out_of_attempts', last: why } } }
  }
  return { id: n.id, state: 'phone_checked', reason: why, retryIn: seconds, attempt, event: { kind: 'retrying', detail: { step: 'issue', why } } }
}

function outcome(n: Notice, a: IssueAnswer | undefined, waitSeconds: number): Change {
  if (a && !a.errorCode && a.code) {
    return { id: n.id, state: 'issued', expiresAt: a.expiresAtTimestamp ? new Date(a.expiresAtTimestamp * 1000) : undefined, event: { kind: 'issued' } }
  }
  const code = a?.errorCode ?? 'no_answer'
  if (code === 'uuid_already_exists') return { id: n.id, state: 'issued', event: { kind: 'issued', detail: { already: true } } }
  if (WAIT.has(code)) return retry(n, code === 'quota_exceeded' ? 'quota' : code, waitSeconds, false)
  if (RETRY.has(code) || code === 'no_answer') return retry(n, code, backoff(n.attempts + 1), true)
  const reason = INVALID_PHONE.has(code) ? 'invalid' : 'refused'
  return { id: n.id, state: 'not_sent', reason, event: { kind: 'not_sent', detail: { reason, error_code: code } } }
}

/** One request of at most BATCH notices; returns their changes (to be recorded together). */
export async function issueBatch(db: Db, notices: Notice[], config: ExposureConfig, client: VerificationClient): Promise<Change[]> {
  const changes: Change[] = []
  const due: Notice[] = []
  for (const n of notices) {
    // A code is of use only while the test is recent: a notice held back by the quota for longer
    // than the look-back window ends here.
    if (n.reason === 'quota' && (Date.now() - Date.parse(n.createdAt)) / 86_400_000 > config.lookbackDays) {
      changes.push({ id: n.id, state: 'not_sent', reason: 'quota', event: { kind: 'not_sent', detail: { reason: 'quota' } } })
    } else due.push(n)
  }
  const { granted, waitSeconds } = await takeQuota(db, due.length)
  const send = due.slice(0, granted)
  for (const n of due.slice(granted)) changes.push(retry(n, 'quota', waitSeconds || 1, false))
  if (send.length === 0) return changes

  let answer
  try {
    answer = await client.batchIssue(send.map((n) => item(n, config.timezone)))
  } catch (err) {
    // No answer: some may have been texted; the same uuids make the retry safe.
    const why = err instanceof ServiceError ? 'no_answer' : 'error'
    return [...changes, ...send.map((n) => retry(n, why, backoff(n.attempts + 1), true))]
  }
  if (answer.rate) await reportQuota(db, answer.rate)
  if (!answer.items) {
    if (answer.status === 429) {
      const wait = answer.retryAfter ?? 1
      await exhaustQuota(db, wait)
      return [...changes, ...send.map((n) => retry(n, 'quota', wait, false))]
    }
    return [...changes, ...send.map((n) => retry(n, `http_${answer.status}`, backoff(n.attempts + 1), true))]
  }
  const resetWait = answer.rate ? Math.max(1, Math.ceil(answer.rate.reset - Date.now() / 1000)) : answer.retryAfter ?? 5
  send.forEach((n, i) => changes.push(outcome(n, answer.items![i], resetWait)))
  return changes
}
