/**
 * The crash test: the exposure engines' process is killed with SIGKILL at random moments, 50 times,
 * and started again; people keep arriving meanwhile. The verification sandbox's ledger must show no
 * phone texted twice, and every eligible person must end issued or not sent with a reason.
 * PostgreSQL only: PGlite keeps its database inside the process that was killed.
 */
import { describe, expect, it } from 'vitest'
import { spawn, execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { once } from 'node:events'
import { join } from 'node:path'
import { startLookupSandbox } from '../../src/sandbox/lookup/server.ts'
import { startVerificationSandbox } from '../../src/sandbox/verification/server.ts'
import { linkRows } from '../helpers/casesync.ts'
import { onPostgres } from '../helpers/db.ts'
import { BIN, processWorld } from '../helpers/kill.ts'
import { lookupPhone, SECRET } from '../helpers/exposure.ts'
import { row } from '../helpers/files.ts'
import { count, loadCounties } from '../helpers/link.ts'

const run = promisify(execFile)
const RUNS = 50
const w = processWorld()
const { tmp } = w


describe.runIf(onPostgres)('exposure killed at random moments (PostgreSQL)', () => {
  it('never texts a phone twice, and brings every eligible person to issued or not sent', { timeout: 600_000 }, async () => {
    await loadCounties(w.t.db)
    const enx = await startVerificationSandbox({ apiKey: 'enx-key', latencyMs: 20, failures: { internal_server_error: 0.1 }, seed: 7 })
    const lookup = await startLookupSandbox({ accountSid: 'ACtest', authToken: 'token', latencyMs: 10 })
    try {
      const env = { ...process.env, DATABASE_URL: w.t.url, HERALD_LOG_LEVEL: 'silent', HERALD_POLL_INTERVAL_MS: '100',
        HERALD_ENX_URL: enx.url, HERALD_ENX_API_KEY: 'enx-key', HERALD_LOOKUP_URL: lookup.url, HERALD_TWILIO_ACCOUNT_SID: 'ACtest',
        HERALD_TWILIO_AUTH_TOKEN: 'token', HERALD_SECRET_KEY: SECRET, HERALD_ENX_CONCURRENCY: '2', HERALD_LOOKUP_CONCURRENCY: '4',
        HERALD_INBOX: join(tmp.dir, 'inbox'), HERALD_DATA_DIR: join(tmp.dir, '.herald') }
      const engines = ['run', '--engines', 'exposure-intake,exposure-check,exposure-issue']
      let people = 0
      let interrupted = 0
      const unfinished = async () => (await count(w.t.db, 'exposure_queue')) + (await count(w.t.db, 'exposure_notices', `state IN ('pending', 'phone_checked')`))
      for (let i = 0; i < RUNS; i++) {
        if (i < 20) {
          // People keep arriving: some crashes land in intake too.
          await linkRows(w.t.db, tmp.dir, Array.from({ length: 6 }, () => {
            const k = people++
            return row(3, { PIDPATIENTKEY: `CRASH-${k}`, PIDCOUNTYCODE: '1', PIDHOMEPHONE: lookupPhone(k) })
          }))
        }
        const child = spawn(process.execPath, [BIN, ...engines], { env, stdio: ['ignore', 'ignore', 'pipe'] })
        let stderr = ''
        child.stderr!.on('data', (d) => (stderr += d))
        const exited = once(child, 'exit')
        await Promise.race([exited, new Promise((r) => setTimeout(r, 900 + Math.random() * 1500))]) // it takes about 0.9 s to start
        expect(child.exitCode, stderr).toBeNull() // still running: killed, not crashed
        child.kill('SIGKILL')
        await exited
        if ((await unfinished()) > 0) interrupted++
        // The killed worker's leases would run out in time; another worker may take its notices now.
        await w.t.db.query('UPDATE exposure_notices SET claimed_until = NULL')
        if (i % 5 === 4) await w.t.db.query('UPDATE exposure_notices SET retry_at = now() WHERE retry_at IS NOT NULL')
      }
      expect(interrupted).toBeGreaterThanOrEqual(15) // the kills left work half done, again and again
      for (let i = 0; i < 10 && (await unfinished()) > 0; i++) {
        await w.t.db.query('UPDATE exposure_notices SET retry_at = now() WHERE retry_at IS NOT NULL')
        await run(process.execPath, [BIN, ...engines, '--until-idle'], { env })
      }
      expect([...enx.textedPerPhone().values()].filter((n) => n > 1)).toEqual([])
      expect(await count(w.t.db, 'exposure_queue')).toBe(0)
      expect(await count(w.t.db, 'exposure_notices')).toBe(people)
      expect(await count(w.t.db, 'exposure_notices', `state = 'issued' OR (state = 'not_sent' AND reason IS NOT NULL)`)).toBe(people)
      const issued = await w.t.db.query(`SELECT phone_e164 FROM exposure_notices WHERE state = 'issued' ORDER BY 1`)
      expect(issued.map((r) => r.phone_e164)).toEqual(enx.ledger.map((e) => e.phone).sort())
    } finally {
      await enx.close()
      await lookup.close()
    }
  })
})
