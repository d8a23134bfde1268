/**
 * Herald's own API for a service's callbacks, beside Notify's v2 routes (Notify sets them in its admin
 * app only), authenticated as the rest of /v2 with one of the service's API keys:
 *
 *   GET    /v2/service/callbacks         {callbacks: [{kind, url, updated_at}]}: URLs, never tokens
 *   POST   /v2/service/callbacks         {kind, url, bearer_token}: sets or replaces one kind
 *   DELETE /v2/service/callbacks/:kind   removes it (404 when there is none)
 *
 * Bad input is a 400 in Notify's error format naming the field (settings.ts checkCallback).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Db } from '../../db/types.ts'
import type { Sealer } from '../../privacy/seal.ts'
import type { Caller } from '../api/auth.ts'
import { notFound, validation } from '../api/errors.ts'
import { notifyTime } from '../api/present.ts'
import { checkCallback, isCallbackKind, listCallbacks, removeCallback, setCallback, type CallbackKind, type CallbackSetting, CALLBACK_KINDS } from './settings.ts'

const shown = (c: CallbackSetting) => ({ kind: c.kind, url: c.url, updated_at: notifyTime(c.updatedAt) })

export function callbackRoutes(deps: { db: Db; sealer: Sealer; caller: (req: FastifyRequest) => Promise<Caller> }) {
  const { db, sealer, caller } = deps
  return (app: FastifyInstance) => {
    app.get('/v2/service/callbacks', async (req) => {
      const { service } = await caller(req)
      return { callbacks: (await listCallbacks(db, service.id)).map(shown) }
    })

    app.post('/v2/service/callbacks', async (req, reply) => {
      const { service } = await caller(req)
      const b = (typeof req.body === 'object' && req.body !== null && !Array.isArray(req.body) ? req.body : {}) as Record<string, unknown>
      const errors = checkCallback(b).map((p) => p.message)
      const extra = Object.keys(b).filter((k) => !['kind', 'url', 'bearer_token'].includes(k))
      if (extra.length) errors.push(`Additional properties are not allowed (${extra.join(', ')} was unexpected)`)
      if (errors.length) throw validation(errors)
      const set = await setCallback(db, sealer, service.id, b.kind as CallbackKind, b.url as string, b.bearer_token as string)
      return reply.code(201).send({ data: shown(set) })
    })

    app.delete<{ Params: { kind: string } }>('/v2/service/callbacks/:kind', async (req, reply) => {
      const { service } = await caller(req)
      if (!isCallbackKind(req.params.kind)) throw validation(`kind is not one of [${CALLBACK_KINDS.join(', ')}]`)
      if (!(await removeCallback(db, service.id, req.params.kind))) throw notFound()
      return reply.code(204).send()
    })
  }
}
