/**
 * Configuration: environment variables → one frozen, typed object, validated at start.
 * A bad value stops Herald with a message naming the variable and what is wrong with it.
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { resolve } from 'node:path'

export class ConfigError extends Error {
  constructor(variable: string, problem: string) {
    super(`${variable}: ${problem}`)
    this.name = 'ConfigError'
  }
}

export interface Config {
  /** PostgreSQL server; when absent Herald runs on PGlite in `dataDir`. */
  databaseUrl: string | undefined
  /** Connections each process opens to DATABASE_URL (HERALD_DB_POOL; docs/operations.md sizes it). */
  dbPool: number
  /** A read replica for reports (HERALD_REPORTS_DATABASE_URL): CSV reports read there, nothing is written. */
  reportsDatabaseUrl: string | undefined
  /** Apply pending migrations at start (HERALD_AUTO_MIGRATE, default true); off: only `herald migrate` does, and a process refuses to start behind it. */
  autoMigrate: boolean
  /** Folder of the embedded database, the default inbox and runtime files. */
  dataDir: string
  /** Where export files arrive: a folder or s3://bucket/prefix. */
  inbox: string
  pollIntervalMs: number
  /** Data rows per ingest transaction. */
  ingestBatchRows: number
  /** Lab rows per link transaction. */
  linkBatchRows: number
  /** How long a claimed inbox file stays ours without a heartbeat before another worker may take it. */
  claimLeaseSeconds: number
  s3: { endpoint: string | undefined; region: string }
  logLevel: string
  workerId: string
  /** Serve engine counters at http://127.0.0.1:PORT/metrics (Prometheus text) from start and run. */
  metricsPort: number | undefined
  /** Where /metrics, /healthz and /readyz listen (HERALD_METRICS_HOST, default loopback; 0.0.0.0 for a scraper in another container). */
  metricsHost: string
  /** Herald's HTTP server (CommCare's case forwarder posts to /commcare/cases); off when unset. */
  httpPort: number | undefined
  /** The console at `/` of the HTTP server (HERALD_CONSOLE); unset: on in `herald start`, off in `herald run`. */
  console: boolean | undefined
  httpHost: string
  /** A stop (SIGTERM/SIGINT) drains HTTP, then the engines, within this long; past it the process exits 1 (HERALD_DRAIN_SECONDS). */
  drainSeconds: number
  commcare: CommCareConfig
  exposure: ExposureConfig
  messaging: MessagingConfig
  email: EmailConfig
}

/** Email (src/messaging/email/): one provider, SMTP or Amazon SES v2. */
export interface EmailConfig {
  /** HERALD_EMAIL_PROVIDER: smtp or ses; absent: `herald start` runs the email sandbox (SMTP), other commands send no email. */
  provider: 'smtp' | 'ses' | undefined
  /** HERALD_EMAIL_SMTP_URL: smtp://user:pass@host:port or smtps://… (nodemailer's connection URL). */
  smtpUrl: string | undefined
  /** HERALD_EMAIL_SES_REGION (default AWS_REGION, else us-east-1) and HERALD_EMAIL_SES_ENDPOINT (another endpoint, e.g. a stand-in). */
  sesRegion: string
  sesEndpoint: string | undefined
  /** HERALD_EMAIL_FROM: the From of every email (an address the provider lets Herald send from). */
  from: string
  /** HERALD_EMAIL_SNS_CERT_ORIGIN: besides sns.*.amazonaws.com, one more origin whose certificate signs SNS messages (the sandbox's; never in production). */
  snsCertOrigin: string | undefined
  /** HERALD_EMAIL_SNS_TOPICS: the SNS topic ARNs whose SES notifications Herald takes (comma-separated); none: every SNS message is refused. */
  snsTopics: string[]
  /** Emails handed to the provider at once. */
  concurrency: number
}

export type ProviderKind = 'twilio' | 'vonage'
export interface MessagingConfig {
  /** SMS providers, first preferred (HERALD_SMS_PROVIDERS); empty: `herald start` runs a sandbox of each, other commands send nothing. */
  providers: ProviderKind[]
  twilioUrl: string
  vonageUrl: string
  vonageApiKey: string
  vonageApiSecret: string
  /** Herald's HTTP server as the providers reach it, for delivery receipts; default http://HOST:PORT. */
  publicUrl: string | undefined
  /** Texts handed to providers at once. */
  sendConcurrency: number
  /** How long API processes keep services, keys and templates before reading them again. */
  cacheMs: number
  /** A failing provider's penalty halves over this many seconds: it drifts back up the order. */
  providerRecoverySeconds: number
  /** Where bulk job files are kept: a folder or s3://bucket/prefix (never the database). */
  jobStore: string
  /** Rate multiplier of a text abroad, by country calling code; the rest: internationalMultiplier. */
  internationalRates: Record<string, number>
  internationalMultiplier: number
  /** When the nightly facts and retention run, HH:MM in HERALD_TIMEZONE. */
  nightlyAt: string
}

export interface ExposureConfig {
  /** The verification server (admin API); absent: `herald start` runs the sandbox, other commands leave exposure off. */
  enxUrl: string | undefined
  enxApiKey: string
  /** Twilio Lookup v2; absent with a real verification server: numbers are checked locally only. */
  lookupUrl: string | undefined
  twilioAccountSid: string
  twilioAuthToken: string
  /** The time zone test dates are in: tzOffset is computed from it on each test date. */
  timezone: string
  /** The master secret every key is derived from (privacy/keys.ts); absent (embedded database only): a key kept in the data folder. */
  secretKey: string | undefined
  /** Lab result test types that count (LOINC codes or test names); empty: every positive result. */
  testTypes: string[]
  lookbackDays: number
  /** A positive result this many days after an episode's first one opens a new episode. */
  episodeDays: number
  defaultRegion: string
  /** Lookup line types accepted (mobile always; VoIP types by choice). */
  lineTypes: string[]
  lookupCacheDays: number
  lookupConcurrency: number
  issueConcurrency: number
}
export interface CommCareConfig {
  /** CommCare HQ; when absent `herald start` runs the sandbox and other commands leave case sync off. */
  url: string | undefined
  user: string
  apiKey: string
  /** The project space that holds the county list. */
  rootDomain: string
  /** The CommCare user id Herald's forms are submitted as: changes it made itself are not pulled back. */
  userId: string
  /** Off: case sync pulls changes but posts nothing; jobs wait. */
  posting: boolean
  /** Requests in flight at once (outbound). */
  concurrency: number
  timeoutMs: number
  /** Seconds between polls of a domain for changes. */
  pollSeconds: number
  /** Domains polled at once by one worker. */
  pollConcurrency: number
  /** Basic auth CommCare's case forwarder must send to POST /commcare/cases; no forwarder when unset. */
  forwarder: { user: string; password: string } | undefined
  /**
   * How a lab_result case is indexed to its patient: `child` (New York's project spaces: the index
   * carries no relationship attribute, CommCare's default) or `extension`.
   */
  labResultIndex: 'child' | 'extension'
  /** The form Herald submits: its name and xmlns as the project space's reports know it. */
  formName: string
  formXmlns: string
  /** Where a domain's first poll starts; later polls start from their cursor. */
  pullSince: Date
}

type Env = Record<string, string | undefined>

function int(env: Env, name: string, fallback: number, min: number): number {
  const raw = env[name]
  if (raw === undefined || raw === '') return fallback
  if (!/^\d+$/.test(raw.trim())) throw new ConfigError(name, `must be a whole number, got "${raw}"`)
  const value = Number(raw)
  if (value < min) throw new ConfigError(name, `must be at least ${min}, got ${value}`)
  return value
}

function url(env: Env, name: string, protocols: string[]): string | undefined {
  const raw = env[name]
  if (raw === undefined || raw === '') return undefined
  let parsed: URL
  try {
    parsed = new URL(raw)
  } catch {
    throw new ConfigError(name, 'is not a URL')
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(name, `must start with ${protocols.join(' or ')}, got ${parsed.protocol}`)
  }
  return raw
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  const raw = (env[name] ?? '').trim().toLowerCase()
  if (raw === '') return fallback
  if (['on', 'true', 'yes', '1'].includes(raw)) return true
  if (['off', 'false', 'no', '0'].includes(raw)) return false
  throw new ConfigError(name, `must be on or off, got "${env[name]}"`)
}

function port(env: Env, name: string): number {
  const value = int(env, name, 0, 1)
  if (value > 65535) throw new ConfigError(name, `must be a TCP port (1 to 65535), got ${value}`)
  return value
}

/** The settings that are secrets: each may come from a file instead, named by NAME_FILE (see withSecretFiles). */
export const SECRETS = ['DATABASE_URL', 'HERALD_REPORTS_DATABASE_URL', 'HERALD_SECRET_KEY', 'HERALD_COMMCARE_API_KEY',
  'HERALD_COMMCARE_FORWARDER_PASSWORD', 'HERALD_ENX_API_KEY', 'HERALD_TWILIO_AUTH_TOKEN', 'HERALD_VONAGE_API_SECRET', 'HERALD_EMAIL_SMTP_URL']

/**
 * A secret's value: NAME, or the contents of the file NAME_FILE names (its final line break dropped).
 * Files are how Docker and Kubernetes secrets and systemd credentials arrive, and unlike the
 * environment they are not shown by `ps e`, `docker inspect` or /proc/PID/environ.
 */
export function fromEnvOrFile(env: Env, name: string): string | undefined {
  const file = env[`${name}_FILE`]?.trim()
  if (!file) return env[name]
  if (env[name]?.trim()) throw new ConfigError(`${name}_FILE`, `is set and so is ${name}: set one of them`)
  let value: string
  try {
    value = readFileSync(file, 'utf8').replace(/[\r\n]+$/, '')
  } catch (err) {
    throw new ConfigError(`${name}_FILE`, `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
  }
  if (!value.trim()) throw new ConfigError(`${name}_FILE`, `${file} is empty`)
  return value
}

/** The environment with each secret read from its file where NAME_FILE is set: the rest of the config reads env alone. */
function withSecretFiles(env: Env): Env {
  if (!SECRETS.some((name) => env[`${name}_FILE`])) return env
  return { ...env, ...Object.fromEntries(SECRETS.map((name) => [name, fromEnvOrFile(env, name)])) }
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

export function loadConfig(env: Env = process.env): Config {
  env = withSecretFiles(env)
  const dataDir = resolve(env.HERALD_DATA_DIR || '.herald')
  const inboxRaw = env.HERALD_INBOX || resolve(dataDir, 'inbox')
  const inbox = inboxRaw.startsWith('s3://') ? inboxRaw : resolve(inboxRaw)
  if (inbox.startsWith('s3://') && !/^s3:\/\/[a-z0-9.-]{3,63}(\/.*)?$/.test(inbox)) {
    throw new ConfigError('HERALD_INBOX', `"${inbox}" is not s3://bucket[/prefix] with a valid bucket name`)
  }
  const logLevel = (env.HERALD_LOG_LEVEL || 'info').toLowerCase()
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError('HERALD_LOG_LEVEL', `must be one of ${LOG_LEVELS.join(', ')}`)
  }
  return Object.freeze({
    databaseUrl: url(env, 'DATABASE_URL', ['postgres:', 'postgresql:']),
    dbPool: int(env, 'HERALD_DB_POOL', 8, 1),
    reportsDatabaseUrl: url(env, 'HERALD_REPORTS_DATABASE_URL', ['postgres:', 'postgresql:']),
    autoMigrate: bool(env, 'HERALD_AUTO_MIGRATE', true),
    dataDir,
    inbox,
    pollIntervalMs: int(env, 'HERALD_POLL_INTERVAL_MS', 5000, 100),
    ingestBatchRows: int(env, 'HERALD_INGEST_BATCH_ROWS', 10000, 1),
    linkBatchRows: int(env, 'HERALD_LINK_BATCH_ROWS', 4000, 1),
    claimLeaseSeconds: int(env, 'HERALD_CLAIM_LEASE_SECONDS', 300, 1),
    s3: Object.freeze({ endpoint: url(env, 'S3_ENDPOINT', ['http:', 'https:']), region: env.AWS_REGION || 'us-east-1' }),
    logLevel,
    // Claims are owned by this name: it must be unique per process. hostname:pid alone is not (containers
    // sharing a host's name space are all pid 1), so the default adds a random part.
    workerId: env.HERALD_WORKER_ID || `${hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`,
    metricsPort: env.HERALD_METRICS_PORT ? port(env, 'HERALD_METRICS_PORT') : undefined,
    metricsHost: env.HERALD_METRICS_HOST?.trim() || '127.0.0.1',
    httpPort: env.HERALD_HTTP_PORT ? port(env, 'HERALD_HTTP_PORT') : undefined,
    console: env.HERALD_CONSOLE?.trim() ? bool(env, 'HERALD_CONSOLE', true) : undefined,
    httpHost: env.HERALD_HTTP_HOST?.trim() || '127.0.0.1',
    drainSeconds: int(env, 'HERALD_DRAIN_SECONDS', 30, 1),
    commcare: commcareConfig(env),
    exposure: exposureConfig(env),
    messaging: messagingConfig(env, dataDir),
    email: emailConfig(env),
  })
}

function messagingConfig(env: Env, dataDir: string): MessagingConfig {
  const providers = list(env.HERALD_SMS_PROVIDERS, [])
  const bad = providers.filter((p) => p !== 'twilio' && p !== 'vonage')
  if (bad.length) throw new ConfigError('HERALD_SMS_PROVIDERS', `unknown provider ${bad.join(', ')}; Herald speaks twilio and vonage`)
  if (new Set(providers).size !== providers.length) throw new ConfigError('HERALD_SMS_PROVIDERS', 'names a provider twice')
  const needed = (name: string, provider: ProviderKind) => {
    const v = env[name]?.trim()
    if (v) return v
    if (providers.includes(provider)) throw new ConfigError(name, `is required when HERALD_SMS_PROVIDERS includes ${provider}`)
    return 'sandbox'
  }
  if (providers.includes('twilio')) {
    for (const name of ['HERALD_TWILIO_ACCOUNT_SID', 'HERALD_TWILIO_AUTH_TOKEN']) needed(name, 'twilio')
  }
  return Object.freeze({
    providers: providers as ProviderKind[],
    twilioUrl: (url(env, 'HERALD_TWILIO_URL', ['http:', 'https:']) ?? 'https://api.twilio.com').replace(/\/+$/, ''),
    vonageUrl: (url(env, 'HERALD_VONAGE_URL', ['http:', 'https:']) ?? 'https://rest.nexmo.com').replace(/\/+$/, ''),
    vonageApiKey: needed('HERALD_VONAGE_API_KEY', 'vonage'),
    vonageApiSecret: needed('HERALD_VONAGE_API_SECRET', 'vonage'),
    publicUrl: url(env, 'HERALD_PUBLIC_URL', ['http:', 'https:'])?.replace(/\/+$/, ''),
    sendConcurrency: int(env, 'HERALD_SEND_CONCURRENCY', 32, 1),
    cacheMs: int(env, 'HERALD_API_CACHE_MS', 2000, 0),
    providerRecoverySeconds: int(env, 'HERALD_PROVIDER_RECOVERY_SECONDS', 300, 1),
    jobStore: env.HERALD_JOB_STORE?.startsWith('s3://') ? env.HERALD_JOB_STORE : resolve(env.HERALD_JOB_STORE || resolve(dataDir, 'jobs')),
    internationalRates: multipliers(env, 'HERALD_SMS_INTERNATIONAL_RATES'),
    internationalMultiplier: multiplier(env, 'HERALD_SMS_INTERNATIONAL_MULTIPLIER', env.HERALD_SMS_INTERNATIONAL_MULTIPLIER?.trim() || '2'),
    nightlyAt: clock(env, 'HERALD_NIGHTLY_AT', '03:00'),
  })
}

function emailConfig(env: Env): EmailConfig {
  const raw = env.HERALD_EMAIL_PROVIDER?.trim()
  if (raw && raw !== 'smtp' && raw !== 'ses') throw new ConfigError('HERALD_EMAIL_PROVIDER', `unknown provider ${raw}; Herald speaks smtp and ses`)
  const smtpUrl = url(env, 'HERALD_EMAIL_SMTP_URL', ['smtp:', 'smtps:'])
  if (raw === 'smtp' && !smtpUrl) throw new ConfigError('HERALD_EMAIL_SMTP_URL', 'is required when HERALD_EMAIL_PROVIDER is smtp')
  const from = env.HERALD_EMAIL_FROM?.trim() || (raw ? '' : 'notify@herald.localhost')
  if (!from) throw new ConfigError('HERALD_EMAIL_FROM', 'is required when HERALD_EMAIL_PROVIDER is set')
  return Object.freeze({
    provider: (raw || undefined) as EmailConfig['provider'],
    smtpUrl,
    sesRegion: env.HERALD_EMAIL_SES_REGION?.trim() || env.AWS_REGION?.trim() || 'us-east-1',
    sesEndpoint: url(env, 'HERALD_EMAIL_SES_ENDPOINT', ['http:', 'https:']),
    from,
    snsCertOrigin: url(env, 'HERALD_EMAIL_SNS_CERT_ORIGIN', ['http:', 'https:'])?.replace(/\/+$/, ''),
    snsTopics: list(env.HERALD_EMAIL_SNS_TOPICS, []),
    concurrency: int(env, 'HERALD_EMAIL_CONCURRENCY', 16, 1),
  })
}

function multiplier(env: Env, name: string, raw: string): number {
  const n = Number(raw)
  if (!(n > 0 && n <= 100)) throw new ConfigError(name, `a rate multiplier must be a number above 0, got "${raw}"`)
  return n
}

/** "44=2,52=1.5": a multiplier per country calling code. */
function multipliers(env: Env, name: string): Record<string, number> {
  const out: Record<string, number> = {}
  for (const pair of list(env[name], [])) {
    const [code, value] = pair.split('=').map((s) => s.trim())
    if (!/^\d{1,3}$/.test(code ?? '') || value === undefined) throw new ConfigError(name, `expected CODE=MULTIPLIER pairs (e.g. 44=2,52=1.5), got "${pair}"`)
    out[code] = multiplier(env, name, value)
  }
  return out
}

function clock(env: Env, name: string, fallback: string): string {
  const raw = env[name]?.trim() || fallback
  if (!/^([01]\d|2[0-3]):[0-5]\d$/.test(raw)) throw new ConfigError(name, `must be a time of day as HH:MM (e.g. 03:00), got "${raw}"`)
  return raw
}

const list = (raw: string | undefined, fallback: string[]) =>
  raw === undefined ? fallback : raw.split(',').map((s) => s.trim()).filter(Boolean)

function exposureConfig(env: Env): ExposureConfig {
  const enxUrl = url(env, 'HERALD_ENX_URL', ['http:', 'https:'])
  const lookupUrl = url(env, 'HERALD_LOOKUP_URL', ['http:', 'https:'])
  /** A credential: required once the service's URL is set; without it, the sandbox's. */
  const need = (name: string, urlVariable: 'HERALD_ENX_URL' | 'HERALD_LOOKUP_URL', sandboxValue: string) => {
    const v = env[name]?.trim()
    if (v) return v
    if (env[urlVariable]) throw new ConfigError(name, `is required when ${urlVariable} is set`)
    return sandboxValue
  }
  const timezone = env.HERALD_TIMEZONE?.trim() || 'America/New_York'
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone })
  } catch {
    throw new ConfigError('HERALD_TIMEZONE', `"${timezone}" is not an IANA time zone (e.g. America/New_York)`)
  }
  const secretKey = env.HERALD_SECRET_KEY?.trim() || undefined
  if (secretKey && secretKey.length < 32) throw new ConfigError('HERALD_SECRET_KEY', 'must be at least 32 characters (e.g. openssl rand -hex 32)')
  if (enxUrl && !secretKey) throw new ConfigError('HERALD_SECRET_KEY', 'is required when HERALD_ENX_URL is set')
  // A PostgreSQL database may be shared by several hosts: a key file made on each would give each its
  // own keyed hashes and ciphertexts, which the others could neither match nor read. The key file
  // (privacy/keys.ts) is for the embedded database alone, which one data folder holds.
  if (env.DATABASE_URL && !secretKey) {
    throw new ConfigError('HERALD_SECRET_KEY', 'is required when DATABASE_URL is set: every host sharing the database must use the same key. ' +
      'A deployment that ran without it used $HERALD_DATA_DIR/secret.key: set the variable to that file\'s contents (a new key makes every ' +
      'sealed number unreadable and every API key invalid); a new deployment: openssl rand -hex 32')
  }
  const region = (env.HERALD_PHONE_REGION?.trim() || 'US').toUpperCase()
  if (!/^[A-Z]{2}$/.test(region)) throw new ConfigError('HERALD_PHONE_REGION', `must be a two-letter country code, got "${region}"`)
  const lineTypes = list(env.HERALD_LOOKUP_LINE_TYPES, ['mobile'])
  const known = ['mobile', 'nonFixedVoip', 'fixedVoip', 'landline', 'tollFree', 'voicemail', 'pager', 'personal', 'sharedCost', 'uan', 'unknown']
  const bad = lineTypes.filter((t) => !known.includes(t))
  if (bad.length) throw new ConfigError('HERALD_LOOKUP_LINE_TYPES', `unknown line type ${bad.join(', ')}; Twilio's are ${known.join(', ')}`)
  return Object.freeze({
    enxUrl: enxUrl?.replace(/\/+$/, ''),
    enxApiKey: need('HERALD_ENX_API_KEY', 'HERALD_ENX_URL', 'sandbox'),
    lookupUrl: lookupUrl?.replace(/\/+$/, ''),
    twilioAccountSid: need('HERALD_TWILIO_ACCOUNT_SID', 'HERALD_LOOKUP_URL', 'ACsandbox'),
    twilioAuthToken: need('HERALD_TWILIO_AUTH_TOKEN', 'HERALD_LOOKUP_URL', 'sandbox'),
    timezone,
    secretKey,
    testTypes: list(env.HERALD_EXPOSURE_TEST_TYPES, []),
    lookbackDays: int(env, 'HERALD_EXPOSURE_LOOKBACK_DAYS', 14, 1),
    episodeDays: int(env, 'HERALD_EXPOSURE_EPISODE_DAYS', 90, 1),
    defaultRegion: region,
    lineTypes: [...new Set(['mobile', ...lineTypes])],
    lookupCacheDays: int(env, 'HERALD_LOOKUP_CACHE_DAYS', 30, 0),
    lookupConcurrency: int(env, 'HERALD_LOOKUP_CONCURRENCY', 16, 1),
    issueConcurrency: int(env, 'HERALD_ENX_CONCURRENCY', 8, 1),
  })
}

function commcareConfig(env: Env): CommCareConfig {
  const commcareUrl = url(env, 'HERALD_COMMCARE_URL', ['http:', 'https:'])
  const required = (name: string, sandboxValue: string) => {
    const v = env[name]?.trim()
    if (v) return v
    if (commcareUrl) throw new ConfigError(name, 'is required when HERALD_COMMCARE_URL is set')
    return sandboxValue
  }
  const fwdUser = env.HERALD_COMMCARE_FORWARDER_USER?.trim()
  const fwdPassword = env.HERALD_COMMCARE_FORWARDER_PASSWORD?.trim()
  if (Boolean(fwdUser) !== Boolean(fwdPassword)) {
    throw new ConfigError(fwdUser ? 'HERALD_COMMCARE_FORWARDER_PASSWORD' : 'HERALD_COMMCARE_FORWARDER_USER', 'the forwarder needs both a user and a password')
  }
  return Object.freeze({
    url: commcareUrl?.replace(/\/+$/, ''),
    // Without a real CommCare these are the sandbox's own credentials.
    user: required('HERALD_COMMCARE_USER', 'herald'),
    apiKey: required('HERALD_COMMCARE_API_KEY', 'sandbox'),
    rootDomain: required('HERALD_COMMCARE_ROOT_DOMAIN', 'ny-covid'),
    // A real project space needs a real mobile worker's id: forms it cannot attribute are refused or lost in reports.
    userId: commcareUrl && !isLoopback(commcareUrl) ? required('HERALD_COMMCARE_USER_ID', '') : env.HERALD_COMMCARE_USER_ID?.trim() || 'herald',
    posting: bool(env, 'HERALD_COMMCARE_POSTING', true),
    concurrency: int(env, 'HERALD_COMMCARE_CONCURRENCY', 16, 1),
    timeoutMs: int(env, 'HERALD_COMMCARE_TIMEOUT_MS', 30_000, 100),
    pollSeconds: int(env, 'HERALD_COMMCARE_POLL_SECONDS', 60, 1),
    pollConcurrency: int(env, 'HERALD_COMMCARE_POLL_CONCURRENCY', 4, 1),
    forwarder: fwdUser && fwdPassword ? Object.freeze({ user: fwdUser, password: fwdPassword }) : undefined,
    labResultIndex: oneOf(env, 'HERALD_COMMCARE_LAB_RESULT_INDEX', ['child', 'extension'] as const, 'child'),
    formName: env.HERALD_COMMCARE_FORM_NAME?.trim() || 'Herald case sync',
    formXmlns: url(env, 'HERALD_COMMCARE_FORM_XMLNS', ['http:', 'https:']) ?? 'http://herald.invalid/casesync',
    pullSince: pullSince(env),
  })
}

const isLoopback = (u: string) => ['127.0.0.1', 'localhost', '[::1]'].includes(new URL(u).hostname)

function oneOf<T extends string>(env: Env, name: string, values: readonly T[], fallback: T): T {
  const raw = env[name]?.trim().toLowerCase()
  if (!raw) return fallback
  if (!(values as readonly string[]).includes(raw)) throw new ConfigError(name, `must be one of ${values.join(', ')}, got "${env[name]}"`)
  return raw as T
}

/** HERALD_COMMCARE_PULL_SINCE (YYYY-MM-DD, UTC midnight), else 14 days before now. */
function pullSince(env: Env): Date {
  const raw = env.HERALD_COMMCARE_PULL_SINCE?.trim()
  if (!raw) return new Date(Date.now() - 14 * 86_400_000)
  const at = /^\d{4}-\d{2}-\d{2}$/.test(raw) ? new Date(`${raw}T00:00:00Z`) : new Date(NaN)
  if (Number.isNaN(at.getTime()) || at.toISOString().slice(0, 10) !== raw) throw new ConfigError('HERALD_COMMCARE_PULL_SINCE', `must be a date (YYYY-MM-DD), got "${raw}"`)
  return at
}
