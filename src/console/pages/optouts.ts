/**
 * A service's opt-outs: residents who replied STOP to its inbound numbers and are not texted until
 * they reply START (src/messaging/inbound/optouts.ts). Anyone who may see the service's activity
 * sees how many and when; only its managers (manage_service) see the numbers, on the page and as
 * CSV. No one can remove an opt-out here: only the resident can, by texting START.
 */
import { inboundNumbersOf } from '../../messaging/inbound/numbers.ts'
import { listOptOuts, optOutsCsv, OPT_IN_WORDS, OPT_OUT_WORDS } from '../../messaging/inbound/optouts.ts'
import { canService } from '../users.ts'
import { httpError, type Pages } from '../app.ts'
import { sendCsv, timeIn } from './activity.ts'
import { field, serviceFor, type Form } from './services.ts'

const PAGE = 100

type P = { Params: { sid: string }; Querystring: Form }

export const optOutPages: Pages = (scope, { db, sealer, render }) => {
  scope.get<P>('/services/:sid/opt-outs', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'view_activity')
    const given = field(req.query, 'page') || '1'
    if (!/^[1-9]\d{0,6}$/.test(given)) throw httpError(400, 'page: enter a page number such as 1')
    const page = Number(given)
    const withNumbers = canService(req.user!, service.id, 'manage_service')
    const { total, rows } = await listOptOuts(db, sealer, service.id, { withNumbers, limit: PAGE, offset: (page - 1) * PAGE })
    return render(reply, 'optouts', {
      service, total, rows, page, pages: Math.max(1, Math.ceil(total / PAGE)), withNumbers, when: timeIn(service),
      numbers: await inboundNumbersOf(db, service.id), outWords: OPT_OUT_WORDS, inWords: OPT_IN_WORDS,
    })
  })

  scope.get<P>('/services/:sid/opt-outs.csv', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'manage_service')
    return sendCsv(reply, optOutsCsv(db, sealer, service.id), 'opt-outs.csv')
  })
}
