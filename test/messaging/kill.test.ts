/**
 * The crash test of messaging: two `herald run --engines send,jobs,receipts` workers at once, one of
 * them SIGKILLed at a random moment, 50 times, and started again, while texts arrive through the API
 * and in bulk jobs and go to two SMS sandboxes (Twilio's and Vonage's APIs), whose receipts come back
 * to Herald's receipt routes. The ledgers must show no text handed over twice; every notification
 * must end final, or `sending` with its reason; every job row must be made once. The seed is printed
 * (HERALD_KILL_SEED=N replays its choices; process timing still varies).
 * PostgreSQL only: PGlite keeps its database inside the process that was killed.
 */
import { afterAll, describe, expect, it, onTestFinished } from 'vitest'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { startSmsSandbox, type SmsLedgerEntry } from '../../src/sandbox/sms/server.ts'
import { mulberry32 } from '../../src/sandbox/random.ts'
import { onPostgres } from '../helpers/db.ts'
import { SECRET } from '../helpers/exposure.ts'
import { tempDir } from '../helpers/files.ts'
import { BIN, Worker, freePort, killSeed, receiptServer, settled, sleep } from '../helpers/kill.ts'
import { callApi, jobStore, messagingWorld } from '../helpers/messaging.ts'

const run = promisify(execFile)
const KILLS = 50
const ARRIVING = 30 // work keeps arriving while the first kills land
// Past this, kills may land while a worker is still starting (seconds on a busy machine), so the test ends in time.
const PATIENCE_MS = 100_000
const ENGINES = ['run', '--engines', 'send,jobs,receipts']
const FINAL = ['delivered', 'permanent-failure', 'temporary-failure', 'technical-failure', 'validation-failed', 'cancelled']
// What a notification handed to a provider may be: on its way, or told by a receipt.
const HANDED = ['sending', 'pending', 'delivered', 'permanent-failure', 'temporary-failure']
const tmp = tempDir()
afterAll(() => tmp.cleanup())

/** One text the test asked for: its token (in the body, `Ref K12.`), the number's digits, and where its row is. */
interface Text { token: string; digits: string; test: boolean; id?: string; job?: string; row?: number }

describe.runIf(onPostgres)('messaging engines killed at random moments, two workers (PostgreSQL)', () => {
  const w = messagingWorld()

  it('hands no text over twice, ends every notification final or sending with a reason, makes every job row once', { timeout: 300_000 }, async () => {
    const began = Date.now()
    const { seed, random } = killSeed('messaging kill test')
    const pick = <T>(xs: T[]) => xs[Math.floor(random() * xs.length)]
    const db = w.t.db
    const twilio = await startSmsSandbox({ provider: 'twilio', accountSid: 'ACtest', authToken: 'token', latencyMs: 20 + Math.floor(random() * 31),
      failureRate: 0.05, seed: seed ^ 1 })
    const vonage = await startSmsSandbox({ provider: 'vonage', apiKey: 'vk', apiSecret: 'vs', latencyMs: 20 + Math.floor(random() * 31),
      rateLimitRate: 0.05, seed: seed ^ 2 })
    const receipts = await receiptServer(db, SECRET, 'token')
    onTestFinished(() => Promise.all([twilio.close(), vonage.close(), receipts.close()]).then(() => {}))
    const outside = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HERALD_')))
    const env = { ...outside, DATABASE_URL: w.t.url, HERALD_SECRET_KEY: SECRET, HERALD_FROM_SOURCE: '1', HERALD_LOG_LEVEL: 'silent', HERALD_POLL_INTERVAL_MS: '100',
      HERALD_SMS_PROVIDERS: 'twilio,vonage', HERALD_TWILIO_URL: twilio.url, HERALD_TWILIO_ACCOUNT_SID: 'ACtest', HERALD_TWILIO_AUTH_TOKEN: 'token',
      HERALD_VONAGE_URL: vonage.url, HERALD_VONAGE_API_KEY: 'vk', HERALD_VONAGE_API_SECRET: 'vs', HERALD_PUBLIC_URL: receipts.url,
      HERALD_SEND_CONCURRENCY: '8', HERALD_JOB_STORE: jobStore, HERALD_PHONE_REGION: 'US',
      HERALD_DATA_DIR: join(tmp.dir, '.herald'), HERALD_INBOX: join(tmp.dir, 'inbox') }

    // Texts arrive beside the kills, drawn from a generator of their own (the two loops interleave).
    const draw = mulberry32(seed ^ 0xa77)
    // Each text has its own number; its last four pick its fate at the sandbox (README): mostly
    // delivered, some failing for good or for now, without a final receipt, refused, or unknown.
    const texts: Text[] = []
    const newText = (test = false, at: Partial<Text> = {}): Text & { phone: string } => {
      const k = texts.length
      const r = draw()
      const fate = r < 0.03 ? 70 : r < 0.06 ? 71 : r < 0.08 ? 72 : r < 0.1 ? 73 : r < 0.11 ? 75 : 10 + (k % 60)
      const phone = `+1 212 ${201 + Math.floor(k / 100)} ${fate}${String(k % 100).padStart(2, '0')}`
      const t = { token: `K${k}`, digits: phone.replace(/\D/g, ''), test, ...at }
      texts.push(t)
      return { ...t, phone }
    }
    const byApi = async (n: number) => Promise.all(Array.from({ length: n }, async () => {
      const t = newText(draw() < 0.05)
      const res = await callApi(w, 'POST', '/v2/notifications/sms', { phone_number: t.phone, template_id: w.template.id,
        personalisation: { name: 'Ada', ref: t.token } }, t.test ? w.keys.test : w.keys.normal)
      expect(res.status, await res.clone().text()).toBe(201)
      texts[Number(t.token.slice(1))].id = ((await res.json()) as { id: string }).id
    }))
    const jobs: string[] = []
    let cancelled: string | undefined
    const byJob = async (n: number, cancel: boolean) => {
      const rows = Array.from({ length: n }, (_, i) => newText(false, { row: i + 2 }))
      const csv = ['phone number,name,ref', ...rows.map((t) => `${t.phone},Ada,${t.token}`)].join('\n')
      const res = await callApi(w, 'POST', '/v2/jobs', { template_id: w.template.id, csv, filename: 'kill.csv' })
      expect(res.status, await res.clone().text()).toBe(201)
      const job = ((await res.json()) as { id: string }).id
      for (const t of rows) texts[Number(t.token.slice(1))].job = job
      jobs.push(job)
      if (cancel) {
        await sleep(draw() * 300)
        if ((await callApi(w, 'POST', `/v2/jobs/${job}/cancel`)).status === 200) cancelled = job
      }
    }
    let arriving = true
    const feeding = (async () => {
      for (let n = 0; arriving && n < 120; n++) {
        await byApi(2 + Math.floor(draw() * 6))
        if (n % 30 === 5) await byJob(200 + Math.floor(draw() * 200), n === 35)
        await sleep(100 + draw() * 200)
      }
    })()
    feeding.catch(() => {}) // awaited below, where its failure is reported

    const workers = [new Worker('a', ENGINES, env, await freePort()), new Worker('b', ENGINES, env, await freePort())]
    for (const x of workers) x.start()
    onTestFinished(() => workers.forEach((x) => x.stop()))
    const killed = new Set<string>()
    let interrupted = 0
    let running = 0
    let lapsed = 0
    for (let i = 0; i < KILLS; i++) {
      if (i === ARRIVING) {
        arriving = false
        await feeding
      }
      // A worker running its engines, at a random moment; or, short of time, either worker at any moment.
      const patient = Date.now() - began < PATIENCE_MS
      if (patient && !workers.some((x) => x.running())) await Promise.race(workers.map((x) => x.ready()))
      const victim = pick(patient ? workers.filter((x) => x.running()) : workers)
      // Now and then, before the kill, every lease runs out at once, as a stalled worker's would:
      // the other worker may claim texts and a job that their holder is still working on. Only the
      // holder of a live claim may hand a text over or write a batch.
      const wait = random() * 1000
      const lapseAt = random() < 0.4 ? random() * wait : -1
      if (lapseAt >= 0) {
        await sleep(lapseAt)
        for (const table of ['notifications', 'jobs']) {
          await db.query(`UPDATE ${table} SET claimed_until = now() - interval '1 second' WHERE claimed_until > now()`)
        }
        lapsed++
      }
      await sleep(wait - Math.max(0, lapseAt))
      if (victim.running()) running++
      const id = await victim.kill()
      killed.add(id)
      const [held] = await db.query(`SELECT (SELECT count(*) FROM notifications WHERE claimed_by = $1)::int
        + (SELECT count(*) FROM jobs WHERE claimed_by = $1 AND status = 'in progress')::int AS n`, [id])
      if (held.n > 0) interrupted++
      // Its leases would run out in time; the other worker may take its work now.
      for (const table of ['notifications', 'jobs']) {
        await db.query(`UPDATE ${table} SET claimed_until = now() - interval '1 second' WHERE claimed_by = $1 AND claimed_until > now()`, [id])
      }
      victim.start()
    }
    for (const x of workers) killed.add(await x.kill())
    const killing = Date.now()

    // The drain: no more injected failures; every lease out, every backoff due, until nothing is left.
    Object.assign(twilio.knobs, { failureRate: 0 })
    Object.assign(vonage.knobs, { rateLimitRate: 0 })
    const callbacks = () => twilio.stats.callbacksSent + twilio.stats.callbacksFailed + vonage.stats.callbacksSent + vonage.stats.callbacksFailed
    const unfinished = async () => (await db.query(`SELECT (SELECT count(*) FROM notifications WHERE status = 'created')::int
      + (SELECT count(*) FROM jobs WHERE status IN ('scheduled', 'pending', 'in progress'))::int
      + (SELECT count(*) FROM sms_receipts WHERE failed_at IS NULL)::int AS n`))[0].n
    const jobsFailed: { last_error: string }[] = []
    for (let round = 0; round < 8; round++) {
      await settled(callbacks)
      // A job whose holder was killed (or lost its lease) at each of its attempts has failed for good,
      // as the queue's rule says; the operator's `herald queue retry jobs` resumes it from its checkpoint.
      const failed = await db.query(`SELECT last_error FROM jobs WHERE failed_at IS NOT NULL`)
      if (failed.length) await run(process.execPath, [BIN, 'queue', 'retry', 'jobs'], { env, timeout: 60_000 })
      jobsFailed.push(...(failed as { last_error: string }[]))
      if (failed.length === 0 && (await unfinished()) === 0) break
      for (const table of ['notifications', 'jobs', 'sms_receipts']) {
        await db.query(`UPDATE ${table} SET claimed_until = now() - interval '1 second' WHERE claimed_until > now()`)
        await db.query(`UPDATE ${table} SET retry_at = now() WHERE retry_at > now() AND failed_at IS NULL`)
      }
      await run(process.execPath, [BIN, ...ENGINES, '--until-idle'], { env: { ...env, HERALD_WORKER_ID: `drain-${round}` }, timeout: 60_000 })
    }
    await settled(callbacks)

    const rows = await db.query(`SELECT id::text, job_id::text AS job, job_row, key_type, status, provider, provider_ref, sent_at IS NOT NULL AS sent,
      attempts, claimed_by, last_error FROM notifications`)
    const rowOf = new Map(rows.map((r) => [r.job ? `${r.job}/${r.job_row}` : r.id, r]))
    const textOf = new Map(texts.map((t) => [t.token, t]))
    const noteOf = (t: Text | undefined) => (t ? rowOf.get(t.job ? `${t.job}/${t.row}` : t.id!) : undefined)
    const ledger = [...twilio.ledger.map((e) => ({ ...e, provider: 'twilio' })), ...vonage.ledger.map((e) => ({ ...e, provider: 'vonage' }))]
    const tokenOf = (e: SmsLedgerEntry) => /Ref (K\d+)\.$/.exec(e.body)?.[1] ?? '?'
    const handedOver = new Map<string, number>()
    const pairs = new Map<string, number>()
    for (const e of ledger) {
      handedOver.set(tokenOf(e), (handedOver.get(tokenOf(e)) ?? 0) + 1)
      const pair = `${e.to.replace(/\D/g, '')}|${e.body}`
      pairs.set(pair, (pairs.get(pair) ?? 0) + 1)
    }
    const twice = [...handedOver].filter(([, n]) => n > 1).map(([token, n]) => ({ token, n, status: noteOf(textOf.get(token))?.status }))
    // A text handed over for a notification that is not on its way or told, or not the one it was for.
    const strays = ledger.filter((e) => {
      const t = textOf.get(tokenOf(e))
      const n = t && noteOf(t)
      return !t || !n || t.test || t.digits !== e.to.replace(/\D/g, '') || !HANDED.includes(n.status)
    }).map((e) => ({ provider: e.provider, token: tokenOf(e), status: noteOf(textOf.get(tokenOf(e)))?.status }))
    const inLedger = (t: Text) => handedOver.has(t.token)
    const statuses: Record<string, number> = {}
    for (const r of rows) statuses[r.status] = (statuses[r.status] ?? 0) + 1
    // `sending` is honest only with its reason: handed over (sent_at, provider) and no final receipt,
    // or moved to sending by a worker that was killed before it could record the call.
    const sending = texts.flatMap((t) => (noteOf(t)?.status === 'sending' ? [{ t, n: noteOf(t)! }] : []))
    const unexplained = sending.filter(({ n }) => !(n.sent && n.provider) && !killed.has(n.claimed_by))
    const refs = rows.filter((r) => r.provider_ref).filter((r) => {
      const e = ledger.find((x) => x.provider === r.provider && x.id === r.provider_ref)
      return !e || noteOf(textOf.get(tokenOf(e)))?.id !== r.id
    })
    const jobRows = await db.query(`SELECT j.id::text, j.status, j.rows, j.rows_done, j.attempts, j.last_error,
      (SELECT count(*) FROM notifications n WHERE n.job_id = j.id)::int AS made,
      (SELECT count(DISTINCT job_row) FROM notifications n WHERE n.job_id = j.id)::int AS distinct_rows FROM jobs j`)
    const [left] = await db.query(`SELECT count(*) FILTER (WHERE failed_at IS NULL)::int AS waiting,
      count(*) FILTER (WHERE failed_at IS NOT NULL)::int AS unknown FROM sms_receipts`)
    console.log(`messaging kill test: HERALD_KILL_SEED=${seed}`, JSON.stringify({
      seconds: { kills: Math.round((killing - began) / 1000), drain: Math.round((Date.now() - killing) / 1000) },
      kills: killed.size, running, interrupted, lapsed, texts: texts.length, statuses,
      ledger: { twilio: twilio.ledger.length, vonage: vonage.ledger.length }, twice: twice.length, strays: strays.length,
      sending: { total: sending.length, handed: sending.filter(({ n }) => n.sent).length, inLedger: sending.filter(({ t }) => inLedger(t)).length,
        cutByKill: sending.filter(({ n }) => killed.has(n.claimed_by)).length, unexplained: unexplained.length,
        trail: [...new Set(sending.map(({ n }) => `attempts ${n.attempts}, last_error ${n.last_error}`))] },
      jobs: jobRows.map((j) => `${j.status} ${j.made}/${j.rows} (${j.distinct_rows} rows)`), cancelled, jobsFailed: jobsFailed.map((j) => j.last_error), receipts: left,
      twilio: twilio.stats, vonage: vonage.stats,
    }))
    expect(twice).toEqual([])
    expect([...pairs.values()].filter((n) => n > 1)).toEqual([])
    expect(strays).toEqual([])
    expect(refs.map((r) => r.id)).toEqual([])
    // Every text asked for has its notification, but those of a job cancelled before it made them.
    expect(texts.filter((t) => !noteOf(t) && !(t.job && t.job === cancelled)).map((t) => t.token)).toEqual([])
    expect(rows).toHaveLength(texts.filter(noteOf).length)
    expect(rows.filter((r) => ![...FINAL, 'sending', 'pending'].includes(r.status)).map((r) => r.status)).toEqual([])
    expect(unexplained.map(({ t, n }) => ({ token: t.token, ...n }))).toEqual([])
    // `pending` is Twilio's `sent` receipt without a final one: only for a text it holds.
    expect(texts.filter((t) => noteOf(t)?.status === 'pending' && !inLedger(t)).map((t) => t.token)).toEqual([])
    expect(texts.filter((t) => !t.test && noteOf(t)?.status === 'delivered' && !inLedger(t)).map((t) => t.token)).toEqual([])
    for (const j of jobRows) {
      expect(j.status, j.last_error).toBe(j.id === cancelled ? 'cancelled' : 'finished')
      expect([j.made, j.distinct_rows]).toEqual(j.status === 'finished' ? [j.rows, j.rows] : [j.rows_done, j.rows_done])
    }
    expect(jobRows).toHaveLength(jobs.length)
    expect(jobsFailed.filter((j) => !/^its worker stopped during each of \d+ attempts/.test(j.last_error))).toEqual([])
    expect(left).toEqual({ waiting: 0, unknown: 0 })
    expect(twilio.stats.callbacksFailed + vonage.stats.callbacksFailed).toBe(0)
    expect(interrupted).toBeGreaterThanOrEqual(15) // the kills left work half done, again and again
  })
})
