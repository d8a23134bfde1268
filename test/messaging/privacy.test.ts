/** No plaintext phone number or personalisation in a database dump taken after sending (PostgreSQL: pg_dump). */
import { describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import notifyClient from 'notifications-node-client'
import { createLogger } from '../../src/log.ts'
import { Directory } from '../../src/messaging/api/directory.ts'
import { createJob, jobsEngine } from '../../src/messaging/jobs/jobs.ts'
import { runRetention } from '../../src/messaging/retention/retention.ts'
import { sendEngine } from '../../src/messaging/send/engine.ts'
import { addRecipient } from '../../src/messaging/services.ts'
import { LocalStore } from '../../src/storage/local.ts'
import { onPostgres } from '../helpers/db.ts'
import { jobStore, messagingWorld, sealer } from '../helpers/messaging.ts'

const { NotifyClient } = notifyClient as { NotifyClient: new (base: string, key: string) => any }
const w = messagingWorld()
const run = promisify(execFile)

describe.skipIf(!onPostgres)('a database dump after sending', () => {
  it('holds no phone number in any form and no personalisation value', async () => {
    const people = Array.from({ length: 20 }, (_, i) => ({ phone: `+1 (212) 555-${String(4100 + i)}`, name: `Zelda${i}Quist` }))
    const notify = new NotifyClient(w.url, w.keys.test)
    for (const p of people.slice(0, 10)) await notify.sendSms(w.template.id, p.phone, { personalisation: { name: p.name, ref: 'Secret-Ref' }, reference: 'dump-check' })
    await addRecipient(w.t.db, sealer, w.service.id, '+12125554100', 'member', 'Zelda0Quist')
    // The rest by a bulk job.
    const csv = ['phone number,name,ref', ...people.slice(10).map((p) => `"${p.phone}",${p.name},Secret-Ref`)].join('\n')
    const template = (await new Directory(w.t.db, 0).template(w.service.id, w.template.id))!
    const store = new LocalStore(jobStore)
    const job = await createJob({ db: w.t.db, dir: new Directory(w.t.db, 0), sealer, region: 'US', store }, {
      service: w.service, template, keyType: 'test', apiKeyId: null, csv: Buffer.from(csv), name: 'people.csv', createdBy: 'test' })
    expect(job.ok).toBe(true)
    await jobsEngine({ sealer, region: 'US', store }, createLogger('silent')).step(w.t.db, new AbortController().signal)
    await sendEngine({ providers: [], sealer, region: 'US', concurrency: 16, recoverySeconds: 300, log: createLogger('silent'), workerId: 'test' }).step(w.t.db, new AbortController().signal)
    const [{ delivered }] = await w.t.db.query(`SELECT count(*) FILTER (WHERE status = 'delivered')::int AS delivered FROM notifications`)
    expect(delivered).toBe(20)

    const { stdout: dump } = await run('pg_dump', ['--no-owner', w.t.url!], { maxBuffer: 1 << 28 })
    expect(dump).toContain('dump-check') // the dump is of this database, with the notifications in it
    for (const p of people) {
      const digits = p.phone.replace(/\D/g, '')
      for (const form of [digits, digits.slice(1), p.phone, `+${digits}`, `${digits.slice(1, 4)}-${digits.slice(4, 7)}-${digits.slice(7)}`, p.name]) {
        expect(dump, form).not.toContain(form)
      }
    }
    expect(dump).not.toContain('Secret-Ref')
  })

  it('after retention holds no ciphertext, hash or number of the recipients past it', async () => {
    const phones = Array.from({ length: 12 }, (_, i) => `+1 (646) 555-${String(7100 + i)}`)
    const notify = new NotifyClient(w.url, w.keys.normal)
    for (const p of phones) await notify.sendSms(w.template.id, p, { personalisation: { name: 'Quentin', ref: 'Ref-After' }, reference: 'retention-check' })
    const sealed = await w.t.db.query(`SELECT encode(recipient_ct, 'hex') AS ct, encode(recipient_hash, 'hex') AS hash, encode(personalisation_ct, 'hex') AS pers FROM notifications`)
    expect(sealed).toHaveLength(12)
    const [r] = await runRetention(w.t.db, { store: new LocalStore(jobStore), log: createLogger('silent'), asOf: new Date(Date.now() + 8 * 86400_000) })
    expect(r.archived).toBe(12)

    const { stdout: dump } = await run('pg_dump', ['--no-owner', '--inserts', w.t.url!], { maxBuffer: 1 << 28 })
    expect(dump).toContain('retention-check') // the history rows are in the dump
    for (const s of sealed) for (const hex of [s.ct, s.hash, s.pers]) expect(dump).not.toContain(hex)
    for (const p of phones) expect(dump).not.toContain(p.replace(/\D/g, '').slice(1))
  })
})
