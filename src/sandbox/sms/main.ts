/**
 * Runs an SMS provider sandbox on its own, for demos and benchmarks:
 *   node --import tsx src/sandbox/sms/main.ts --provider twilio --port 8993 --latency 50 --callback-delay 1000 \
 *     --outcomes delivered=0.9,temporaryFailure=0.05,permanentFailure=0.05 --failure-rate 0.01 --seed 1
 * A demo server: it texts no one, and its credentials are whatever the command line says.
 */
import { parseArgs } from 'node:util'
import { startSmsSandbox } from './server.ts'

const { values: a } = parseArgs({
  options: {
    provider: { type: 'string', default: 'twilio' },
    port: { type: 'string', default: '8993' },
    'account-sid': { type: 'string', default: 'ACsandbox' },
    'auth-token': { type: 'string', default: 'sandbox' },
    'api-key': { type: 'string', default: 'sandbox' },
    'api-secret': { type: 'string', default: 'sandbox' },
    latency: { type: 'string', default: '0' },
    'callback-delay': { type: 'string', default: '0' },
    outcomes: { type: 'string' },
    'failure-rate': { type: 'string', default: '0' },
    'rate-limit-rate': { type: 'string', default: '0' },
    seed: { type: 'string' },
  },
})

function num(name: string, text: string, min: number, max = Infinity): number {
  const n = Number(text)
  if (text.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
    console.error(`--${name} must be a number from ${min}${max < Infinity ? ` to ${max}` : ''}, not "${text}"`)
    process.exit(2)
  }
  return n
}
if (a.provider !== 'twilio' && a.provider !== 'vonage') {
  console.error('--provider must be twilio or vonage')
  process.exit(2)
}
const outcomes: Record<string, number> = {}
for (const pair of a.outcomes ? a.outcomes.split(',') : []) {
  const [k, v] = pair.split('=')
  if (!['delivered', 'temporaryFailure', 'permanentFailure'].includes(k) || v === undefined) {
    console.error('--outcomes takes delivered=p,temporaryFailure=p,permanentFailure=p')
    process.exit(2)
  }
  outcomes[k] = num('outcomes', v, 0, 1)
}

const sandbox = await startSmsSandbox({
  provider: a.provider, port: num('port', a.port!, 0, 65535), accountSid: a['account-sid'], authToken: a['auth-token'], apiKey: a['api-key'],
  apiSecret: a['api-secret'], latencyMs: num('latency', a.latency!, 0), callbackDelayMs: num('callback-delay', a['callback-delay']!, 0),
  outcomes, failureRate: num('failure-rate', a['failure-rate']!, 0, 1), rateLimitRate: num('rate-limit-rate', a['rate-limit-rate']!, 0, 1),
  seed: a.seed === undefined ? undefined : num('seed', a.seed, 0),
})
console.log(`SMS sandbox (${a.provider}; a demo: it texts no one) listening on ${sandbox.url}`)
console.log(`  texts: ${sandbox.url}/sandbox/ledger   counts: ${sandbox.url}/sandbox/stats`)
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void sandbox.close().then(() => process.exit(0)))
}
