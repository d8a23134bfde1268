/** The README's quick start, as a newcomer runs it: `herald start`, drop a file, look from a second terminal. */
import { afterAll, describe, expect, it } from 'vitest'
import { spawn, execFile } from 'node:child_process'
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { createServer, type AddressInfo } from 'node:net'
import { once } from 'node:events'
import notifyClient from 'notifications-node-client'
import { FIXTURES, tempDir } from './helpers/files.ts'

const { NotifyClient } = notifyClient as { NotifyClient: new (base: string, key: string) => any }

const run = promisify(execFile)
const tmp = tempDir()
afterAll(() => tmp.cleanup())
const BIN = new URL('../bin/herald.js', import.meta.url).pathname // run as node BIN: the shebang's heap flag is not needed here
// The embedded default, whatever DATABASE_URL the suite runs with.
const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: '', HERALD_DATA_DIR: join(tmp.dir, '.herald'), HERALD_POLL_INTERVAL_MS: '200' }

async function freePort(): Promise<number> {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  server.close()
  return port
}

describe('herald start', () => {
  it('ingests a file dropped in the inbox, while other herald commands share its database', { timeout: 180_000 }, async () => {
    const metricsPort = await freePort()
    const httpPort = await freePort()
    const start = spawn(process.execPath, [BIN, 'start'], { env: { ...env, HERALD_METRICS_PORT: String(metricsPort), HERALD_HTTP_PORT: String(httpPort) }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let logs = ''
    start.stdout.on('data', (d) => (out += d))
    start.stderr.on('data', (d) => (logs += d))
    const exited = new Promise<number | null>((resolve) => start.on('exit', resolve))
    try {
      // The banner may arrive in several chunks: wait for its last line.
      for (let i = 0; i < 300 && !out.includes('Ctrl-C'); i++) await new Promise((r) => setTimeout(r, 100))
      expect(out).toContain(`inbox     ${join(tmp.dir, '.herald', 'inbox')}`)
      copyFileSync(FIXTURES + 'duplicate_rows.txt', join(tmp.dir, '.herald', 'inbox', 'duplicate_rows.txt'))
      let files: any[] = []
      for (let i = 0; i < 100 && files[0]?.status !== 'ingested'; i++) {
        await new Promise((r) => setTimeout(r, 300))
        files = JSON.parse((await run(process.execPath, [BIN, 'files', '--json'], { env })).stdout)
      }
      expect(files[0]).toMatchObject({ status: 'ingested', total_rows: 3, new_rows: 2, duplicate_rows: 1 })
      // The counter moves just after the file's last commit: give it a moment.
      const line = 'herald_engine_items_total{engine="ingest",outcome="ingested"} 1'
      let metrics = ''
      for (let i = 0; i < 20 && !metrics.includes(line); i++) {
        metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
        if (!metrics.includes(line)) await new Promise((r) => setTimeout(r, 100))
      }
      expect(metrics).toContain(line)
      // Every queue's state, read from the database at the scrape, as `herald queue` shows it from a second terminal.
      expect(metrics).toMatch(/herald_queue_waiting\{engine="send"\} \d+/)
      expect(metrics).toContain('herald_queue_failed{engine="ingest"} 0')
      const queues = JSON.parse((await run(process.execPath, [BIN, 'queue', '--json'], { env })).stdout)
      expect(queues.map((q: { engine: string }) => q.engine)).toEqual(['ingest', 'link', 'casesync-out', 'casesync-in', 'exposure-intake',
        'exposure-check', 'exposure-issue', 'jobs', 'send', 'email', 'receipts', 'callbacks', 'nightly'])
      expect(queues[0]).toMatchObject({ engine: 'ingest', failed: 0, inFlight: 0 })
      // A second terminal can ingest too: through the running instance, not by opening the folder.
      const { stdout } = await run(process.execPath, [BIN, 'ingest', '--json', FIXTURES + 'v3_new_records.txt'], { env })
      expect(JSON.parse(stdout)[0]).toMatchObject({ outcome: 'ingested', version: 3, rows: 3, seen: 1, new: 2 })

      // Link runs in the same process, on the sandbox's county list: people, cases and results.
      let person: any
      for (let i = 0; i < 100 && person?.results.length !== 1; i++) {
        await new Promise((r) => setTimeout(r, 300))
        person = await run(process.execPath, [BIN, 'person', '--json', '15200000000002'], { env }).then((r) => JSON.parse(r.stdout), () => undefined)
      }
      expect(person.person).toMatchObject({ last_name: 'GOODE', first_name: 'JOHNNY', phone: '5551234568' })
      expect(person.cases).toEqual([expect.objectContaining({ county_fips: 900, domain: 'ny-statewide-cdcms', closed: false })])
      const trace = (await run(process.execPath, [BIN, 'trace', String(person.results[0].lab_row_id)], { env })).stdout
      expect(trace).toMatch(/county_unknown\s.*fips=9999 domain=ny-statewide-cdcms/)
      expect(trace).toMatch(/person_created[\s\S]*case_created[\s\S]*lab_result_created/)

      // Case sync posts the cases to the CommCare sandbox that herald start runs.
      const sandbox = /sandbox   commcare at (http:\/\/127\.0\.0\.1:\d+)/.exec(out)![1]
      let patients: any[] = []
      for (let i = 0; i < 100 && patients.length < 3; i++) {
        await new Promise((r) => setTimeout(r, 300))
        patients = (await (await fetch(`${sandbox}/sandbox/cases?domain=ny-statewide-cdcms`)).json()).filter((c: any) => c.properties.case_type === 'patient')
      }
      expect(patients.map((c) => c.properties.last_name)).toContain('GOODE')
      const cases = JSON.parse((await run(process.execPath, [BIN, 'cases', '--json'], { env })).stdout)
      expect(Number(cases.queue.failed)).toBe(0)
      expect(Number(cases.cases.synced)).toBe(patients.length)

      // Exposure: the positive residents got codes, in the verification sandbox's ledger.
      const enx = /sandbox   verification at (http:\/\/127\.0\.0\.1:\d+)/.exec(out)![1]
      let ledger: any[] = []
      for (let i = 0; i < 100 && ledger.length < 2; i++) {
        await new Promise((r) => setTimeout(r, 300))
        ledger = await (await fetch(`${enx}/sandbox/ledger`)).json()
      }
      expect(ledger.map((e) => e.phone)).toContain('+15551234568') // GOODE's
      const status = JSON.parse((await run(process.execPath, [BIN, 'exposure', 'status', '--json'], { env })).stdout)
      // Two of the fixture's people share a phone and a test date: one code reaches that phone (the second is a 409).
      expect(new Set(ledger.map((e) => e.phone)).size).toBe(ledger.length)
      expect(status.notices.find((n: any) => n.state === 'issued')?.notices).toBe(3)

      // Messaging: a service, key and template from the CLI; a text sent with GOV.UK Notify's own
      // client to herald start's API, handed to the Twilio sandbox and delivered.
      const cli = async (...args: string[]) => JSON.parse((await run(process.execPath, [BIN, ...args, '--json'], { env })).stdout)
      await cli('service', 'create', 'Clinic', '--sender', 'NYSDOH')
      const { key } = await cli('key', 'create', '--service', 'Clinic', '--name', 'live', '--type', 'normal')
      const template = await cli('template', 'create', '--service', 'Clinic', '--name', 'ready', '--body', 'Hi ((name)), your result is ready.')
      expect(out).toContain(`api       http://127.0.0.1:${httpPort}`)
      const notify = new NotifyClient(`http://127.0.0.1:${httpPort}`, key)
      const sent = (await notify.sendSms(template.id, '+1 212 555 0100', { personalisation: { name: 'Ada' } })).data
      let got: any
      for (let i = 0; i < 100 && got?.status !== 'delivered'; i++) {
        await new Promise((r) => setTimeout(r, 300))
        got = (await notify.getNotificationById(sent.id)).data
      }
      expect(got).toMatchObject({ status: 'delivered', body: 'Hi Ada, your result is ready.', phone_number: '+1 212 555 0100' })
      const sms = /sandbox   sms \(twilio\) at (http:\/\/127\.0\.0\.1:\d+)/.exec(out)![1]
      expect((await (await fetch(`${sms}/sandbox/ledger`)).json()).map((e: any) => e.body)).toEqual(['Hi Ada, your result is ready.'])

      // Facts, usage, a report and retention from a second terminal, on herald start's data.
      const day = (offset: number) => new Date(Date.now() + offset * 86400_000).toLocaleDateString('en-CA', { timeZone: 'America/New_York' })
      expect(await cli('facts', '--from', day(-1), '--to', day(1))).toEqual({ days: 3, billingRows: 1, statusRows: 1 })
      const usage = await cli('usage', '--service', 'Clinic', '--year', day(0).slice(0, 4))
      expect(usage.months).toEqual([expect.objectContaining({ notifications_sent: 1, billable_units: 1 })])
      const report = async () => (await run(process.execPath, [BIN, 'report', '--service', 'Clinic', '--from', day(-1), '--to', day(1)], { env })).stdout
      expect((await report()).split('\n')[1]).toMatch(/^'\+1 212 555 0100,ready,delivered,,twilio,/) // a leading + is neutralised for spreadsheets
      const retention = await cli('retention', 'run', '--as-of', new Date(Date.now() + 8 * 86400_000).toISOString())
      // A row per service and notification type: the text moved; there were no emails.
      expect(retention).toEqual([expect.objectContaining({ name: 'Clinic', type: 'sms', archived: 1 }), expect.objectContaining({ name: 'Clinic', type: 'email', archived: 0 })])
      expect((await report()).split('\n')[1]).toMatch(/^,ready,delivered,,twilio,/)
    } finally {
      start.kill('SIGTERM')
      // A process that does not stop must not outlive the test: it would hold its port and poll on.
      const killer = setTimeout(() => start.kill('SIGKILL'), 15_000)
      exited.finally(() => clearTimeout(killer))
    }
    expect(await exited).toBe(0) // a graceful stop, not the SIGKILL
    expect(logs).toContain('"outcome":"ingested"')
  })

  it('inspect prints each row\'s checksums and each error without touching the database', async () => {
    const { stdout } = await run(process.execPath, [BIN, 'inspect', '--json', FIXTURES + 'new_records.txt'], { env })
    const lines = stdout.trim().split('\n').map((l) => JSON.parse(l))
    expect(lines).toHaveLength(3)
    expect(lines[0]).toMatchObject({ line: 2, version: 'v1' })
    expect(lines[0].v1).toMatch(/^[A-Za-z0-9+/]{43}=$/)
  })
})

describe('herald files ID', () => {
  it('shows one file per county with each row it could not use', async () => {
    const dir = join(tmp.dir, 'files-id')
    const e = { ...env, HERALD_DATA_DIR: dir }
    const bad = join(tmp.dir, 'bad.txt')
    const [header, ...rows] = readFileSync(FIXTURES + 'new_records.txt', 'utf8').trim().split('\n')
    writeFileSync(bad, [header, 'a|b|c', ...rows].join('\n') + '\n')
    await run(process.execPath, [BIN, 'ingest', bad], { env: e }).catch((err) => err)
    const { stdout } = await run(process.execPath, [BIN, 'files', '1'], { env: e })
    expect(stdout).toContain('4 rows: 3 new, 0 seen, 0 duplicate, 1 error')
    expect(stdout).toMatch(/unknown\s+0\s+0\s+0\s+1/)
    expect(stdout).toContain('line 2: has 3 fields, the v1 header has 45')
    const missing = await run(process.execPath, [BIN, 'files', '9'], { env: e }).catch((err) => err)
    expect(missing.code).toBe(1)
    expect(missing.stderr).toContain('no file 9')
  })
})
