/**
 * Runs the verification server sandbox on its own, for demos:
 *   node --import tsx src/sandbox/verification/main.ts --port 8991 --api-key sandbox \
 *     --latency 50 --quota 600 --failures sms_failure=0.02,sms_queue_full=0.01 --seed 1
 * A demo server: its API key is whatever the command line says, never a real realm's, and it texts no one.
 */
import { parseArgs } from 'node:util'
import { fail, num } from '../args.ts'
import { INJECTABLE, type Injectable } from './issue.ts'
import { startVerificationSandbox } from './server.ts'

const { values: a } = parseArgs({
  options: {
    port: { type: 'string', default: '8991' },
    'api-key': { type: 'string', default: 'sandbox' },
    latency: { type: 'string', default: '0' },
    quota: { type: 'string' }, // codes per minute; absent = unlimited
    failures: { type: 'string' }, // kind=probability,... e.g. sms_failure=0.02,maintenance_mode=0.01
    seed: { type: 'string' },
  },
})



const failures: Partial<Record<Injectable, number>> = {}
for (const pair of a.failures ? a.failures.split(',') : []) {
  const [kind, p] = pair.split('=')
  if (!(INJECTABLE as readonly string[]).includes(kind) || p === undefined) fail(`--failures takes kind=probability pairs; kinds: ${INJECTABLE.join(', ')}`)
  failures[kind as Injectable] = num('failures', p, 0, 1)
}

const sandbox = await startVerificationSandbox({
  port: num('port', a.port, 0, 65535),
  apiKey: a['api-key'],
  latencyMs: num('latency', a.latency, 0),
  quota: a.quota === undefined ? undefined : { perMinute: num('quota', a.quota, 0) },
  failures,
  seed: a.seed === undefined ? undefined : num('seed', a.seed, 0),
})

console.log(`Verification server sandbox (a demo: it texts no one) listening on ${sandbox.url}`)
console.log(`  auth: X-API-Key: ${a['api-key']}   texted codes: ${sandbox.url}/sandbox/ledger`)

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void sandbox.close().then(() => process.exit(0)))
}
