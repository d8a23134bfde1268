/**
 * Runs the CommCare sandbox on its own, for demos:
 *   node --import tsx src/sandbox/commcare/main.ts --port 8990 --latency 50 --failure-rate 0 \
 *     --user herald --api-key sandbox --root-domain ny-covid
 * A demo server: its credentials are whatever the command line says, never real CommCare ones.
 */
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { num } from '../args.ts'
import { startCommCareSandbox } from './server.ts'

const { values: a } = parseArgs({
  options: {
    port: { type: 'string', default: '8990' },
    latency: { type: 'string', default: '0' },
    'failure-rate': { type: 'string', default: '0' },
    'rate-limit': { type: 'string' }, // every,burst,retryAfterSeconds e.g. 100,5,2
    seed: { type: 'string' },
    user: { type: 'string', default: 'herald' },
    'api-key': { type: 'string', default: 'sandbox' },
    'root-domain': { type: 'string', default: 'ny-covid' },
    'county-list': { type: 'string' }, // a county list JSON file instead of New York's
    'forward-to': { type: 'string' }, // URL for the case forwarder
    'forward-user': { type: 'string', default: '' },
    'forward-password': { type: 'string', default: '' },
  },
})


const rl = a['rate-limit']?.split(',')
if (rl && rl.length !== 3) {
  console.error('--rate-limit must be every,burst,retryAfterSeconds (e.g. 100,5,2)')
  process.exit(2)
}

const sandbox = await startCommCareSandbox({
  port: num('port', a.port, 0, 65535),
  latencyMs: num('latency', a.latency, 0),
  failureRate: num('failure-rate', a['failure-rate'], 0, 1),
  rateLimit: rl && { every: num('rate-limit', rl[0], 0), burst: num('rate-limit', rl[1], 0), retryAfterSeconds: num('rate-limit', rl[2], 0) },
  seed: a.seed === undefined ? undefined : num('seed', a.seed, 0),
  user: a.user,
  apiKey: a['api-key'],
  rootDomain: a['root-domain'],
  countyList: a['county-list'] ? JSON.parse(readFileSync(a['county-list'], 'utf8')) : undefined,
  forwardTo: a['forward-to'] ? { url: a['forward-to'], user: a['forward-user'], password: a['forward-password'] } : undefined,
})

console.log(`CommCare sandbox (a demo, not CommCare) listening on ${sandbox.url}`)
console.log(`  auth: Authorization: ApiKey ${a.user}:${a['api-key']}   county list: ${sandbox.url}/a/${a['root-domain']}/api/v0.5/fixture/?fixture_type=county_list`)

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void sandbox.close().then(() => process.exit(0)))
}
