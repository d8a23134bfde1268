/**
 * Residents' replies in tests: Herald's inbound webhooks on a loopback port of their own (their URL
 * is what Twilio signs, so it is known before the routes are made), and one SMS sandbox of each
 * provider posting to them (`POST /sandbox/inbound`). Use inside a file that has a messagingWorld.
 */
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest'
import type { FastifyInstance } from 'fastify'
import { startHttpServer } from '../../src/http/server.ts'
import { createLogger } from '../../src/log.ts'
import { inboundRoutes, inboundUrls } from '../../src/messaging/inbound/routes.ts'
import { startSmsSandbox, type SmsSandbox } from '../../src/sandbox/sms/server.ts'
import { SECRET } from './exposure.ts'
import { sealer, type World } from './messaging.ts'

export const INBOUND_NUMBER = '+12125550000'

export interface InboundWorld { publicUrl: string; twilio: SmsSandbox; vonage: SmsSandbox }

export function inboundWorld(w: World): InboundWorld {
  const iw = {} as InboundWorld
  let app: FastifyInstance
  beforeAll(async () => {
    app = await startHttpServer('127.0.0.1', 0, [])
    const a = app.server.address()
    iw.publicUrl = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`
    await app.close()
    // Again on the same port, now that its URL is known.
    app = await startHttpServer('127.0.0.1', Number(new URL(iw.publicUrl).port), [
      (s) => inboundRoutes({ db: w.t.db, sealer, log: createLogger('silent'), publicUrl: iw.publicUrl, secret: SECRET, twilioAuthToken: 'token' })(s)])
  })
  afterAll(async () => app?.close())
  beforeEach(async () => {
    const urls = inboundUrls(iw.publicUrl, SECRET)
    iw.twilio = await startSmsSandbox({ provider: 'twilio', accountSid: 'ACtest', authToken: 'token', inboundUrl: urls.twilio, seed: 1 })
    iw.vonage = await startSmsSandbox({ provider: 'vonage', apiKey: 'vk', apiSecret: 'vs', inboundUrl: urls.vonage, seed: 2 })
  })
  afterEach(async () => {
    await Promise.all([iw.twilio.close(), iw.vonage.close()])
  })
  return iw
}

/** A resident's text, posted by the sandbox of `provider` as its inbound webhook; answers the sandbox's {id, status}. */
export async function reply(iw: InboundWorld, from: string, body: string, opts: { provider?: 'twilio' | 'vonage'; to?: string } = {}) {
  const sandbox = opts.provider === 'vonage' ? iw.vonage : iw.twilio
  const res = await fetch(`${sandbox.url}/sandbox/inbound`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ from, to: opts.to ?? INBOUND_NUMBER, body }),
  })
  return { code: res.status, ...(await res.json()) as { id: string; status: number; provider: string } }
}
