/** The work-queue primitive on a table of its own: claim, leases, ownership, backoff, failure, release, retry, stats. */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { claim, claimInTx, events, fail, failedRows, finish, heartbeat, hold, release, retry, stats, type QueueSpec } from '../../src/engine/queue.ts'
import type { Db } from '../../src/db/types.ts'
import { createTestDb, onPostgres, type TestDb } from '../helpers/db.ts'

const spec: QueueSpec = {
  engine: 'test', table: 'q_items', key: 'id', keyType: 'bigint', ready: `state = 'todo'`, order: 'id', since: 'created_at',
  leaseSeconds: 60, retry: { maxAttempts: 3, baseSeconds: 10, factor: 3, capSeconds: 50, jitter: 0 },
  onFailed: { state: `'broken'` }, onRetry: { state: `'todo'` },
}

let t: TestDb
let db: Db
beforeAll(async () => {
  t = await createTestDb()
  db = t.db
  await db.exec(`CREATE TABLE q_items (id bigint PRIMARY KEY, state text NOT NULL DEFAULT 'todo', created_at timestamptz NOT NULL DEFAULT now(),
    claimed_by text, claimed_until timestamptz, attempts int NOT NULL DEFAULT 0, retry_at timestamptz, last_error text, failed_at timestamptz)`)
})
afterAll(() => t.drop())
beforeEach(async () => {
  await db.exec(`TRUNCATE q_items; TRUNCATE queue_events; INSERT INTO q_items (id) SELECT generate_series(1, 5)`)
})

/** Makes a lease run out now (as if its holder stopped renewing it). */
const expire = (ids: number[]) => db.query(`UPDATE q_items SET claimed_until = now() - interval '1 second' WHERE id = ANY($1::bigint[])`, [ids])
const row = async (id: number) => (await db.query('SELECT * FROM q_items WHERE id = $1', [id]))[0]

describe('work queue', () => {
  it('claims due rows in order, each once, with a lease', async () => {
    const a = await claim(db, spec, 'A', 2)
    const b = await claim(db, spec, 'B', 10)
    expect(a.map((r) => r.id)).toEqual(['1', '2'])
    expect(b.map((r) => r.id)).toEqual(['3', '4', '5'])
    expect(await claim(db, spec, 'C', 10)).toEqual([])
    expect((await row(1)).claimed_by).toBe('A')
    expect(await stats(db, spec)).toMatchObject({ waiting: 0, inFlight: 5, retrying: 0, failed: 0 })
  })

  it('passes extra conditions and returns extra columns', async () => {
    const got = await claim(db, spec, 'A', 10, { where: 'id > $1 AND id < $2', params: [1, 4], returning: 't.state' })
    expect(got).toEqual([{ id: '2', attempts: 0, state: 'todo' }, { id: '3', attempts: 0, state: 'todo' }])
  })

  it('hands a row whose lease ran out to another worker, counting an attempt; the first can no longer hold, finish or renew it', async () => {
    await claim(db, spec, 'A', 1)
    await expire([1])
    const [taken] = await claim(db, spec, 'B', 1)
    expect(taken).toMatchObject({ id: '1', attempts: 1 })
    expect([...(await hold(db, spec, 'A', ['1'], `state = 'sending'`))]).toEqual([])
    expect([...(await heartbeat(db, spec, 'A', ['1']))]).toEqual([])
    expect([...(await finish(db, spec, 'A', [{ id: '1' }], { set: `state = 'done'` }))]).toEqual([])
    expect((await row(1)).state).toBe('todo')
    expect([...(await hold(db, spec, 'B', ['1'], `state = 'sending'`))]).toEqual(['1'])
    expect((await row(1)).state).toBe('sending')
  })

  it('holds only under a live lease, even for the worker that claimed', async () => {
    await claim(db, spec, 'A', 2)
    await expire([2])
    expect([...(await hold(db, spec, 'A', ['1', '2'], `state = 'sending'`))]).toEqual(['1'])
  })

  it('fails a row whose workers stopped during every attempt', async () => {
    for (let i = 0; i < 3; i++) {
      expect((await claim(db, spec, `W${i}`, 1)).map((r) => r.id)).toEqual(['1'])
      await expire([1])
    }
    // The third lease ran out: the claim that finds it fails it instead of taking it.
    expect(await claim(db, spec, 'W3', 1)).toEqual([])
    expect((await claim(db, spec, 'W3', 1)).map((r) => r.id)).toEqual(['2'])
    const r = await row(1)
    expect(r).toMatchObject({ attempts: 3, state: 'broken', claimed_by: null })
    expect(r.failed_at).not.toBeNull()
    expect(r.last_error).toMatch(/stopped during each of 3 attempts/)
  })

  it('finishes with per-row values and deletes', async () => {
    await claim(db, spec, 'A', 3)
    const done = await finish(db, spec, 'A', [{ id: '1', state: 'done' }, { id: '2', state: 'skipped' }], { columns: 'state text', set: 'state = v.state' })
    expect([...done].sort()).toEqual(['1', '2'])
    expect((await row(2))).toMatchObject({ state: 'skipped', claimed_by: null, claimed_until: null })
    expect([...(await finish(db, spec, 'A', [{ id: '3' }], { delete: true }))]).toEqual(['3'])
    expect(await row(3)).toBeUndefined()
  })

  it('finishes a schedule with its next time: a set of its own replaces the cleared column', async () => {
    await claim(db, spec, 'A', 1)
    await finish(db, spec, 'A', [{ id: '1' }], { set: `retry_at = now() + interval '1 hour'` })
    const [r] = await db.query(`SELECT claimed_by, retry_at > now() + interval '59 minutes' AS later FROM q_items WHERE id = 1`)
    expect(r).toEqual({ claimed_by: null, later: true })
    expect((await claim(db, spec, 'A', 10)).map((x) => x.id)).toEqual(['2', '3', '4', '5'])
  })

  it('backs off in SQL (base × factor^n, capped), then fails visibly with the engine state and events', async () => {
    const waits: number[] = []
    for (let i = 0; i < 3; i++) {
      await db.query('UPDATE q_items SET retry_at = NULL WHERE id = 1')
      await claim(db, spec, 'A', 1)
      const [r] = await fail(db, spec, 'A', [{ id: '1', error: 'HTTP 503', detail: { status: 503 } }])
      if (!r.failed) {
        const [{ s }] = await db.query(`SELECT extract(epoch FROM retry_at - now())::float8 AS s FROM q_items WHERE id = 1`)
        waits.push(Math.round(s))
      }
      expect(r.attempts).toBe(i + 1)
      expect(r.failed).toBe(i === 2)
    }
    expect(waits).toEqual([10, 30])
    expect(await row(1)).toMatchObject({ state: 'broken', attempts: 3, last_error: 'HTTP 503', retry_at: null })
    const ev = await events(db, spec, ['1'])
    expect(ev.map((e) => e.kind)).toEqual(['retrying', 'retrying', 'failed'])
    expect(ev[0].detail).toMatchObject({ attempts: 1, error: 'HTTP 503', status: 503 })
    expect(await failedRows(db, spec)).toMatchObject([{ id: '1', attempts: 3, error: 'HTTP 503' }])
    expect(await stats(db, spec)).toMatchObject({ failed: 1, waiting: 4 })
  })

  it('caps the backoff, postpones without an attempt, and fails for good at once when told', async () => {
    await db.query('UPDATE q_items SET attempts = 1')
    const big: QueueSpec = { ...spec, retry: { ...spec.retry, maxAttempts: 10 } }
    await claim(db, big, 'A', 3)
    const rs = await fail(db, big, 'A', [
      { id: '1', error: 'x' }, { id: '2', error: '429', postponeSeconds: 7 }, { id: '3', error: '400', permanent: true }])
    const byId = new Map(rs.map((r) => [r.id, r]))
    expect(byId.get('2')).toMatchObject({ attempts: 1, failed: false })
    expect(byId.get('3')).toMatchObject({ failed: true })
    const [{ s1, s2 }] = await db.query(`SELECT extract(epoch FROM (SELECT retry_at FROM q_items WHERE id = 1) - now())::float8 AS s1,
      extract(epoch FROM (SELECT retry_at FROM q_items WHERE id = 2) - now())::float8 AS s2`)
    expect(Math.round(s1)).toBe(30)
    expect(Math.round(s2)).toBe(7)
    expect(await stats(db, big)).toMatchObject({ retrying: 2, failed: 1 })
  })

  it('keeps backing off at the cap after thousands of failures (no overflow)', async () => {
    const forever: QueueSpec = { ...spec, retry: { ...spec.retry, maxAttempts: 1_000_000 } }
    await db.query('UPDATE q_items SET attempts = 5000 WHERE id = 1')
    await claim(db, forever, 'A', 1)
    expect(await fail(db, forever, 'A', [{ id: '1', error: 'still down' }])).toMatchObject([{ id: '1', attempts: 5001, failed: false }])
    const [{ s }] = await db.query(`SELECT extract(epoch FROM retry_at - now())::float8 AS s FROM q_items WHERE id = 1`)
    expect(Math.round(s)).toBe(50)
  })

  it('does not fail a row another worker holds', async () => {
    await claim(db, spec, 'A', 1)
    await expire([1])
    await claim(db, spec, 'B', 1)
    expect(await fail(db, spec, 'A', [{ id: '1', error: 'late' }])).toEqual([])
    expect((await row(1)).claimed_by).toBe('B')
  })

  it('releases rows not started: due again at once, no attempt spent, only its own', async () => {
    await claim(db, spec, 'A', 2)
    expect(await release(db, spec, 'B', ['1', '2'])).toBe(0)
    expect(await release(db, spec, 'A', ['1', '2'])).toBe(2)
    expect((await claim(db, spec, 'B', 1))[0]).toMatchObject({ id: '1', attempts: 0 })
  })

  it('retries failed rows with their attempts anew and an event', async () => {
    await claim(db, spec, 'A', 2)
    await fail(db, spec, 'A', [{ id: '1', error: 'bad', permanent: true }, { id: '2', error: 'bad', permanent: true }])
    expect(await retry(db, spec, ['2'])).toEqual(['2'])
    expect(await row(2)).toMatchObject({ state: 'todo', attempts: 0, failed_at: null, last_error: null })
    expect((await row(1)).state).toBe('broken')
    expect((await events(db, spec, ['2'])).map((e) => e.kind)).toEqual(['failed', 'retry_requested'])
    expect(await retry(db, spec)).toEqual(['1'])
  })

  it('claims inside a transaction: others skip the rows until it ends, a rollback gives them back', async () => {
    await expect(db.transaction(async (tx) => {
      expect((await claimInTx(tx, spec, 2, { where: 'id <> $1', params: [1] })).map((r) => r.id)).toEqual(['2', '3'])
      throw new Error('rolled back')
    })).rejects.toThrow('rolled back')
    expect((await db.transaction((tx) => claimInTx(tx, spec, 10))).length).toBe(5)
  })

  it.runIf(onPostgres)('two connections claiming at once never take the same row', async () => {
    await db.exec(`INSERT INTO q_items (id) SELECT generate_series(6, 400)`)
    const other = t.connectAgain()
    const got: string[] = []
    await Promise.all([db, other].map(async (conn, w) => {
      for (;;) {
        const rows = await claim(conn, spec, `W${w}`, 7)
        if (rows.length === 0) return
        got.push(...rows.map((r) => r.id))
      }
    }))
    expect(got.length).toBe(400)
    expect(new Set(got).size).toBe(400)
  })
})
