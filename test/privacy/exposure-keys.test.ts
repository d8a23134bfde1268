/**
 * Exposure's keyed hashes moved from the raw secret to per-purpose derived keys (migration 014): an
 * upgraded database still matches its old uuids and lookup cache entries (src/exposure/keys.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { migrate, migrations } from '../../src/db/migrate.ts'
import type { Db } from '../../src/db/types.ts'
import { VerificationClient } from '../../src/exposure/clients.ts'
import { ExposureKeys, issueUuid, lookupHash } from '../../src/exposure/keys.ts'
import { deriveKey } from '../../src/privacy/keys.ts'
import { createTestDb, type TestDb } from '../helpers/db.ts'
import { exposureWorld, SECRET } from '../helpers/exposure.ts'

// One database for the file (a migration run is slow on PGlite): made as before 014, upgraded by the first test.
let t: TestDb
let db: Db
beforeAll(async () => {
  t = await createTestDb(before014)
  db = t.db
})
afterAll(() => t.drop())

/** A database as Herald left it before migration 014: every migration before it, applied as migrate() does. */
async function before014(db: Db) {
  await db.exec(`CREATE TABLE schema_migrations (version int PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`)
  for (const m of migrations().filter((m) => m.version < 14)) {
    await db.transaction(async (tx) => {
      await tx.exec(m.sql)
      await tx.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name])
    })
  }
}

const EPISODE = '2020-03-18'
// The lookup sandbox answers `mobile` for all of these (last four digits 0000–4999).
const ISSUED = '+15550100101'
const CHECKED = '+15550100102'
const PENDING = '+15550100103'
const RETRIED = '+15550100104'
const NEW = '+15550100105'
// The old way: keyed with the raw secret.
const oldUuid = (phone: string, episode = EPISODE) => issueUuid(SECRET, phone, episode)
const oldHash = (phone: string) => lookupHash(SECRET, phone)

async function person(db: Db, phone: string): Promise<string> {
  const [p] = await db.query(`INSERT INTO people (external_id, phone) VALUES (gen_random_uuid(), $1) RETURNING id::text`, [phone.slice(2)])
  return p.id
}

async function notice(db: Db, personId: string, fields: { state: string; episode?: string; phone?: string; uuid?: string }): Promise<string> {
  const [n] = await db.query(
    `INSERT INTO exposure_notices (person_id, episode_start, lab_result_id, test_type, test_date, state, phone_e164, uuid)
     VALUES ($1, $2, $1, 'confirmed', $2, $3, $4, $5) RETURNING id::text`,
    [personId, fields.episode ?? EPISODE, fields.state, fields.phone ?? null, fields.uuid ?? null])
  return n.id
}

describe('exposure keys across the upgrade to derived keys (migration 014)', () => {
  it('an upgraded database still matches its old uuids and cache entries', async () => {
    const w = await exposureWorld()

    // Made before the upgrade, under the raw secret.
    const cache = [ISSUED, PENDING, RETRIED]
    await db.query(`INSERT INTO phone_lookups (phone_hash, valid, line_type) SELECT h, true, 'mobile' FROM unnest($1::bytea[]) AS h`, [cache.map(oldHash)])
    const issued = await notice(db, await person(db, ISSUED), { state: 'issued', phone: ISSUED, uuid: oldUuid(ISSUED) })
    // Checked, and texted by the server, whose answer never reached Herald: its retry must be a 409.
    const checked = await notice(db, await person(db, CHECKED), { state: 'phone_checked', phone: CHECKED, uuid: oldUuid(CHECKED) })
    // Not yet checked: gets the uuid it would have had, and its number's cached answer.
    const pending = await notice(db, await person(db, PENDING), { state: 'pending' })
    // Texted by the server, then sent back to the check (an operator's retry): its uuid is computed again.
    const retried = await notice(db, await person(db, RETRIED), { state: 'pending', phone: RETRIED, uuid: oldUuid(RETRIED) })
    const server = new VerificationClient({ url: w.enx.url, apiKey: 'enx-key', timeoutMs: 2000 })
    const seeded = await server.batchIssue([CHECKED, RETRIED].map((phone) => ({ testType: 'confirmed', testDate: EPISODE, tzOffset: -240, phone, uuid: oldUuid(phone) })))
    expect(seeded.items?.every((i) => i.code)).toBe(true)
    await server.close()

    expect(await migrate(db)).toContain('014_exposure_keys')
    // Made after the upgrade: a new number, and a new person (another episode) on a number cached before.
    const fresh = await notice(db, await person(db, NEW), { state: 'pending' })
    const sharing = await notice(db, await person(db, PENDING), { state: 'pending', episode: '2020-03-20' })

    await w.run(db)

    const rows = new Map((await db.query(`SELECT id::text, state, uuid::text, uuid_key FROM exposure_notices`)).map((r) => [r.id, r]))
    const newUuid = (phone: string, episode = EPISODE) => issueUuid(deriveKey(SECRET, 'exposure:uuid'), phone, episode)
    expect(Object.fromEntries([issued, checked, pending, retried, fresh, sharing].map((id) => [id, rows.get(id)]))).toEqual({
      [issued]: { id: issued, state: 'issued', uuid: oldUuid(ISSUED), uuid_key: 1 },
      [checked]: { id: checked, state: 'issued', uuid: oldUuid(CHECKED), uuid_key: 1 },
      [pending]: { id: pending, state: 'issued', uuid: oldUuid(PENDING), uuid_key: 1 },
      [retried]: { id: retried, state: 'issued', uuid: oldUuid(RETRIED), uuid_key: 1 },
      [fresh]: { id: fresh, state: 'issued', uuid: newUuid(NEW), uuid_key: 2 },
      [sharing]: { id: sharing, state: 'issued', uuid: newUuid(PENDING, '2020-03-20'), uuid_key: 2 },
    })
    expect(newUuid(NEW)).not.toBe(oldUuid(NEW))
    // The server texted each uuid once: the two it had issued before answered 409.
    expect(w.enx.ledger.map((e) => e.uuid).sort()).toEqual([oldUuid(CHECKED), oldUuid(RETRIED), oldUuid(PENDING), newUuid(NEW), newUuid(PENDING, '2020-03-20')].sort())
    expect(w.enx.stats.conflicts409).toBe(2)
    // Only the number nobody had looked up was looked up; its answer is cached under the derived key.
    expect([...w.lookup.stats.byNumber.keys()]).toEqual([NEW])
    const stored = await db.query(`SELECT encode(phone_hash, 'hex') AS h, key_version FROM phone_lookups ORDER BY key_version, h`)
    expect(stored).toEqual([
      ...cache.map((p) => ({ h: oldHash(p).toString('hex'), key_version: 1 })).sort((a, b) => a.h.localeCompare(b.h)),
      { h: lookupHash(deriveKey(SECRET, 'exposure:lookup'), NEW).toString('hex'), key_version: 2 },
    ])
  })

  it('reads a cache row under the derived key before one under the raw secret, and neither once stale', async () => {
    await migrate(db)
    await db.query('DELETE FROM phone_lookups')
    const keys = new ExposureKeys(SECRET)
    await db.query(`INSERT INTO phone_lookups (phone_hash, valid, line_type, key_version) VALUES ($1, true, 'landline', 1), ($2, true, 'mobile', 2), ($3, true, 'mobile', 1)`,
      [oldHash(PENDING), keys.lookupHash(PENDING), oldHash(NEW)])
    await db.query(`UPDATE phone_lookups SET checked_at = now() - interval '31 days' WHERE phone_hash = $1`, [oldHash(NEW)])
    const found = await keys.cached(db, [PENDING, NEW, ISSUED], 30)
    expect(Object.fromEntries(found)).toEqual({ [keys.lookupHash(PENDING).toString('hex')]: { valid: true, lineType: 'mobile' } })
  })

  it('derives a key per purpose: none is the raw secret or another purpose\'s', () => {
    const keys = ['exposure:uuid', 'exposure:lookup', 'messaging:encrypt', 'messaging:search'].map((p) => deriveKey(SECRET, p).toString('hex'))
    expect(new Set([...keys, Buffer.from(SECRET).toString('hex')]).size).toBe(5)
    const k = new ExposureKeys(SECRET)
    expect(k.uuid(1, NEW, EPISODE)).toBe(oldUuid(NEW))
    expect(k.uuid(2, NEW, EPISODE)).toBe(issueUuid(deriveKey(SECRET, 'exposure:uuid'), NEW, EPISODE))
    expect(k.lookupHash(NEW).equals(oldHash(NEW))).toBe(false)
  })
})
