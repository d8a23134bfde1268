/** The files ingest read: each file's totals, one file per county with its error rows (and as CSV), and a failed file tried again. */
import { fileSummary, countyTotals, inboxFiles, listFiles, retryFile, retryInbox } from '../../ingest/report.ts'
import { readCounties } from '../../link/counties.ts'
import { displayName } from '../../storage/local.ts'
import { csvLine } from '../../util/csv.ts'
import { httpError } from '../app.ts'
import { idOf, type PipelinePages } from './pipeline.ts'

type Query = { retried?: string }
const retriedOf = (q: Query) => (q.retried !== undefined && /^\d{1,6}$/.test(q.retried) ? Number(q.retried) : undefined)

export const filePages: PipelinePages = (p, { db, render, page }) => {
  p.get<{ Querystring: Query }>('/pipeline/files', async (req, reply) => {
    const files = (await listFiles(db, 200)).map((f) => ({ ...f, display: displayName(f.name) }))
    // A file that failed before ingest knew its content has no files row: the inbox names it.
    const failed = (await inboxFiles(db, { failed: true, limit: 200 })).map((i) => ({ ...i, display: displayName(i.uri) }))
    return render(reply, 'pipeline-files', page.view(req, { files, failed, retried: retriedOf(req.query) }))
  })

  p.get<{ Params: { id: string }; Querystring: Query }>('/pipeline/files/:id', async (req, reply) => {
    const id = Number(idOf(req.params.id, 'file'))
    const s = await fileSummary(db, id)
    if (!s) throw httpError(404, `There is no file ${id}`)
    const counties = await readCounties(db)
    const byCounty = countyTotals(s).map((c) => ({ ...c, name: counties.byFips.get(Number(c.county))?.display ?? (c.county === 'unknown' ? 'Unknown county' : `County ${c.county}`) }))
    const failedInbox = (await inboxFiles(db, { failed: true, limit: 1000 })).filter((i) => i.file_id === id || (i.file_id === null && i.uri === s.file))
    return render(reply, 'pipeline-file', page.view(req, { id, s, display: displayName(s.file), byCounty, failedInbox, retried: retriedOf(req.query) }))
  })

  p.get<{ Params: { id: string } }>('/pipeline/files/:id/errors.csv', async (req, reply) => {
    const id = Number(idOf(req.params.id, 'file'))
    const s = await fileSummary(db, id)
    if (!s) throw httpError(404, `There is no file ${id}`)
    const body = csvLine(['line', 'reason']) + s.errors.map((e) => csvLine([String(e.line), e.reason])).join('')
    return reply.type('text/csv; charset=utf-8').header('cache-control', 'no-store')
      .header('content-disposition', `attachment; filename="file-${id}-errors.csv"`).send(body)
  })

  p.post<{ Params: { id: string } }>('/pipeline/files/:id/retry', async (req, reply) => {
    page.mustOperate(req)
    const id = Number(idOf(req.params.id, 'file'))
    if (!(await fileSummary(db, id))) throw httpError(404, `There is no file ${id}`)
    const done = await retryFile(db, id, page.by(req))
    return reply.redirect(`/pipeline/files/${id}?retried=${done.length}`)
  })

  // A failed inbox entry (`herald queue retry ingest ID`): for a file that failed before ingest knew its content.
  p.post<{ Body: { inbox?: string } }>('/pipeline/files/retry', async (req, reply) => {
    page.mustOperate(req)
    const inbox = req.body.inbox?.trim()
    if (!inbox || !/^\d{1,15}$/.test(inbox)) throw httpError(400, 'inbox: name the failed file to try again (its inbox id)')
    const done = await retryInbox(db, [inbox], page.by(req))
    return reply.redirect(`/pipeline/files?retried=${done.length}`)
  })
}
