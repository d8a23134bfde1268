/**
 * A service's API keys, as GOV.UK Notify's page: each key's name, type, when it was made and
 * revoked, never its secret (which is not stored: keys.ts); a new key is shown once, on the page
 * after its form; a revoked key's tokens are refused from then on. Needs manage_api_keys.
 */
import { KEY_TYPES, KeySecrets, type KeyType } from '../../messaging/keys.ts'
import { createKey, listKeys, revokeKey } from '../../messaging/services.ts'
import { httpError, type Pages } from '../app.ts'
import { field, serviceFor, UUID, type Form } from './services.ts'

type P = { Params: { sid: string; kid: string }; Body: Form }

/** Notify's words for each type of key. */
export const KEY_LABELS: Record<KeyType, { name: string; hint: string }> = {
  normal: { name: 'Live', hint: 'sends to anyone' },
  team: { name: 'Team and guest list', hint: 'sends only to the team and the guest list' },
  test: { name: 'Test', hint: 'pretends to send messages' },
}

export const keyPages: Pages = (scope, { db, render, secret }) => {
  const secrets = new KeySecrets(secret)

  scope.get<P>('/services/:sid/api-keys', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'manage_api_keys')
    return render(reply, 'key-list', { service, keys: await listKeys(db, service.id), labels: KEY_LABELS, form: { type: 'normal' } })
  })

  scope.post<P>('/services/:sid/api-keys', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'manage_api_keys')
    const form = { name: field(req.body, 'name').trim(), type: field(req.body, 'type') }
    const keys = await listKeys(db, service.id)
    const again = (error: string, errorField: string) => render(reply.code(400), 'key-list', { service, keys, labels: KEY_LABELS, form, error, errorField })
    if (!form.name) return again('Enter a name for this key', 'name')
    if (form.name.length > 255) return again('Key name must be 255 characters or fewer', 'name')
    if (keys.some((k) => !k.revokedAt && k.name === form.name)) return again('A key with this name already exists', 'name')
    if (!KEY_TYPES.includes(form.type as KeyType)) return again('Select a type of key', 'type')
    const k = await createKey(db, secrets, service.id, form.name, form.type as KeyType)
    // Shown here once, never stored: this page is its only showing (no redirect to a page that could show it again).
    return render(reply, 'key-created', { service, name: form.name, key: k.key })
  })

  scope.post<P>('/services/:sid/api-keys/:kid/revoke', async (req, reply) => {
    const service = await serviceFor(db, req.user!, req.params.sid, 'manage_api_keys')
    if (!UUID.test(req.params.kid) || (await revokeKey(db, service.id, req.params.kid.toLowerCase())) === 0) {
      throw httpError(404, 'There is no such key in this service, or it is already revoked')
    }
    return reply.redirect(`/services/${service.id}/api-keys`)
  })
}
