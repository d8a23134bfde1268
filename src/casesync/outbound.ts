/**
 * Outbound case sync: every index case marked for sync (case_sync_queue) is posted to its county's
 * CommCare domain as one form, the patient case with its lab results.
 *
 * A case CommCare has never seen is created at once (one request). A case it may hold is fetched
 * first: an investigator may have transferred it or marked it a duplicate, and then its changes go
 * to the case at the end of that chain (resolve.ts), which becomes the origin's moved_to (where link
 * sends its later results). A job no post can be right for fails at once with an event saying why
 * and what to do: a cycle, a transfer whose destination is not found (unresolved_transfer), a case
 * Herald knows that CommCare no longer has (missing_in_commcare); `herald cases resolve` answers the
 * last two, and the chain then starts at the case the operator named.
 *
 * Requests run `concurrency` at a time, so the rate is set by CommCare's latency, not by Herald.
 * Jobs are claimed, retried with backoff and failed through the work queue (jobs.ts, queue.ts); a
 * 429 pauses every request of this worker for as long as CommCare asked, and spends no attempt.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { CommCareConfig } from '../config.ts'
import type { Db } from '../db/types.ts'
import type { Engine } from '../engine/engine.ts'
import { heartbeat } from '../engine/queue.ts'
import { readCounties, type CountyTable } from '../link/counties.ts'
import { errorText, type Logger } from '../log.ts'
import { CommCareError, type CommCareCase, type CommCareClient } from './client.ts'
import { claimJobs, failAttempt, failStuck, finishJobs, postponeJob, releaseJobs, type Job, type Posted } from './jobs.ts'
import { adoptDestination, loadCases, localDestinations, type SyncCase } from './cases.ts'
import { caseBlocks, type LocalCase } from './payload.ts'
import { resolveDestination, type Hop, type Resolution } from './resolve.ts'
import { outboundQueue } from './queue.ts'
import { buildForm, formMeta } from './xform.ts'

export interface OutboundOptions {
  client: CommCareClient
  commcare: Pick<CommCareConfig, 'user' | 'userId' | 'posting' | 'concurrency'>
  workerId: string
  log: Logger
}

/** A 429 without Retry-After waits this long. */
const DEFAULT_RETRY_AFTER = 5
/** A pause longer than this gives the claimed jobs back (with their retry time) rather than sleeping on them. */
const LONGEST_SLEEP_MS = 30_000

/** taken_over: the job's lease ran out and another worker holds it now; it posts and records, not us. */
type Outcome = 'posted' | 'redirected' | 'unchanged' | 'retrying' | 'failed' | 'cycle' | 'unresolved_transfer' | 'missing_in_commcare'
  | 'rate_limited' | 'taken_over'
interface Attempt {
  outcome: Outcome
  /** Set when CommCare accepted the post: recorded with others (finishJobs). */
  posted?: Posted
}

/** Jobs claimed at a time, per request slot: enough to keep every slot busy while the next claim runs. */
const CLAIM_PER_SLOT = 2
/** Posted jobs recorded per transaction. */
const RECORD_BATCH = 64
/** A round claims for at most this long, then reports its counts. */
const ROUND_MS = 10_000

export function outboundEngine(opts: OutboundOptions): Engine & { syncJob(db: Db, job: Job, c: SyncCase | undefined, counties: CountyTable): Promise<Outcome> } {
  const { client, commcare, log, workerId } = opts
  let pausedUntil = 0
  let warnedOff = false

  async function post(db: Db, job: Job, origin: SyncCase, counties: CountyTable): Promise<Attempt> {
    let target: LocalCase = origin
    let commcareCase: CommCareCase | null = null
    let chain: Hop[] = []
    let deadEnd: string | undefined
    if (origin.known || origin.resolvedTo) {
      const res = await resolveDestination(client, origin.resolvedTo ?? { domain: origin.domain!, caseId: origin.caseId },
        (fips) => counties.byFips.get(Number(fips))?.domain ?? undefined, (id) => localDestinations(db, id))
      if (res.kind !== 'found') return { outcome: await stuck(db, job, res) }
      commcareCase = res.commcare
      chain = res.chain
      deadEnd = res.deadEnd
      if (res.commcare.case_id !== origin.caseId) target = await adoptDestination(db, origin, res.domain, res.commcare, counties)
    }
    const blocks = caseBlocks(target, commcareCase)
    if (blocks.length > 0) {
      // The effect gate: this job's lease may have run out while CommCare was slow (a chain to resolve,
      // a 429 pause) and another worker may hold it now; that worker posts it, we must not. heartbeat()
      // checks the claim is still ours and extends it in one statement (a takeover after it would need
      // the new lease to run out too), so the form goes out only under our live claim.
      const ours = await heartbeat(db, outboundQueue, workerId, [job.indexCaseId])
      if (!ours.has(job.indexCaseId)) return { outcome: 'taken_over' }
      await client.submitForm(target.domain!, buildForm(blocks, formMeta(commcare)))
    }
    const redirected = target !== origin
    const events: Posted['events'] = []
    if (redirected) {
      events.push([origin.id, 'redirected', { to_case: target.caseId, domain: target.domain, chain: chain.map((h) => `${h.domain}/${h.caseId}`), dead_end: deadEnd }])
    }
    events.push([target.id, 'posted', {
      domain: target.domain, case_id: target.caseId, created: !commcareCase, blocks: blocks.length,
      ...(redirected ? { from_case: origin.caseId } : {}), ...(deadEnd && !redirected ? { dead_end: deadEnd } : {}),
    }])
    return { outcome: redirected ? 'redirected' : blocks.length > 0 ? 'posted' : 'unchanged', posted: { job, targetId: target.id, events } }
  }

  /** A chain no post can be right for: the job fails at once, with an event that says why and what to do. */
  async function stuck(db: Db, job: Job, res: Exclude<Resolution, { kind: 'found' }>): Promise<Outcome> {
    const n = job.indexCaseId
    if (res.kind === 'absent') {
      log.warn({ indexCase: n, domain: res.domain }, 'case sync: CommCare no longer has a case Herald knows')
      return failStuck(db, workerId, job, 'missing_in_commcare',
        `CommCare no longer has case ${res.caseId} in domain ${res.domain}: \`herald cases resolve ${n} --to CASE_ID\` names the case ` +
        `that replaced it, or \`herald cases resolve ${n} --recreate\` posts it again as a new case`,
        { domain: res.domain, case_id: res.caseId })
    }
    const chain = res.chain.map((h) => `${h.domain}/${h.caseId}`)
    if (res.kind === 'cycle') {
      log.warn({ indexCase: n, hops: res.chain.length }, 'case sync found a transfer/duplicate cycle')
      return failStuck(db, workerId, job, 'cycle', 'transfer or duplicate cycle in CommCare', { chain })
    }
    const last = res.chain.at(-1)!
    const where = res.toDomain ?? `county ${res.toCounty}'s domain`
    log.warn({ indexCase: n, hops: res.chain.length, why: res.why }, 'case sync: a transfer\'s destination was not found')
    return failStuck(db, workerId, job, 'unresolved_transfer',
      `unresolved transfer: case ${last.caseId} in ${last.domain} was transferred to county ${res.toCounty} (${res.toDomain ?? 'no domain'}): ` +
      `${res.why}; find the person's case in ${where} and run \`herald cases resolve ${n} --to CASE_ID${res.toDomain ? '' : ' --domain DOMAIN'}\``,
      { chain, why: res.why, to_county: res.toCounty, to_domain: res.toDomain ?? null, search_results: res.searchResults ?? null })
  }

  async function attempt(db: Db, job: Job, c: SyncCase | undefined, counties: CountyTable): Promise<Attempt> {
    if (!c?.domain) {
      return { outcome: await failAttempt(db, workerId, job, c ? `county ${c.countyFips} has no CommCare domain` : 'the case no longer exists', true) }
    }
    try {
      return await post(db, job, c, counties)
    } catch (err) {
      if (err instanceof CommCareError && err.rateLimited) {
        const seconds = err.retryAfter ?? DEFAULT_RETRY_AFTER
        pausedUntil = Math.max(pausedUntil, Date.now() + seconds * 1000)
        await postponeJob(db, workerId, job, seconds, err.message)
        return { outcome: 'rate_limited' }
      }
      const retryable = err instanceof CommCareError ? err.retryable : !(err instanceof TypeError)
      const outcome = await failAttempt(db, workerId, job, errorText(err), !retryable)
      // Only the status: CommCare's message may quote a value.
      log.warn({ indexCase: job.indexCaseId, status: (err as CommCareError).status, attempts: job.attempts + 1, outcome }, 'case sync attempt failed')
      return { outcome }
    }
  }

  /** One job, recorded at once (tests; the engine records posted jobs in batches). */
  async function syncJob(db: Db, job: Job, c: SyncCase | undefined, counties: CountyTable): Promise<Outcome> {
    const r = await attempt(db, job, c, counties)
    if (r.posted) await finishJobs(db, workerId, [r.posted])
    return r.outcome
  }

  /**
   * A round: `concurrency` workers take jobs from a local queue that is topped up by a new claim
   * whenever it runs low, so requests stay in flight without a pause between claims; posted jobs
   * are recorded RECORD_BATCH at a time, in the background.
   */
  async function round(db: Db, signal: AbortSignal): Promise<Record<string, number>> {
    const counties = await readCounties(db)
    const started = Date.now()
    const queue: { job: Job; c: SyncCase | undefined }[] = []
    let exhausted = false
    let refilling: Promise<void> | undefined
    let failure: unknown
    const refill = async () => {
      try {
        if (signal.aborted || Date.now() - started > ROUND_MS) return void (exhausted = true)
        const jobs = await claimJobs(db, workerId, commcare.concurrency * CLAIM_PER_SLOT)
        if (jobs.length === 0) return void (exhausted = true)
        const cases = await loadCases(db, jobs.map((j) => j.indexCaseId))
        for (const job of jobs) queue.push({ job, c: cases.get(job.indexCaseId) })
      } catch (err) {
        failure ??= err
        exhausted = true
      }
    }
    const take = async () => {
      for (;;) {
        if (signal.aborted) return undefined
        if (!exhausted && !refilling && queue.length <= commcare.concurrency) refilling = refill().finally(() => (refilling = undefined))
        if (queue.length > 0) return queue.shift()
        if (!refilling) return undefined
        await refilling
      }
    }

    const toRecord: Posted[] = []
    let recording = Promise.resolve()
    const record = () => {
      const batch = toRecord.splice(0)
      // Unrecorded posts keep their lease and are posted again after it: harmless (same case ids).
      if (batch.length > 0) recording = recording.then(() => finishJobs(db, workerId, batch)).catch((err) => void (failure ??= err))
    }

    const counts: Record<string, number> = {}
    const worker = async () => {
      for (let item = await take(); item; item = await take()) {
        const wait = pausedUntil - Date.now()
        let r: Attempt
        if (wait > LONGEST_SLEEP_MS) {
          await postponeJob(db, workerId, item.job, Math.ceil(wait / 1000), 'waiting out a 429 from CommCare')
          r = { outcome: 'rate_limited' }
        } else {
          if (wait > 0) await sleep(wait, undefined, { signal }).catch(() => {})
          // Stopped while waiting out a 429: the job is not started, it goes back with the rest.
          if (signal.aborted) return void queue.push(item)
          r = await attempt(db, item.job, item.c, counties)
        }
        if (r.posted && toRecord.push(r.posted) >= RECORD_BATCH) record()
        counts[r.outcome] = (counts[r.outcome] ?? 0) + 1
      }
    }
    await Promise.all(Array.from({ length: commcare.concurrency }, worker))
    await refilling
    record()
    await recording
    await releaseJobs(db, workerId, queue.splice(0).map((i) => i.job))
    if (failure) throw failure
    return counts
  }

  return {
    name: 'casesync-out',
    batchSize: commcare.concurrency * CLAIM_PER_SLOT,
    syncJob,
    async step(db, signal) {
      if (!commcare.posting) {
        if (!warnedOff) log.warn('case sync posting is off (HERALD_COMMCARE_POSTING=off): cases wait in case_sync_queue')
        warnedOff = true
        return {}
      }
      const started = Date.now()
      const counts = await round(db, signal)
      if (Object.keys(counts).length > 0) log.info({ ...counts, ms: Date.now() - started }, 'case sync round')
      return counts
    },
  }
}
