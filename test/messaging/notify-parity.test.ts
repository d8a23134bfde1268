/**
 * Departures from GOV.UK Notify closed (issue 15, item 6): premium-rate and other numbers Notify does not text; list, object and
 * boolean personalisation as Notify prints it; scheduled_for within 24 hours, stored, due at its time, cancellable; control
 * characters in names the CLI prints.
 */
import { describe, expect, it } from 'vitest'
import { clean } from '../../src/cli/messaging.ts'
import { due } from '../../src/engine/queue.ts'
import { createTemplate } from '../../src/messaging/services.ts'
import { sendQueue } from '../../src/messaging/send/queue.ts'
import { render } from '../../src/messaging/templates.ts'
import { callApi, messagingWorld } from '../helpers/messaging.ts'

const w = messagingWorld()
const send = (body: object) => callApi(w, 'POST', '/v2/notifications/sms', { template_id: w.template.id, personalisation: { name: 'A', ref: 'B' }, ...body })
const answer = async (res: Response) => ({ status: res.status, body: await res.json() })
const NOT_VALID = 'phone_number Number is not valid – double check the phone number you entered'

describe('numbers Notify does not text', () => {
  it('premium-rate (+1 900), toll-free and other special NANP numbers are refused with Notify\'s message; ordinary ones pass', async () => {
    for (const n of ['+1 900 555 0100', '+1 900 234 5678', '+1 800 234 5678', '+1 888 234 5678', '+1 877 234 5678']) {
      expect(await answer(await send({ phone_number: n }))).toEqual({ status: 400, body: { status_code: 400, errors: [{ error: 'ValidationError', message: NOT_VALID }] } })
    }
    expect((await send({ phone_number: '+1 212 555 0100' })).status).toBe(201)
    expect((await send({ phone_number: '+1 500 234 5678' })).status).toBe(201) // personal number: on Notify's allow list
  })

  it('a job with a premium-rate row is refused at upload, the row named', async () => {
    const res = await answer(await callApi(w, 'POST', '/v2/jobs', { template_id: w.template.id, csv: 'phone number,name,ref\n+1 212 555 0100,A,1\n+1 900 555 0100,B,2' }))
    expect(res.body.errors.map((e: { message: string }) => e.message)).toEqual([`row 3: ${NOT_VALID}`])
  })
})

describe('personalisation as Notify prints it', () => {
  it('lists as "Ada, Bob and Cy"; objects as Python dicts; booleans as True and False; null and empty list items left out', () => {
    const r = (v: unknown) => render('((x))', { x: v }).text
    expect(r(['Ada', 'Bob', 'Cy'])).toBe('Ada, Bob and Cy')
    expect(r(['Ada', 'Bob'])).toBe('Ada and Bob')
    expect(r(['Ada'])).toBe('Ada')
    expect(r(['Ada', null, ' ', 'Cy'])).toBe('Ada and Cy')
    expect(r([1, true, { a: 'b' }])).toBe("1, True and {'a': 'b'}")
    expect(r(true)).toBe('True')
    expect(r(false)).toBe('False')
    expect(r({ first: 'Ada', n: 2, ok: null, tags: ["O'Neil", 'x'] })).toBe(`{'first': 'Ada', 'n': 2, 'ok': None, 'tags': ["O'Neil", 'x']}`)
    // Conditionals as notifications-utils' str2bool: True shows the text, so do "show" and "include".
    expect(render('((x??yes))', { x: true }).text).toBe('yes')
    expect(render('((x??yes))', { x: 'show' }).text).toBe('yes')
    expect(render('a((x??yes))', { x: false }).text).toBe('a')
  })

  it('through the API: the text sent says "Ada, Bob and Cy"', async () => {
    const t = await createTemplate(w.t.db, w.service.id, 'List', 'Hi ((names)), ok: ((ok))', 'tester')
    const res = await answer(await callApi(w, 'POST', '/v2/notifications/sms', { template_id: t.id, phone_number: '+1 212 555 0100', personalisation: { names: ['Ada', 'Bob', 'Cy'], ok: true } }))
    expect(res.body.content.body).toBe('Hi Ada, Bob and Cy, ok: True')
    const got = await answer(await callApi(w, 'GET', `/v2/notifications/${res.body.id}`))
    expect(got.body.body).toBe('Hi Ada, Bob and Cy, ok: True')
  })
})

describe('scheduled_for', () => {
  const problem = async (scheduled_for: unknown) => (await answer(await send({ phone_number: '+1 212 555 0100', scheduled_for }))).body.errors?.[0]

  it('must be an ISO 8601 time from now to 24 hours ahead, with Notify\'s messages', async () => {
    expect(await problem(new Date(Date.now() - 60_000).toISOString())).toEqual({ error: 'ValidationError', message: 'scheduled_for datetime can not be in the past' })
    expect(await problem(new Date(Date.now() + 25 * 3600_000).toISOString())).toEqual({ error: 'ValidationError', message: 'scheduled_for datetime can only be 24 hours in the future' })
    for (const bad of ['tomorrow', '2026-02-31T10:00:00Z', '2026-01-01T25:00:00Z']) {
      expect((await problem(bad)).message).toBe('scheduled_for datetime format is invalid. It must be a valid ISO8601 date time format, https://en.wikipedia.org/wiki/ISO_8601')
    }
    expect((await problem(5)).message).toBe('scheduled_for 5 is not of type string, null')
    expect(await w.t.db.query('SELECT id FROM notifications')).toHaveLength(0)
  })

  it('is stored, shown, not sent before its time (a send queue row with a time), and can be cancelled until then', async () => {
    const at = new Date(Date.now() + 2 * 3600_000)
    const when = at.toISOString().replace('Z', '+00:00')
    const sent = await answer(await send({ phone_number: '+1 212 555 0100', scheduled_for: when }))
    expect(sent).toMatchObject({ status: 201, body: { scheduled_for: when } })
    const [row] = await w.t.db.query('SELECT status, scheduled_for, retry_at FROM notifications WHERE id = $1', [sent.body.id])
    expect([row.status, new Date(row.scheduled_for).getTime(), new Date(row.retry_at).getTime()]).toEqual(['created', at.getTime(), at.getTime()])
    const dueNow = async () => (await w.t.db.query(`SELECT id FROM notifications WHERE ${due(sendQueue)}`)).map((r) => r.id)
    expect(await dueNow()).toEqual([])
    const shown = await answer(await callApi(w, 'GET', `/v2/notifications/${sent.body.id}`))
    expect(shown.body.scheduled_for).toBe(at.toISOString().replace('Z', '000Z'))
    // An unscheduled text is due at once.
    const now = await answer(await send({ phone_number: '+1 212 555 0100' }))
    expect(await dueNow()).toEqual([now.body.id])

    const cancelled = await answer(await callApi(w, 'POST', `/v2/notifications/${sent.body.id}/cancel`))
    expect(cancelled).toMatchObject({ status: 200, body: { status: 'cancelled' } })
    expect((await answer(await callApi(w, 'POST', `/v2/notifications/${sent.body.id}/cancel`))).status).toBe(400)
    expect((await answer(await callApi(w, 'POST', `/v2/notifications/${now.body.id}/cancel`))).body.errors[0].error).toBe('BadRequestError')
    // Once due it is the send engine's, as any text.
    const later = await answer(await send({ phone_number: '+1 212 555 0100', scheduled_for: when }))
    await w.t.db.query(`UPDATE notifications SET retry_at = now() - interval '1 second' WHERE id = $1`, [later.body.id])
    expect(await dueNow()).toEqual(expect.arrayContaining([later.body.id]))
  })
})

describe('names the CLI prints', () => {
  it('control characters (escape sequences, bidi overrides) are shown as their codes, never sent to the terminal raw', () => {
    expect(clean('results\x1b[2J\x1b]0;pwned\x07.csv')).toBe('results\\u{1b}[2J\\u{1b}]0;pwned\\u{7}.csv')
    expect(clean('a\r\nb\u202Ecsv.exe')).toBe('a\\u{d}\\u{a}b\\u{202e}csv.exe')
    expect(clean('Résultats août.csv')).toBe('Résultats août.csv')
    expect(clean(null)).toBe('')
  })
})
