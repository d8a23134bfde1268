/**
 * A service's callbacks, as GOV.UK Notify's Callbacks page (API integration): where Herald POSTs each
 * delivery status and each received text, with the bearer token it sends (asked for, never shown
 * again), and the callbacks that failed lately (the answer or error, when). Needs manage_service.
 */
import { callbackFailures, callbacksWaiting, CALLBACK_KINDS, checkCallback, isCallbackKind, listCallbacks, removeCallback, setCallback } from '../../messaging/callbacks/settings.ts'
import type { Service } from '../../messaging/services.ts'
import type { Queryable } from '../../db/types.ts'
import { httpError, type Pages } from '../app.ts'
import { field, serviceFor, type Form } from './services.ts'

type P = { Params: { sid: string; kind: string }; Body: Form }

/** Notify's words for each kind. */
export const CALLBACK_LABELS = {
  delivery_status: { name: 'Delivery receipts', hint: 'each text’s status once it is delivered or has failed' },
  inbound_sms: { name: 'Received text messages', hint: 'each text your service receives' },
}

async function page(db: Queryable, service: Service) {
  return { service, kinds: CALLBACK_KINDS, labels: CALLBACK_LABELS, callbacks: Object.fromEntries((await listCallbacks(db, service.id)).map((c) => [c.kind, c])),
    failures: await callbackFailures(db, service.id), waiting: await callbacksWaiting(db, service.id) }
}

export const callbackPages: Pages = (scope, { db, render, sealer }) => {
  scope.get<P>('/services/:sid/callbacks', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'manage_service')
    return render(reply, 'callbacks', { ...(await page(db, service)), form: {} })
  })

  scope.post<P>('/services/:sid/callbacks/:kind', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'manage_service')
    const kind = req.params.kind
    if (!isCallbackKind(kind)) throw httpError(404, 'There is no such kind of callback')
    const form = { kind, url: field(req.body, 'url').trim(), bearer_token: field(req.body, 'bearer_token') }
    const [problem] = checkCallback(form)
    if (problem) {
      const error = problem.field === 'url' ? 'Enter a URL that starts with https://' : 'Enter a bearer token of at least 10 characters'
      // The token typed is not shown back: only the URL is.
      return render(reply.code(400), 'callbacks', { ...(await page(db, service)), form: { kind, url: form.url }, error, errorField: `${kind}-${problem.field}` })
    }
    await setCallback(db, sealer, service.id, kind, form.url, form.bearer_token)
    return reply.redirect(`/services/${service.id}/callbacks`)
  })

  scope.post<P>('/services/:sid/callbacks/:kind/remove', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'manage_service')
    if (!isCallbackKind(req.params.kind) || !(await removeCallback(db, service.id, req.params.kind))) throw httpError(404, 'This service has no such callback')
    return reply.redirect(`/services/${service.id}/callbacks`)
  })
}
