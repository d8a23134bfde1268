/**
 * Outbound case sync: every index case marked for sync (case_sync_queue) is posted to its county's
 * CommCare domain as one form, the patient case with its lab results.
 *
 * A case CommCare has never seen is created at once (one request). A case it may hold is fetched
 * first: an investigator may have transferred it or marked it a duplicate, and then its changes go
 * to the case at the end of that chain (resolve.ts). Requests run `concurrency` at a time, so the
 * rate is set by CommCare's latency, not by Herald. Jobs are claimed, retried with backoff and failed
 * through the work queue (jobs.ts, queue.ts); a 429 pauses every request of this worker for as long
 * as CommCare asked, and spends no attempt.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { CommCareConfig } from '../config.ts'
import type { Db } from '../db/types.ts'
import type { Engine } from '../engine/engine.ts'
import { heartbeat } from '../engine/queue.ts'
import { countyOfDomain, readCounties, type CountyTable } from '../link/counties.ts'
import { errorText, type Logger } from '../log.ts'
import { CommCareError, type CommCareCase, type CommCareClient } from './client.ts'
import { claimJobs, failAttempt, failCycle, finishJobs, postponeJob, releaseJobs, type Job, type Posted } from './jobs.ts'
import { insertCaseFrom } from './inbound.ts'
import { caseBlocks, type LocalCase } from './payload.ts'
import { resolveDestination, type Hop } from './resolve.ts'
import { outboundQueue } from './queue.ts'
import { buildForm } from './xform.ts'

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

export async function loadCases(db: Db, ids: string[]): Promise<Map<string, LocalCase>> {
  const rows = await db.query(
    `SELECT c.id::text, c.case_id, c.person_id::text, c.county_fips, co.domain, co.location_id, c.data,
            (c.synced_at IS NOT NULL OR c.commcare_modified_at IS NOT NULL) AS known
     FROM index_cases c JOIN counties co ON co.fips = c.county_fips WHERE c.id = ANY($1::bigint[])`, [ids])
  const cases = new Map<string, LocalCase>(rows.map((r) => [r.id, {
    id: r.id, caseId: r.case_id, personId: r.person_id, countyFips: r.county_fips, domain: r.domain,
    locationId: r.location_id, data: r.data, known: r.known, results: [],
  }]))
  const results = await db.query(
    `SELECT index_case_id::text, accession_number, data FROM lab_results WHERE index_case_id = ANY($1::bigint[]) ORDER BY id`, [ids])
  for (const r of results) cases.get(r.index_case_id)?.results.push({ accession: r.accession_number, data: r.data })
  return cases
}

/**
 * The case at the end of a transfer or duplicate chain, as a local case: found by its case_id, or
 * created for the same person in the destination's county, with the origin's lab results carried
 * over by accession number. Repeatable: a second run finds what the first created.
 */
async function adoptDestination(db: Db, origin: LocalCase, domain: string, commcare: CommCareCase, counties: CountyTable): Promise<LocalCase> {
  const county = countyOfDomain(counties, domain)
  if (!county) throw new Error(`the chain ends in domain ${domain}, which is no county's`)
  const id = await db.transaction(async (tx) => {
    const dest = await insertCaseFrom(tx, commcare, origin.personId, county.fips)
    await tx.query(
      `INSERT INTO lab_results (index_case_id, accession_number, lab_row_id, positive, tested_on, data)
       SELECT $1, accession_number, lab_row_id, positive, tested_on, data || jsonb_build_object('owner_id', $3::text)
       FROM lab_results WHERE index_case_id = $2
       ON CONFLICT (index_case_id, accession_number) DO NOTHING`, [dest, origin.id, county.locationId ?? ''])
    return dest
  })
  return (await loadCases(db, [id])).get(id)!
}

/** taken_over: the job's lease ran out and another worker holds it now; it posts and records, not us. */
type Outcome = 'posted' | 'redirected' | 'unchanged' | 'retrying' | 'failed' | 'cycle' | 'rate_limited' | 'taken_over'
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

export function outboundEngine(opts: OutboundOptions): Engine & { syncJob(db: Db, job: Job, c: LocalCase | undefined, counties: CountyTable): Promise<Outcome> } {
  const { client, commcare, log, workerId } = opts
  let pausedUntil = 0
  let warnedOff = false

  async function post(db: Db, job: Job, origin: LocalCase, counties: CountyTable): Promise<Attempt> {
    let target = origin
    let commcareCase: CommCareCase | null = null
    let chain: Hop[] = []
    let deadEnd: string | undefined
    if (origin.known) {
      const res = await resolveDestination(client, { domain: origin.domain!, caseId: origin.caseId },
        (fips) => counties.byFips.get(Number(fips))?.domain ?? undefined)
      if (res.kind === 'cycle') {
        const outcome = await failCycle(db, workerId, job, res.chain.map((h) => `${h.domain}/${h.caseId}`))
        log.warn({ indexCase: job.indexCaseId, hops: res.chain.length }, 'case sync found a transfer/duplicate cycle')
        return { outcome }
      }
      if (res.kind === 'found') {
        commcareCase = res.commcare
        chain = res.chain
        deadEnd = res.deadEnd
        if (res.commcare.case_id !== origin.caseId) target = await adoptDestination(db, origin, res.domain, res.commcare, counties)
      }
    }
    const blocks = caseBlocks(target, commcareCase)
    if (blocks.length > 0) {
      // The effect gate: this job's lease may have run out while CommCare was slow (a chain to resolve,
      // a 429 pause) and another worker may hold it now; that worker posts it, we must not. heartbeat()
      // checks the claim is still ours and extends it in one statement (a takeover after it would need
      // the new lease to run out too), so the form goes out only under our live claim.
      const ours = await heartbeat(db, outboundQueue, workerId, [job.indexCaseId])
      if (!ours.has(job.indexCaseId)) return { outcome: 'taken_over' }
      await client.submitForm(target.domain!, buildForm(blocks, { userId: commcare.userId, username: commcare.user }))
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

  async function attempt(db: Db, job: Job, c: LocalCase | undefined, counties: CountyTable): Promise<Attempt> {
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
  async function syncJob(db: Db, job: Job, c: LocalCase | undefined, counties: CountyTable): Promise<Outcome> {
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
    const queue: { job: Job; c: LocalCase | undefined }[] = []
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
