/**
 * Vonage's SMS API, as the sandbox speaks it: POST /sms/json (form or JSON) with api_key and
 * api_secret; always HTTP 200, a status per part ("0" success; "1" throttled, "3" invalid
 * parameters, "4" invalid credentials, "5" internal error); delivery receipts (one per part) posted
 * as JSON to the callback URL, with the client-ref the text carried.
 */
import { randomBytes } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import { fateOf } from './outcomes.ts'
import type { SandboxCore } from './server.ts'

const GSM = /^[\n\r\x20-\x7e£¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà€]*$/

function parts(text: string, unicode: boolean): number {
  const [single, each] = unicode || !GSM.test(text) ? [70, 67] : [160, 153]
  return text.length <= single ? 1 : Math.ceil(text.length / each)
}
const stamp = (ms: number) => new Date(ms).toISOString().slice(0, 19).replace('T', ' ')
const scts = (ms: number) => new Date(ms).toISOString().slice(2, 16).replace(/[-T:]/g, '')

export function vonageRoutes(app: FastifyInstance, core: SandboxCore, creds: { apiKey: string; apiSecret: string }) {
  const { sandbox } = core
  app.post<{ Body: Record<string, string> }>('/sms/json', async (req, reply) => {
    const b = req.body ?? {}
    const answer = (status: string, errorText: string) => {
      if (status === '1') sandbox.stats.status429++
      else if (status === '5') sandbox.stats.status5xx++
      else sandbox.stats.refused++
      return reply.code(200).send({ 'message-count': '1', messages: [{ to: b.to ?? '', status, 'error-text': errorText }] })
    }
    if (b.api_key !== creds.apiKey || b.api_secret !== creds.apiSecret) return answer('4', 'Bad Credentials')
    if (core.draw() < sandbox.knobs.rateLimitRate) return answer('1', 'Throughput Rate Exceeded - please wait [ 30 ] and retry')
    if (core.draw() < sandbox.knobs.failureRate) return answer('5', 'Internal Error')
    if (!b.from || !b.to || !b.text) return answer('2', `Missing ${!b.from ? 'from' : !b.to ? 'to' : 'text'} param`)
    const fate = fateOf(b.to, sandbox.knobs.outcomes, core.draw)
    if (!/^[1-9]\d{6,14}$/.test(b.to) || fate === 'invalid') return answer('3', 'Invalid to address')

    const at = Date.now()
    const n = parts(b.text, b.type === 'unicode')
    const ids = Array.from({ length: n }, () => randomBytes(8).toString('hex').toUpperCase())
    const entry = { id: ids[0], to: b.to, from: b.from, body: b.text, parts: n, status: 'accepted', at }
    sandbox.ledger.push(entry)
    sandbox.stats.accepted++
    if (b.callback && fate !== 'silent') {
      const [status, errCode] = fate === 'delivered' ? ['delivered', '0'] : fate === 'permanent' ? ['failed', '27'] : ['expired', '6']
      for (const id of ids) {
        core.receipt(() => {
          entry.status = status
          return fetch(b.callback, {
            method: 'POST', headers: { 'content-type': 'application/json' },
            body: JSON.stringify({
              msisdn: b.to, to: b.from, 'network-code': '310260', messageId: id, price: '0.00790000', status, scts: scts(Date.now()),
              'err-code': errCode, ...(b['client-ref'] ? { 'client-ref': b['client-ref'] } : {}), 'api-key': creds.apiKey, 'message-timestamp': stamp(Date.now()),
            }),
          })
        })
      }
    }
    await core.latency()
    return reply.code(200).send({
      'message-count': String(n),
      messages: ids.map((id) => ({ to: b.to, 'message-id': id, status: '0', 'remaining-balance': '10.00000000', 'message-price': '0.00790000',
        network: '310260', ...(b['client-ref'] ? { 'client-ref': b['client-ref'] } : {}) })),
    })
  })
}
