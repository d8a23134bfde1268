/** Exposure notification against the verification and lookup sandboxes: one code per person and episode, never two. */
import { describe, expect, it } from 'vitest'
import { ConfigError, loadConfig } from '../../src/config.ts'
import type { Db } from '../../src/db/types.ts'
import { tzOffsetMinutes } from '../../src/exposure/keys.ts'
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
/** A positive result for a new person (or the one with `key`), with this phone. */
const positive = (phone: string, extra: Record<string, string> = {}) =>
  row(3, { PIDPATIENTKEY: `EXP-${++n}`, PIDCOUNTYCODE: '1', PIDHOMEPHONE: phone, ...extra })

describe('exposure notification', () => {
  it('texts each newly positive person one code, with the test date and its time zone offset', async () => {
    const w = await exposureWorld()
    await linkRows(db, dir, [positive('5550100001'), positive('5550100002', { OBRCOLLECTIONDATE: '10JAN2021:00:00:00.000000', OBRCREATEDATE: '12JAN2021:00:00:00.000000' })])
    expect(await w.run(db)).toMatchObject({ opened: 2, phone_checked: 2, issued: 2 })
    expect(w.enx.ledger.map((e) => [e.phone, e.testDate, e.tzOffset, e.testType]).sort()).toEqual([
      ['+15550100001', '2020-03-18', -240, 'confirmed'], // daylight saving time
      ['+15550100002', '2021-01-10', -300, 'confirmed'], // standard time
    ])
    expect(await states(db)).toEqual({ issued: 2 })
  })

  it('gives a person with two results in one episode one code, and a new episode another', async () => {
    const w = await exposureWorld()
    const key = { PIDPATIENTKEY: 'EXP-SAME' }
    await linkRows(db, dir, [positive('5550100003', key), positive('5550100003', { ...key, OBRCOLLECTIONDATE: '25MAR2020:00:00:00.000000', OBRCREATEDATE: '27MAR2020:00:00:00.000000' })])
    expect(await w.run(db)).toMatchObject({ opened: 1, joined: 1, issued: 1 })
    await linkRows(db, dir, [positive('5550100003', { ...key, OBRCOLLECTIONDATE: '01AUG2020:00:00:00.000000', OBRCREATEDATE: '02AUG2020:00:00:00.000000' })])
    expect(await w.run(db)).toMatchObject({ opened: 1, issued: 1 })
    expect(w.enx.ledger.map((e) => e.testDate)).toEqual(['2020-03-18', '2020-08-01'])
  })

  it('sends nothing to invalid, landline or VoIP numbers, and says why', async () => {
    const w = await exposureWorld()
    await linkRows(db, dir, [positive('5550108001'), positive('5550105001'), positive('5550107001'), positive('555010012')])
    await w.run(db)
    expect(await states(db)).toEqual({ 'not_sent:invalid': 2, 'not_sent:landline': 1, 'not_sent:voip': 1 })
    expect(w.enx.ledger).toHaveLength(0)
    expect(w.lookup.stats.requests).toBe(3) // the impossible number was not looked up
  })

  it('accepts the VoIP line types configured', async () => {
    const w = await exposureWorld({ env: { HERALD_LOOKUP_LINE_TYPES: 'mobile,nonFixedVoip' } })
    await linkRows(db, dir, [positive('5550107002')])
    await w.run(db)
    expect(await states(db)).toEqual({ issued: 1 })
  })

  it('looks a number up again after a 429 or a 500, never giving up on it for that', async () => {
    const w = await exposureWorld()
    await linkRows(db, dir, [positive('5550108501'), positive('5550109001')])
    await w.run(db)
    expect(await db.query('SELECT state, reason, last_error, attempts FROM exposure_notices ORDER BY last_error')).toEqual([
      { state: 'pending', reason: null, last_error: 'lookup 429', attempts: 0 }, { state: 'pending', reason: null, last_error: 'lookup 500', attempts: 1 }])
    await dueNow(db)
    await w.run(db)
    expect(await states(db)).toEqual({ issued: 2 })
  })

  it('records each item of a partly failed batch on its own, and retries only those that failed', async () => {
    const w = await exposureWorld({ enx: { failures: { internal_server_error: 0.4 } } })
    await linkRows(db, dir, Array.from({ length: 10 }, (_, i) => positive(`555010${String(1000 + i).slice(-4)}`)))
    await w.run(db)
    const first = w.enx.ledger.length
    expect(first).toBeGreaterThan(0)
    expect(first).toBeLessThan(10)
    w.enx.knobs.failures.internal_server_error = 0
    await dueNow(db)
    await w.run(db)
    expect(await states(db)).toEqual({ issued: 10 })
    expect([...w.enx.textedPerPhone().values()].every((k) => k === 1)).toBe(true)
    expect(w.enx.ledger).toHaveLength(10)
  })

  it('records a code the server already texted (409) as issued, and texts nothing again', async () => {
    const w = await exposureWorld()
    await linkRows(db, dir, [positive('5550100004')])
    await w.run(db)
    // The outcome was never recorded (a crash after the server answered): the notice is tried again.
    await db.query(`UPDATE exposure_notices SET state = 'phone_checked'`)
    await w.run(db)
    expect(w.enx.stats.conflicts409).toBe(1)
    expect(w.enx.ledger).toHaveLength(1)
    expect(await states(db)).toEqual({ issued: 1 })
  })

  it('waits for the quota without spending attempts, takes a plain-text 429, and goes on in the next window', async () => {
    let clock = Date.parse('2026-11-23T12:00:10Z')
    // One request at a time: with two in flight, which one met the plain-text 429 (and so marked the
    // quota spent until its Retry-After) was a race, and the sandbox's clock is not the database's.
    const w = await exposureWorld({ enx: { quota: { perMinute: 5 }, now: () => clock }, env: { HERALD_ENX_CONCURRENCY: '1' } })
    await linkRows(db, dir, Array.from({ length: 12 }, (_, i) => positive(`555011${String(1000 + i).slice(-4)}`)))
    await w.run(db)
    expect(w.enx.ledger).toHaveLength(5)
    const waiting = await db.query(`SELECT count(*)::int AS n FROM exposure_notices WHERE state = 'phone_checked' AND last_error = 'quota' AND attempts = 0`)
    expect(waiting).toEqual([{ n: 7 }])
    // Due again, but the shared quota says the window is spent: nothing is sent.
    const requests = w.enx.stats.requests
    await dueNow(db)
    await w.run(db)
    expect(w.enx.stats.requests).toBe(requests)
    // Another worker that knew nothing of the quota meets the server's 429 (plain text): it waits too.
    await db.query(`UPDATE rate_limits SET remaining = NULL, quota = NULL, reset_at = NULL`)
    await dueNow(db)
    await w.run(db)
    expect(w.enx.stats.status429).toBeGreaterThan(1)
    expect(await db.query(`SELECT max(attempts)::int AS a FROM exposure_notices`)).toEqual([{ a: 0 }])
    // The next window.
    clock += 60_000
    await db.query(`UPDATE rate_limits SET reset_at = now() - interval '1 s', quota = 5`)
    await dueNow(db)
    await w.run(db)
    expect(w.enx.ledger).toHaveLength(10)
    expect([...w.enx.textedPerPhone().values()].every((k) => k === 1)).toBe(true)
  })

  it('computes the time zone offset of the test date, daylight saving included', () => {
    expect(tzOffsetMinutes('America/New_York', '2026-07-01')).toBe(-240)
    expect(tzOffsetMinutes('America/New_York', '2026-01-15')).toBe(-300)
    expect(tzOffsetMinutes('America/Los_Angeles', '2026-03-08')).toBe(-420) // the day clocks change
    expect(tzOffsetMinutes('Asia/Kolkata', '2026-01-15')).toBe(330)
  })

  it('checks its configuration at start', () => {
    expect(() => loadConfig({ HERALD_TIMEZONE: 'Mars/Olympus' })).toThrow(ConfigError)
    expect(() => loadConfig({ HERALD_ENX_URL: 'http://127.0.0.1:1', HERALD_ENX_API_KEY: 'k' })).toThrow(/HERALD_SECRET_KEY/)
    expect(() => loadConfig({ HERALD_ENX_URL: 'http://127.0.0.1:1', HERALD_SECRET_KEY: 'x'.repeat(40) })).toThrow(/HERALD_ENX_API_KEY/)
    expect(() => loadConfig({ HERALD_LOOKUP_LINE_TYPES: 'mobile,fax' })).toThrow(/unknown line type fax/)
  })
})
