/**
 * Runs the Twilio Lookup sandbox on its own, for demos:
 *   node --import tsx src/sandbox/lookup/main.ts --port 8992 --account-sid ACsandbox --auth-token sandbox \
 *     --latency 50 --max-concurrent 20
 * A demo server: its credentials are whatever the command line says, never a real Twilio account's.
 */
import { parseArgs } from 'node:util'
import { num } from '../args.ts'
import { startLookupSandbox } from './server.ts'

const { values: a } = parseArgs({
  options: {
    port: { type: 'string', default: '8992' },
    'account-sid': { type: 'string', default: 'ACsandbox' },
    'auth-token': { type: 'string', default: 'sandbox' },
    latency: { type: 'string', default: '0' },
    'max-concurrent': { type: 'string' }, // absent = no cap
  },
})


const sandbox = await startLookupSandbox({
  port: num('port', a.port, 0, 65535),
  accountSid: a['account-sid'],
  authToken: a['auth-token'],
  latencyMs: num('latency', a.latency, 0),
  maxConcurrent: a['max-concurrent'] === undefined ? undefined : num('max-concurrent', a['max-concurrent'], 0),
})

console.log(`Twilio Lookup sandbox (a demo, not Twilio) listening on ${sandbox.url}`)
console.log(`  try: curl -u ${a['account-sid']}:${a['auth-token']} '${sandbox.url}/v2/PhoneNumbers/%2B12125550100?Fields=line_type_intelligence'`)

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void sandbox.close().then(() => process.exit(0)))
}
