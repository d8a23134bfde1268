/**
 * Runs an SMS provider sandbox on its own, for demos and benchmarks:
 *   node --import tsx src/sandbox/sms/main.ts --provider twilio --port 8993 --latency 50 --callback-delay 1000 \
 *     --outcomes delivered=0.9,temporaryFailure=0.05,permanentFailure=0.05 --failure-rate 0.01 --seed 1
 *   node --import tsx src/sandbox/sms/main.ts --provider vonage          (port 8994)
 * A demo server: it texts no one, and its credentials are whatever the command line says, never a real account's.
 */
import { parseArgs } from 'node:util'
import { fail, num } from '../args.ts'
import { MIX_KEYS, type OutcomeMix } from './outcomes.ts'
import { startSmsSandbox } from './server.ts'

const { values: a } = parseArgs({
  options: {
    provider: { type: 'string', default: 'twilio' },
    port: { type: 'string' }, // default 8993 for twilio, 8994 for vonage, so the two run side by side
    'account-sid': { type: 'string', default: 'ACsandbox' },
    'auth-token': { type: 'string', default: 'sandbox' },
    'api-key': { type: 'string', default: 'sandbox' },
    'api-secret': { type: 'string', default: 'sandbox' },
    latency: { type: 'string', default: '0' },
    'callback-delay': { type: 'string', default: '0' },
    outcomes: { type: 'string' }, // delivered=w,temporaryFailure=w,permanentFailure=w; absent = all delivered
    'failure-rate': { type: 'string', default: '0' },
    'rate-limit-rate': { type: 'string', default: '0' },
    seed: { type: 'string' },
  },
})



const provider = a.provider === 'twilio' || a.provider === 'vonage' ? a.provider : fail('--provider must be twilio or vonage')
let outcomes: Partial<OutcomeMix> | undefined
for (const pair of a.outcomes ? a.outcomes.split(',') : []) {
  const [k, v] = pair.split('=')
  if (!(MIX_KEYS as readonly string[]).includes(k) || v === undefined) fail(`--outcomes takes weight pairs of ${MIX_KEYS.join(', ')}: delivered=0.9,permanentFailure=0.1`)
  outcomes = { ...outcomes, [k]: num('outcomes', v, 0) }
}

const sandbox = await startSmsSandbox({
  provider,
  port: num('port', a.port ?? (provider === 'twilio' ? '8993' : '8994'), 0, 65535),
  accountSid: a['account-sid'], authToken: a['auth-token'], apiKey: a['api-key'], apiSecret: a['api-secret'],
  latencyMs: num('latency', a.latency, 0),
  callbackDelayMs: num('callback-delay', a['callback-delay'], 0),
  outcomes,
  failureRate: num('failure-rate', a['failure-rate'], 0, 1),
  rateLimitRate: num('rate-limit-rate', a['rate-limit-rate'], 0, 1),
  seed: a.seed === undefined ? undefined : num('seed', a.seed, 0),
})

console.log(`SMS sandbox (${provider}; a demo: it texts no one) listening on ${sandbox.url}`)
console.log(provider === 'twilio'
  ? `  try: curl -u ${a['account-sid']}:${a['auth-token']} ${sandbox.url}/2010-04-01/Accounts/${a['account-sid']}/Messages.json --data-urlencode To=+12125550100 --data-urlencode From=+15005550006 -d Body=hello`
  : `  try: curl ${sandbox.url}/sms/json -d api_key=${a['api-key']} -d api_secret=${a['api-secret']} -d from=Herald -d to=12125550100 -d text=hello`)
console.log(`  texts: ${sandbox.url}/sandbox/ledger   counts: ${sandbox.url}/sandbox/stats`)

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void sandbox.close().then(() => process.exit(0)))
}
