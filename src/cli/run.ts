/** `herald start` (the embedded default, served to other terminals) and `herald run` (engines in the foreground). */
import { once } from 'node:events'
import { mkdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { commcareClient, casesyncInEngine, casesyncOutEngine, fetchCounties } from '../casesync/index.ts'
import type { CommCareClient } from '../casesync/client.ts'
import { forwarderRoutes } from '../casesync/forwarder.ts'
import { describeDb } from '../db/connect.ts'
import type { Db } from '../db/types.ts'
import type { Engine } from '../engine/engine.ts'
import { Counters } from '../engine/engine.ts'
import { serveMetrics } from '../engine/metrics.ts'
import { EngineLoops, runEngines, type RunFailures } from '../engine/runner.ts'
import { Health } from '../http/health.ts'
import { startHttpServer, type Routes } from '../http/server.ts'
import { ingestEngine } from '../ingest/index.ts'
import { linkEngine } from '../link/index.ts'
import { startCommCareSandbox, type CommCareSandbox } from '../sandbox/commcare/server.ts'
import { startLookupSandbox } from '../sandbox/lookup/server.ts'
import { startVerificationSandbox } from '../sandbox/verification/server.ts'
import { LookupClient, VerificationClient } from '../exposure/clients.ts'
import { exposureEngines } from '../exposure/index.ts'
import type { Config } from '../config.ts'
import { consoleFor } from '../console/index.ts'
import { countUsers } from '../console/users.ts'
import { messagingKeys, messagingRoutes } from '../messaging/index.ts'
import { callbacksEngine } from '../messaging/callbacks/engine.ts'
import { emailEngine } from '../messaging/email/engine.ts'
import { startEmail, type EmailOutside } from '../messaging/email/index.ts'
import { jobsEngine } from '../messaging/jobs/jobs.ts'
import { receiptsEngine } from '../messaging/receipts/engine.ts'
import { nightlyEngine } from '../messaging/retention/nightly.ts'
import { storeFor } from '../storage/index.ts'
import { receiptRoutes, receiptUrls } from '../messaging/receipts/routes.ts'
import { inboundRoutes, inboundUrls } from '../messaging/inbound/routes.ts'
import { sendEngine } from '../messaging/send/engine.ts'
import type { SmsProvider } from '../messaging/send/provider.ts'
import { registerProviders } from '../messaging/send/providers.ts'
import { TwilioSms } from '../messaging/send/twilio.ts'
import { VonageSms } from '../messaging/send/vonage.ts'
import { secretKey } from '../privacy/keys.ts'
import { startSmsSandbox } from '../sandbox/sms/server.ts'
import { errorText, type Logger } from '../log.ts'
import { stopSignal, withDb } from './context.ts'
import { loadCountyFile } from './link.ts'

const SANDBOX_COUNTIES = fileURLToPath(new URL('../sandbox/commcare/county_list_ny.json', import.meta.url))

export interface Outside {
  /** CommCare, real or the sandbox; absent: case sync is off. */
  commcare?: CommCareClient
  /** The verification server and the phone lookup, real or sandboxes; absent: exposure is off. */
  exposure?: { verification: VerificationClient; lookup?: LookupClient }
  /** SMS providers, real or sandboxes, best first; empty: messaging accepts texts but sends none. */
  sms: SmsProvider[]
  /** The email provider, real or the sandbox's SMTP; absent: emails are accepted and none is sent. */
  email?: EmailOutside
}

/** `herald start` serves the messaging API here unless HERALD_HTTP_PORT says otherwise (GOV.UK Notify's local port). */
const START_HTTP_PORT = 6011

const exposure = (i: number) => (config: Config, log: Logger, o: Outside) =>
  o.exposure ? exposureEngines(config, log, o.exposure)[i] : 'no verification server: set HERALD_ENX_URL'

/** Every engine Herald has, in pipeline order. Later engines join this list. A string: why it cannot run here. */
export const ENGINES: Record<string, (config: Config, log: Logger, outside: Outside) => Engine | string> = {
  ingest: (config, log) => ingestEngine(config, log),
  link: (config, log) => linkEngine(config, log),
  'casesync-out': (config, log, o) => (o.commcare ? casesyncOutEngine(config, log, o.commcare) : 'no CommCare: set HERALD_COMMCARE_URL'),
  'casesync-in': (config, log, o) => (o.commcare ? casesyncInEngine(config, log, o.commcare) : 'no CommCare: set HERALD_COMMCARE_URL'),
  'exposure-intake': exposure(0),
  'exposure-check': exposure(1),
  'exposure-issue': exposure(2),
  send: (config, log, o) => (o.sms.length ? sendEngine({ providers: o.sms, sealer: messagingKeys(config).sealer, region: config.exposure.defaultRegion,
    concurrency: config.messaging.sendConcurrency, recoverySeconds: config.messaging.providerRecoverySeconds,
    rates: { byCode: config.messaging.internationalRates, fallback: config.messaging.internationalMultiplier }, log, workerId: config.workerId }) : 'no SMS provider: set HERALD_SMS_PROVIDERS'),
  email: (config, log, o) => (o.email ? emailEngine({ provider: o.email.provider, sealer: messagingKeys(config).sealer, from: config.email.from,
    concurrency: config.email.concurrency, log, workerId: config.workerId }) : 'no email provider: set HERALD_EMAIL_PROVIDER'),
  receipts: (_config, log) => receiptsEngine(log),
  callbacks: (config, log) => callbacksEngine({ sealer: messagingKeys(config).sealer, log, workerId: config.workerId }),
  jobs: (config, log) => jobsEngine({ sealer: messagingKeys(config).sealer, region: config.exposure.defaultRegion, store: storeFor(config.messaging.jobStore, config),
    workerId: config.workerId }, log),
  nightly: (config, log) => nightlyEngine({ store: storeFor(config.messaging.jobStore, config), at: config.messaging.nightlyAt, timezone: config.exposure.timezone, log,
    workerId: config.workerId }),
}

export function engineNames(list: string | undefined): string[] {
  const names = list ? list.split(',').map((s) => s.trim()).filter(Boolean) : Object.keys(ENGINES)
  const unknown = names.filter((n) => !ENGINES[n])
  if (unknown.length > 0) throw new Error(`unknown engine ${unknown.join(', ')}; engines: ${Object.keys(ENGINES).join(', ')}`)
  return names
}

/**
 * Outside systems: the real ones configured, else, for `herald start`, the sandboxes on loopback.
 * Returns the clients, the sandboxes' addresses for the banner, and how to stop them.
 */
async function startOutside(config: Config, serve: boolean, log: Logger, httpPort: number | undefined) {
  const stops: (() => Promise<void>)[] = []
  const sandboxes: string[] = []
  let commcareUrl = config.commcare.url
  if (!commcareUrl && serve) {
    const { user, apiKey, rootDomain, forwarder } = config.commcare
    const sandbox: CommCareSandbox = await startCommCareSandbox({
      user, apiKey, rootDomain,
      forwardTo: httpPort && forwarder ? { url: `http://127.0.0.1:${httpPort}/commcare/cases`, ...forwarder } : undefined,
    })
    stops.push(() => sandbox.close())
    sandboxes.push(`commcare at ${sandbox.url} (see src/sandbox/commcare/README.md)`)
    commcareUrl = sandbox.url
  }
  if (!commcareUrl) log.info('case sync is off: no CommCare configured (HERALD_COMMCARE_URL)')

  const x = config.exposure
  let enxUrl = x.enxUrl
  let lookupUrl = x.lookupUrl
  if (!enxUrl && serve) {
    const enx = await startVerificationSandbox({ apiKey: x.enxApiKey })
    const lookup = await startLookupSandbox({ accountSid: x.twilioAccountSid, authToken: x.twilioAuthToken })
    stops.push(() => enx.close(), () => lookup.close())
    sandboxes.push(`verification at ${enx.url} (ledger: ${enx.url}/sandbox/ledger)`, `lookup at ${lookup.url} (see src/sandbox/lookup/README.md)`)
    enxUrl = enx.url
    lookupUrl = lookup.url
  }
  if (!enxUrl) log.info('exposure notification is off: no verification server configured (HERALD_ENX_URL)')
  const timeoutMs = config.commcare.timeoutMs
  const m = config.messaging
  const publicUrl = m.publicUrl ?? (httpPort ? `http://${config.httpHost}:${httpPort}` : undefined)
  const callbacks = publicUrl ? receiptUrls(publicUrl, secretKey(config)) : undefined
  const sms = { twilio: { url: m.twilioUrl }, vonage: { url: m.vonageUrl } }
  let smsProviders = m.providers
  if (smsProviders.length === 0 && serve) {
    for (const provider of ['twilio', 'vonage'] as const) {
      // Residents' replies (POST /sandbox/inbound) go to Herald's inbound webhook, as a provider's dashboard would send them.
      const inboundUrl = publicUrl ? inboundUrls(publicUrl, secretKey(config))[provider] : undefined
      const sandbox = await startSmsSandbox({ provider, accountSid: x.twilioAccountSid, authToken: x.twilioAuthToken, apiKey: m.vonageApiKey, apiSecret: m.vonageApiSecret,
        inboundUrl })
      stops.push(() => sandbox.close())
      sandboxes.push(`sms (${provider}) at ${sandbox.url} (ledger: ${sandbox.url}/sandbox/ledger)`)
      sms[provider].url = sandbox.url
    }
    smsProviders = ['twilio', 'vonage']
  }
  if (smsProviders.length === 0) log.info('sending is off: no SMS provider configured (HERALD_SMS_PROVIDERS)')
  const email = await startEmail(config, serve, publicUrl, timeoutMs)
  if (email) stops.push(() => email.stop())
  if (email?.sandbox) sandboxes.push(email.sandbox)
  if (!email) log.info('email is off: no email provider configured (HERALD_EMAIL_PROVIDER)')
  const outside: Outside = {
    commcare: commcareUrl ? commcareClient(config, commcareUrl) : undefined,
    exposure: enxUrl ? {
      verification: new VerificationClient({ url: enxUrl, apiKey: x.enxApiKey, timeoutMs }),
      lookup: lookupUrl ? new LookupClient({ url: lookupUrl, accountSid: x.twilioAccountSid, authToken: x.twilioAuthToken, timeoutMs }) : undefined,
    } : undefined,
    email,
    sms: smsProviders.map((p) => p === 'twilio'
      ? new TwilioSms({ url: sms.twilio.url, accountSid: x.twilioAccountSid, authToken: x.twilioAuthToken, timeoutMs, callbackUrl: callbacks?.twilio })
      : new VonageSms({ url: sms.vonage.url, apiKey: m.vonageApiKey, apiSecret: m.vonageApiSecret, timeoutMs, callbackUrl: callbacks?.vonage })),
  }
  // Keep-alive connections would hold the process open after the engines stop.
  stops.push(async () => {
    await outside.commcare?.close()
    await outside.exposure?.verification.close()
    await outside.exposure?.lookup?.close()
    for (const p of outside.sms) await p.close()
  })
  return { outside, sandboxes, publicUrl, stop: async () => { for (const s of stops) await s() } }
}

async function loadCountiesAtStart(db: Db, outside: Outside, serve: boolean, log: Logger) {
  if (outside.commcare) {
    try {
      const n = await fetchCounties(db, outside.commcare)
      log.info({ counties: n }, 'loaded the county list from CommCare')
      return
    } catch (err) {
      log.warn({ err: errorText(err) }, 'could not load the county list from CommCare; keeping the one loaded before')
    }
  }
  if (serve && db.kind === 'pglite-server' && (await db.query('SELECT 1 FROM counties LIMIT 1')).length === 0) {
    const r = await loadCountyFile(db, SANDBOX_COUNTIES)
    log.info({ counties: r.total }, 'loaded the sandbox county list (New York); herald counties load FILE replaces it')
  }
}

/** An --until-idle run during which an engine's round threw or its work failed (the log has each error). */
export class RunFailed extends Error {
  constructor(failures: RunFailures) {
    const what = [...failures].map(([engine, f]) => `${engine} (${[
      f.rounds ? `${f.rounds} round${f.rounds > 1 ? 's' : ''} failed` : '', f.items ? `${f.items} failed` : ''].filter(Boolean).join(', ')})`)
    super(`the run ended with failures: ${what.join(', ')}; the log says why`)
    this.name = 'RunFailed'
  }
}

/** What a process runs: the HTTP server (API, console, webhooks, forwarder), the engines, or both. */
export type Role = 'api' | 'engines' | 'all'

/** An engine whose loop has not come round for this many poll intervals (at least a minute) fails /readyz. */
const STALL_POLLS = 12
const STALL_MIN_MS = 60_000

export async function runCommand(opts: { engines?: string; untilIdle?: boolean; role?: Role }, serve = false) {
  const role = opts.role ?? 'all'
  if (role === 'api' && (opts.engines || opts.untilIdle)) throw new Error('--role api runs no engines: --engines and --until-idle are for --role engines or all')
  await withDb(async ({ config, db, log }) => {
    // The port the API has, here or on another process: receipts and the forwarder are addressed to it.
    const apiPort = config.httpPort ?? (serve ? START_HTTP_PORT : undefined)
    const httpPort = role === 'engines' ? undefined : apiPort
    if (role === 'api' && !httpPort) throw new Error('--role api serves HTTP: set HERALD_HTTP_PORT')
    const { outside, sandboxes, publicUrl, stop } = await startOutside(config, serve, log, apiPort)
    if (outside.sms.length) await registerProviders(db, outside.sms.map((p) => p.name))
    const built = role === 'api' ? [] : engineNames(opts.engines).map((n) => [n, ENGINES[n](config, log, outside)] as const)
    const off = built.filter(([, e]) => typeof e === 'string')
    if (opts.engines && off.length > 0) throw new Error(off.map(([n, why]) => `${n}: ${why}`).join('; '))
    const engines = built.map(([, e]) => e).filter((e): e is Engine => typeof e !== 'string')
    if (engines.length && !config.inbox.startsWith('s3://')) mkdirSync(config.inbox, { recursive: true })
    const loops = new EngineLoops(engines.map((e) => e.name))
    const health = new Health(db, { loops: engines.length ? loops : undefined, stallMs: Math.max(STALL_POLLS * config.pollIntervalMs, STALL_MIN_MS) })
    const counters = new Counters()
    const metrics = config.metricsPort ? await serveMetrics(counters, config.metricsPort, config.metricsHost, db, health) : undefined
    const routes: Routes[] = [messagingRoutes(config, db, log)]
    const withConsole = Boolean(httpPort) && (config.console ?? serve)
    if (withConsole) routes.push(consoleFor(config, db, log))
    if (publicUrl && outside.email) routes.push(outside.email.routes(db, log))
    if (publicUrl) routes.push(receiptRoutes({ db, log, publicUrl, secret: secretKey(config), twilioAuthToken: config.exposure.twilioAuthToken }))
    if (publicUrl) routes.push(inboundRoutes({ db, sealer: messagingKeys(config).sealer, log, publicUrl, secret: secretKey(config), twilioAuthToken: config.exposure.twilioAuthToken }))
    if (outside.commcare && config.commcare.forwarder) routes.push(forwarderRoutes({ db, client: outside.commcare, commcare: config.commcare, log }))
    const http = httpPort ? await startHttpServer(config.httpHost, httpPort, routes, log, health) : undefined
    if (serve) {
      console.log(`Herald is running (role ${role}): engines ${engines.map((e) => e.name).join(', ') || 'none'}.`)
      const where = db.kind === 'pglite-server' ? `PGlite in ${config.dataDir}/pgdata, shared with herald commands in other terminals` : describeDb(db, config)
      console.log(`  database  ${where}`)
      console.log(`  inbox     ${config.inbox}  (drop ECLRS export files here)`)
      for (const line of sandboxes) console.log(`  sandbox   ${line}`)
      console.log(`  commands  in another terminal: npx herald files | npx herald link | npx herald cases | npx herald person ID | npx herald --help`)
      if (http && withConsole) {
        console.log(`  console   http://${config.httpHost}:${httpPort}/  (in a browser)` +
          ((await countUsers(db)) === 0 ? '; first make its administrator: npx herald user create --admin --email you@agency.gov --name "Your Name"' : ''))
      }
      if (http) console.log(`  api       http://${config.httpHost}:${httpPort}  (GOV.UK Notify API v2; set up with herald service create, herald key create, herald template create)`)
      if (metrics) console.log(`  metrics   http://127.0.0.1:${config.metricsPort}/metrics`)
      console.log('  stop      Ctrl-C')
    }
    // A stop drains: /readyz says so at once, HTTP answers what is in flight and takes nothing new, then
    // the engines stop at their next batch boundary; all within HERALD_DRAIN_SECONDS, or exit 1 naming what did not finish.
    const enginesStop = new AbortController()
    let httpClosed: Promise<void> | undefined
    let httpDone = !http
    const closeHttp = () => (httpClosed ??= (http ? http.close() : Promise.resolve()).then(() => { httpDone = true }))
    const drain = () => {
      health.draining = true
      setTimeout(() => {
        const unfinished = [...(httpDone ? [] : ['HTTP requests in flight']), ...[...loops.running].map((e) => `engine ${e}`)]
        log.error({ unfinished }, `the drain did not finish within ${config.drainSeconds} s (HERALD_DRAIN_SECONDS): ${unfinished.join(', ') || 'closing connections'}; exiting`)
        process.exit(1)
      }, config.drainSeconds * 1000).unref()
      void closeHttp().finally(() => enginesStop.abort())
    }
    const stopping = stopSignal(log)
    if (stopping.aborted) drain()
    else stopping.addEventListener('abort', drain, { once: true })
    await loadCountiesAtStart(db, outside, serve, log)
    let failures: RunFailures = new Map()
    try {
      if (role === 'api') await once(enginesStop.signal, 'abort')
      else failures = await runEngines(db, engines, { untilIdle: opts.untilIdle, pollIntervalMs: config.pollIntervalMs, signal: enginesStop.signal, counters, log, loops })
    } finally {
      await closeHttp()
      metrics?.close()
      await stop()
    }
    log.info({ counts: counters.snapshot() }, 'engines stopped')
    // A script runs --until-idle and reads the status: "idle" must not hide work that could not be done.
    if (opts.untilIdle && failures.size > 0) throw new RunFailed(failures)
  }, { serve })
}
