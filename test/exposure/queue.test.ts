/** Exposure on the work queue: the effect gate, stopping at a batch boundary, failing visibly, and trying again. */
import { setTimeout as sleep } from 'node:timers/promises'
import { describe, expect, it } from 'vitest'
import { retryNotices } from '../../src/cli/exposure.ts'
import type { Db } from '../../src/db/types.ts'
import { events, failedRows, retry } from '../../src/engine/queue.ts'
import { issueBatch } from '../../src/exposure/issue.ts'
import { claimNotices, record } from '../../src/exposure/notices.ts'
import { checkQueue, intakeQueue, issueQueue } from '../../src/exposure/queue.ts'
import { linkRows } from '../helpers/casesync.ts'
import { dueNow, exposureWorld, states } from '../helpers/exposure.ts'
import { row } from '../helpers/files.ts'
import { freshDbEachTest } from '../helpers/link.ts'

let db: Db
let dir: string
freshDbEachTest((d, x) => {
  db = d
  dir = x
})

let n = 0
const positive = (phone: string) => row(3, { PIDPATIENTKEY: `EXQ-${++n}`, PIDCOUNTYCODE: '1', PIDHOMEPHONE: phone })
const mobiles = (count: number, from: number) => Array.from({ length: count }, (_, i) => positive(`555012${String(from + i).padStart(4, '0')}`))
const live = () => new AbortController().signal

/** Aborts once `started()` says the first outside call is in flight. */
async function abortWhen(started: () => boolean, stop: AbortController) {
  while (!started()) await sleep(2)
  stop.abort()
}

describe('exposure on the work queue', () => {
  it('sends nothing to batch-issue for a notice whose lease another worker took; its new holder issues it, once', async () => {
    const w = await exposureWorld()
    await linkRows(db, dir, mobiles(2, 1000))
    const a = w.worker('A')
    await a.intake.step(db, live())
    expect(await a.check.step(db, live())).toEqual({ phone_checked: 2 })
    const cfg = w.config.exposure
    // A claims both, then stalls past its lease; B takes them over (the lost lease counts an attempt).
    const mine = await claimNotices(db, issueQueue, 'A', 10)
    expect(mine).toHaveLength(2)
    await db.query(`UPDATE exposure_notices SET claimed_until = now() - interval '1 second'`)
    const theirs = await claimNotices(db, issueQueue, 'B', 10)
    expect(theirs.map((x) => [x.id, x.attempts])).toEqual(mine.map((x) => [x.id, 1]))
    // A wakes up and goes on with its batch: the gate leaves both out, nothing reaches the server.
    expect(await issueBatch(db, mine, cfg, w.services.verification, 'A')).toEqual([])
    expect(w.enx.stats.requests).toBe(0)
    expect(await db.query(`SELECT DISTINCT claimed_by FROM exposure_notices`)).toEqual([{ claimed_by: 'B' }])
    expect(await record(db, issueQueue, 'B', await issueBatch(db, theirs, cfg, w.services.verification, 'B'))).toEqual({ issued: 2 })
    // A late outcome from A is not recorded over B's.
    expect(await record(db, issueQueue, 'A', [{ id: mine[0].id, failure: { error: 'no_answer' } }])).toEqual({ taken_over: 1 })
    expect(await states(db)).toEqual({ issued: 2 })
    expect(w.enx.ledger).toHaveLength(2)
  })

  it('sends nothing for a notice whose lease ran out, even if nobody took it yet', async () => {
    const w = await exposureWorld()
    await linkRows(db, dir, mobiles(1, 1100))
    const a = w.worker('A')
    await a.intake.step(db, live())
    await a.check.step(db, live())
    const mine = await claimNotices(db, issueQueue, 'A', 10)
    await db.query(`UPDATE exposure_notices SET claimed_until = now() - interval '1 second'`)
    expect(await issueBatch(db, mine, w.config.exposure, w.services.verification, 'A')).toEqual([])
    expect(w.enx.stats.requests).toBe(0)
    // Claimed again (the lost lease is an attempt), it goes out.
    expect(await a.issue.step(db, live())).toEqual({ issued: 1 })
    expect(await db.query(`SELECT attempts, claimed_by FROM exposure_notices`)).toEqual([{ attempts: 0, claimed_by: null }])
  })

  it('stops issuing at a batch boundary when told to, and gives back the notices not started', async () => {
    const w = await exposureWorld({ enx: { latencyMs: 300 }, env: { HERALD_ENX_CONCURRENCY: '1' } })
    await linkRows(db, dir, mobiles(20, 1200))
    const a = w.worker('A')
    await a.intake.step(db, live())
    expect(await a.check.step(db, live())).toEqual({ phone_checked: 20 })
    // Two batches claimed (one request at a time): the first is sent, the second given back.
    const stop = new AbortController()
    const [counts] = await Promise.all([a.issue.step(db, stop.signal), abortWhen(() => w.enx.stats.requests > 0, stop)])
    expect(counts).toEqual({ issued: 10, released: 10 })
    expect(w.enx.ledger).toHaveLength(10)
    expect(await db.query(`SELECT count(*)::int AS n FROM exposure_notices
      WHERE state = 'phone_checked' AND claimed_by IS NULL AND claimed_until IS NULL AND attempts = 0 AND retry_at IS NULL`)).toEqual([{ n: 10 }])
    // Due at once for any worker.
    expect(await w.worker('B').issue.step(db, live())).toEqual({ issued: 10 })
    expect([...w.enx.textedPerPhone().values()].every((k) => k === 1)).toBe(true)
  })

  it('stops the phone check when told to, and gives back the notices not started', async () => {
    const w = await exposureWorld({ lookup: { latencyMs: 300 }, env: { HERALD_LOOKUP_CONCURRENCY: '1' } })
    await linkRows(db, dir, mobiles(4, 1300))
    const a = w.worker('A')
    await a.intake.step(db, live())
    const stop = new AbortController()
    const [counts] = await Promise.all([a.check.step(db, stop.signal), abortWhen(() => w.lookup.stats.requests > 0, stop)])
    expect(counts).toEqual({ phone_checked: 1, released: 3 })
    expect(w.lookup.stats.requests).toBe(1)
    expect(await db.query(`SELECT state, count(*)::int AS n FROM exposure_notices WHERE claimed_by IS NULL GROUP BY 1 ORDER BY 1`))
      .toEqual([{ state: 'pending', n: 3 }, { state: 'phone_checked', n: 1 }])
  })

  it('starts no lookup its lease (as this worker sees it) may not outlast, and gives those notices back', async () => {
    // A lookup may take the whole timeout: with one as long as the lease, none can start in time.
    const w = await exposureWorld({ env: { HERALD_COMMCARE_TIMEOUT_MS: String(checkQueue.leaseSeconds * 1000) } })
    await linkRows(db, dir, mobiles(4, 1350))
    const a = w.worker('A')
    await a.intake.step(db, live())
    expect(await a.check.step(db, live())).toEqual({ released: 4 })
    expect(w.lookup.stats.requests).toBe(0)
    expect(await db.query(`SELECT state, count(*)::int AS n FROM exposure_notices WHERE claimed_by IS NULL AND attempts = 0 GROUP BY 1`))
      .toEqual([{ state: 'pending', n: 4 }])
  })

  it('backs off a mark that fails at intake while the others become notices, and fails it for good after its attempts', async () => {
    const w = await exposureWorld()
    await linkRows(db, dir, mobiles(3, 1400))
    const [bad] = await db.query(`SELECT min(lab_result_id)::text AS id FROM exposure_queue`)
    // A mark whose notice cannot be written (a stand-in for any fault of one mark).
    await db.exec(`CREATE FUNCTION exq_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.lab_result_id = ${Number(bad.id)} THEN RAISE EXCEPTION 'refused by test'; END IF; RETURN NEW; END $$;
      CREATE TRIGGER exq_refuse BEFORE INSERT ON exposure_notices FOR EACH ROW EXECUTE FUNCTION exq_refuse()`)
    try {
      const a = w.worker('A')
      expect(await a.intake.step(db, live())).toEqual({ opened: 2, retrying: 1 })
      expect(await db.query(`SELECT lab_result_id::text AS id, attempts, retry_at > now() AS waits, failed_at FROM exposure_queue`))
        .toEqual([{ id: bad.id, attempts: 1, waits: true, failed_at: null }])
      expect(await a.intake.step(db, live())).toEqual({}) // backing off: not due
      await db.query(`UPDATE exposure_queue SET attempts = 4, retry_at = now()`)
      expect(await a.intake.step(db, live())).toEqual({ failed: 1 })
      const failed = await failedRows(db, intakeQueue)
      expect(failed.map((f) => [f.id, f.attempts])).toEqual([[bad.id, 5]])
      expect(failed[0].error).toMatch(/P0001/) // the SQLSTATE, not the message
      expect((await events(db, intakeQueue, [bad.id])).map((e) => e.kind)).toEqual(['retrying', 'failed'])
    } finally {
      await db.exec(`DROP TRIGGER exq_refuse ON exposure_notices; DROP FUNCTION exq_refuse()`)
    }
    // `herald queue retry exposure-intake`: due again, and taken in.
    expect(await retry(db, intakeQueue)).toEqual([bad.id])
    expect(await w.worker('A').intake.step(db, live())).toEqual({ opened: 1 })
    expect(await db.query(`SELECT count(*)::int AS n FROM exposure_queue`)).toEqual([{ n: 0 }])
  })

  it('takes in a mark whose result is gone as ineligible, with the reason', async () => {
    const w = await exposureWorld()
    await db.query(`INSERT INTO exposure_queue (lab_result_id, person_id) VALUES (999999, 1)`)
    expect(await w.worker('A').intake.step(db, live())).toEqual({ ineligible: 1 })
    expect(await db.query(`SELECT kind, detail FROM exposure_events`)).toEqual([{ kind: 'ineligible', detail: { reason: 'no_result' } }])
  })

  it('ends a notice out of attempts or refused not sent and failed, and herald exposure retry brings it back', async () => {
    const w = await exposureWorld({ enx: { failures: { internal_server_error: 1 } } })
    await linkRows(db, dir, mobiles(2, 1500))
    expect(await w.run(db)).toMatchObject({ opened: 2, phone_checked: 2, retrying: 2 })
    const [first] = await db.query(`SELECT min(id)::text AS id FROM exposure_notices`)
    // One the server refuses for good (a test type it does not know); the other on its last attempt.
    await db.query(`UPDATE exposure_notices SET test_type = 'bogus' WHERE id = $1`, [first.id])
    await db.query(`UPDATE exposure_notices SET attempts = 11 WHERE id <> $1`, [first.id])
    await dueNow(db)
    expect(await w.run(db)).toEqual({ 'not_sent:refused': 1, 'not_sent:out_of_attempts': 1 })
    expect(await db.query(`SELECT reason, last_error, attempts, failed_at IS NOT NULL AS failed, retry_at FROM exposure_notices ORDER BY id`)).toEqual([
      { reason: 'refused', last_error: 'refused: invalid_test_type', attempts: 2, failed: true, retry_at: null },
      { reason: 'out_of_attempts', last_error: 'internal_server_error', attempts: 12, failed: true, retry_at: null },
    ])
    expect((await failedRows(db, issueQueue)).length).toBe(2)
    w.enx.knobs.failures.internal_server_error = 0
    expect(await retryNotices(db, 'out_of_attempts')).toBe(1)
    expect(await db.query(`SELECT state, reason, attempts, failed_at FROM exposure_notices WHERE id <> $1`, [first.id]))
      .toEqual([{ state: 'phone_checked', reason: null, attempts: 0, failed_at: null }])
    expect(await w.run(db)).toEqual({ issued: 1 })
    await db.query(`UPDATE exposure_notices SET test_type = 'confirmed' WHERE id = $1`, [first.id])
    expect(await retryNotices(db, 'refused')).toBe(1)
    expect(await w.run(db)).toEqual({ issued: 1 })
    expect(await states(db)).toEqual({ issued: 2 })
    expect((await events(db, issueQueue, [first.id])).map((e) => e.kind)).toEqual(['opened', 'phone_checked', 'retrying', 'failed', 'retry_requested', 'issued'])
    expect(w.enx.ledger).toHaveLength(2)
  })
})
