/**
 * The pipeline in the console: the home page (every engine's queue, today's work, the last 14
 * days), and the page groups for files, people, case sync and exposure (pipeline-*.ts). The whole
 * area needs the pipeline's `view` permission (names and dates of birth are on these pages);
 * retries and resolutions need `operate`, and their buttons show only to operators.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { ACTIVITY, dailyActivity } from '../../engine/activity.ts'
import { age, allStats } from '../../engine/queues.ts'
import { httpError, type ConsoleContext, type Pages } from '../app.ts'
import { canPipeline } from '../users.ts'
import { casePages } from './pipeline-cases.ts'
import { filePages } from './pipeline-files.ts'
import { peoplePages } from './pipeline-people.ts'

export type PipelinePages = (p: FastifyInstance, ctx: ConsoleContext & { page: PageHelpers }) => void

export interface PageHelpers {
  /** What every pipeline view gets besides its own data: whether the user may operate, and the formatters. */
  view: (req: FastifyRequest, data: Record<string, unknown>) => Record<string, unknown>
  /** Throws 403 unless the user may retry and resolve. */
  mustOperate: (req: FastifyRequest) => void
  /** Who did it, for the retry_requested events: the console and the user's email (staff, not residents). */
  by: (req: FastifyRequest) => string
}

/** A time as the CLI prints it (UTC). */
export const when = (t: unknown) => (t ? new Date(t as string).toISOString().slice(0, 19).replace('T', ' ') : '')
/** An event's detail as the CLI prints it: k=v k=v. */
export const detailText = (d: unknown) =>
  d && typeof d === 'object' ? Object.entries(d).filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(', ') : typeof v === 'object' ? JSON.stringify(v) : v}`).join(' ') : ''
/** Digits only, else a 404: an id a person typed is never a 500. */
export function idOf(raw: string, what: string): string {
  if (!/^\d{1,15}$/.test(raw)) throw httpError(404, `There is no ${what} ${raw.slice(0, 40)}`)
  return raw
}

const LABELS: Record<(typeof ACTIVITY)[number], string> = {
  files: 'Files', rows: 'Rows', people: 'New people', casesPosted: 'Cases posted', codesIssued: 'Codes issued',
}

export const pipelinePages: Pages = (scope, ctx) => {
  const page: PageHelpers = {
    view: (req, data) => ({ ...data, operate: canPipeline(req.user!, 'operate'), when, detailText }),
    mustOperate: (req) => {
      if (!canPipeline(req.user!, 'operate')) throw httpError(403, 'Retrying and resolving need the pipeline operate permission: ask an administrator.')
    },
    by: (req) => `console ${req.user!.email}`,
  }
  void scope.register(async (p) => {
    p.addHook('preHandler', async (req) => {
      if (!canPipeline(req.user!, 'view')) throw httpError(403, 'The pipeline pages need the pipeline view permission: ask an administrator.')
    })

    p.get('/pipeline', async (req, reply) => {
      const queues = (await allStats(ctx.db)).map((q) => ({ ...q, age: age(q.oldestWaitingSeconds) }))
      const days = await dailyActivity(ctx.db, 14)
      const max = Object.fromEntries(ACTIVITY.map((k) => [k, Math.max(1, ...days.map((d) => d[k]))]))
      return ctx.render(reply, 'pipeline-home', page.view(req, { queues, days, today: days.at(-1), max, kinds: ACTIVITY, labels: LABELS }))
    })

    const more = { ...ctx, page }
    filePages(p, more)
    peoplePages(p, more)
    casePages(p, more)
  })
}
