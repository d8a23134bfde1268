/**
 * GET /v2/received-text-messages, as GOV.UK Notify's (app/v2/inbound_sms/get_inbound_sms.py): the
 * service's received texts newest first, 250 a page, `older_than` a text's id for the next page;
 * `links.current` without the query, `links.next` only when the page has texts. Any key type.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Db } from '../../db/types.ts'
import type { Sealer } from '../../privacy/seal.ts'
import type { Caller } from '../api/auth.ts'
import { validation } from '../api/errors.ts'
import { receivedTexts } from './receive.ts'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

export function receivedTextRoutes(deps: { db: Db; sealer: Sealer; caller: (req: FastifyRequest) => Promise<Caller> }) {
  return (app: FastifyInstance) => {
    app.get('/v2/received-text-messages', async (req) => {
      const { service } = await deps.caller(req)
      const q = req.query as Record<string, string | string[] | undefined>
      const errors: string[] = []
      const extra = Object.keys(q).filter((k) => k !== 'older_than')
      if (extra.length) errors.push(`Additional properties are not allowed (${extra.join(', ')} was unexpected)`)
      const olderThan = [q.older_than ?? []].flat()[0]
      if (olderThan !== undefined && !UUID.test(olderThan)) errors.push('older_than is not a valid UUID')
      if (errors.length) throw validation(errors)
      const texts = await receivedTexts(deps.db, deps.sealer, service.id, olderThan?.toLowerCase())
      const current = `${req.protocol}://${req.headers.host ?? 'localhost'}/v2/received-text-messages`
      return {
        received_text_messages: texts,
        links: texts.length ? { current, next: `${current}?older_than=${texts[texts.length - 1].id}` } : { current },
      }
    })
  }
}
