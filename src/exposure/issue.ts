/**
 * Issue: phone-checked notices go to the verification server's batch-issue, 10 to a request, each
 * with its keyed-hash uuid. Batches are not atomic, so each item's own answer decides its notice:
 * a code, or 409 uuid_already_exists (it was texted by an earlier try: issued, not texted again),
 * is issued; a quota or maintenance answer waits for the window without spending an attempt; a
 * server error is tried again with issueQueue's backoff (the same uuid makes that safe); an invalid
 * number ends the notice not sent, as does one opted out (STOP) since its phone check, and any
 * other refusal fails it for good (not sent, `refused`, visible in `herald queue failed exposure-issue`). A batch's outcomes are recorded in one transaction.
 */
import type { ExposureConfig } from '../config.ts'
import type { Db } from '../db/types.ts'
import { hold } from '../engine/queue.ts'
import { ServiceError, type IssueAnswer, type IssueItem, type VerificationClient } from './clients.ts'
import { optedOutNotice } from './check.ts'
import { tzOffsetMinutes, type ExposureKeys } from './keys.ts'
import { optedOutAnywhere } from '../messaging/inbound/optouts.ts'
import type { Change, Notice } from './notices.ts'
import { exhaustQuota, reportQuota, takeQuota } from './pacer.ts'
import { issueQueue } from './queue.ts'

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

/** Tried again: after issueQueue's backoff (an attempt), or after `waitSeconds` without spending one (quota, maintenance). */
function retry(n: Notice, why: string, waitSeconds?: number): Change {
  return { id: n.id, failure: { error: why, postponeSeconds: waitSeconds, detail: { step: 'issue', why } } }
}

function outcome(n: Notice, a: IssueAnswer | undefined, waitSeconds: number): Change {
  if (a && !a.errorCode && a.code) {
    return { id: n.id, state: 'issued', expiresAt: a.expiresAtTimestamp ? new Date(a.expiresAtTimestamp * 1000) : undefined, event: { kind: 'issued' } }
  }
  const code = a?.errorCode ?? 'no_answer'
  if (code === 'uuid_already_exists') return { id: n.id, state: 'issued', event: { kind: 'issued', detail: { already: true } } }
  if (WAIT.has(code)) return retry(n, code === 'quota_exceeded' ? 'quota' : code, waitSeconds)
  if (RETRY.has(code) || code === 'no_answer') return retry(n, code)
  if (INVALID_PHONE.has(code)) return { id: n.id, state: 'not_sent', reason: 'invalid', event: { kind: 'not_sent', detail: { reason: 'invalid', error_code: code } } }
  return { id: n.id, failure: { error: `refused: ${code}`, permanent: true, detail: { reason: 'refused', error_code: code } } }
}

/**
 * One request of at most BATCH notices claimed by `worker`; returns their changes (to be recorded
 * together). A notice whose claim the worker no longer holds is left out, unsent and unrecorded.
 */
export async function issueBatch(db: Db, notices: Notice[], config: ExposureConfig, client: VerificationClient, worker: string,
  keys?: ExposureKeys): Promise<Change[]> {
  const changes: Change[] = []
  const due: Notice[] = []
  // Opted out (STOP) after its phone check: not sent.
  const optedOut = keys ? await optedOutAnywhere(db, notices.filter((n) => n.phoneE164).map((n) => keys.optOutHash(n.phoneE164!))) : new Set<string>()
  for (const n of notices) {
    if (keys && n.phoneE164 && optedOut.has(keys.optOutHash(n.phoneE164).toString('hex'))) {
      changes.push(optedOutNotice(n))
      continue
    }
    // A code is of use only while the test is recent: a notice held back by the quota for longer
    // than the look-back window ends here.
    if (n.lastError === 'quota' && (Date.now() - Date.parse(n.createdAt)) / 86_400_000 > config.lookbackDays) {
      changes.push({ id: n.id, state: 'not_sent', reason: 'quota', event: { kind: 'not_sent', detail: { reason: 'quota' } } })
    } else due.push(n)
  }
  // The effect gate: a code is texted only for a notice this worker still holds with a live lease,
  // checked in the statement that renews the lease for the request (so the request, shorter than a
  // lease, ends before anyone else may claim the notice). A notice another worker took over after
  // our lease ran out is left out here: without this, both would send it. The server's uuid
  // idempotency (409) would still stop a second code; the gate keeps the rule without relying on it.
  const held = await hold(db, issueQueue, worker, due.map((n) => n.id),
    'claimed_until = now() + make_interval(secs => $3), updated_at = now()', [issueQueue.leaseSeconds])
  const mine = due.filter((n) => held.has(n.id))
  const { granted, waitSeconds } = mine.length > 0 ? await takeQuota(db, mine.length) : { granted: 0, waitSeconds: 0 }
  const send = mine.slice(0, granted)
  for (const n of mine.slice(granted)) changes.push(retry(n, 'quota', waitSeconds || 1))
  if (send.length === 0) return changes

  let answer
  try {
    answer = await client.batchIssue(send.map((n) => item(n, config.timezone)))
  } catch (err) {
    // No answer: some may have been texted; the same uuids make the retry safe.
    const why = err instanceof ServiceError ? 'no_answer' : 'error'
    return [...changes, ...send.map((n) => retry(n, why))]
  }
  if (answer.rate) await reportQuota(db, answer.rate)
  if (!answer.items) {
    if (answer.status === 429) {
      const wait = answer.retryAfter ?? 1
      await exhaustQuota(db, wait)
      return [...changes, ...send.map((n) => retry(n, 'quota', wait))]
    }
    return [...changes, ...send.map((n) => retry(n, `http_${answer.status}`))]
  }
  const resetWait = answer.rate ? Math.max(1, Math.ceil(answer.rate.reset - Date.now() / 1000)) : answer.retryAfter ?? 5
  send.forEach((n, i) => changes.push(outcome(n, answer.items![i], resetWait)))
  return changes
}
