/** The `herald` command. Each subcommand lives in src/cli/; errors are turned into messages here, once. */
import { Command, InvalidArgumentError } from 'commander'
import { ConfigError } from './config.ts'
import { errorText } from './log.ts'

// Each command's modules are loaded when it runs, so `herald report` does not load PGlite, faker,
// fastify and the AWS SDK it does not use (start-up time and memory: see docs/benchmarks.md).
const ingestCli = () => import('./cli/ingest.ts')
const linkCli = () => import('./cli/link.ts')
const runCli = () => import('./cli/run.ts')
const casesyncCli = () => import('./cli/casesync.ts')
const exposureCli = () => import('./cli/exposure.ts')
const messagingCli = () => import('./cli/messaging.ts')
const retentionCli = () => import('./cli/retention.ts')
const queueCli = () => import('./cli/queue.ts')

const positive = (v: string) => {
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new InvalidArgumentError('must be a whole number of at least 1')
  return Number(v)
}
const fraction = (v: string) => {
  const n = Number(v)
  if (!(n >= 0 && n <= 1)) throw new InvalidArgumentError('must be a number from 0 to 1')
  return n
}

// Started by the launcher (src/launch.ts) with a channel to it: if the launcher dies without passing a
// signal on (SIGKILL), this process dies the same way rather than run on unseen.
if (process.channel) {
  process.channel.unref()
  const orphaned = () => process.kill(process.pid, 'SIGKILL')
  process.once('disconnect', orphaned)
  if (!process.connected) orphaned() // it died while this module was loading
}

// `herald files | head`: a closed pipe ends the output, not in a stack trace.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0)
  throw err
})

const program = new Command('herald')
  .enablePositionalOptions() // `herald jobs --service S` and `herald jobs create --service S` each take their own
  .description('Lab results in, cases synced, residents notified. Configuration: environment variables (see README).')
  .showHelpAfterError()

const role = (v: string) => {
  if (!['api', 'engines', 'all'].includes(v)) throw new InvalidArgumentError('must be api, engines or all')
  return v
}
const ROLE_HELP = 'api: the HTTP server (API, console, webhooks) and no engines; engines: every engine (or --engines) and no HTTP server; all: both'

program.command('start').description('run Herald on its embedded default: serve the database to other herald commands and run every engine')
  .option('--role <role>', ROLE_HELP, role, 'all')
  .action(async (opts) => (await runCli()).runCommand(opts, true))

program.command('run').description('run engines (and the HTTP server when HERALD_HTTP_PORT is set) in the foreground')
  .option('--role <role>', ROLE_HELP, role)
  .option('--engines <list>', 'comma-separated engine names (default: all)')
  .option('--until-idle', 'exit once no engine has work left')
  .action(async (opts) => (await runCli()).runCommand(opts))

program.command('migrate').description('apply database migrations that are missing')
  .action(async () => (await import('./cli/context.ts')).withDb(async ({ db }) => {
    const applied = await (await import('./db/migrate.ts')).migrate(db)
    console.log(applied.length ? `applied ${applied.join(', ')}` : 'nothing to apply: the schema is current')
  }, { migrating: true }))

const dbCommand = program.command('db').description('database changes an operator makes on purpose, never on start (see docs/operations.md)')
dbCommand.command('partition-by-day').description('partition notifications and their history by day, once they pass ~50 million rows or 100 GB (online; a moment\'s lock)')
  .option('--days-ahead <n>', 'day partitions to create ahead of today (the nightly run keeps 7)', positive, 7)
  .action(async (opts) => (await import('./cli/db.ts')).partitionByDayCommand(opts))

const usersCli = () => import('./cli/users.ts')
const user = program.command('user').description("the console's users: create (the first with --admin), reset a password, grant permissions")
user.command('create').description('a user who signs in to the console (a password is generated and shown once, unless --password-stdin)')
  .requiredOption('--email <email>').requiredOption('--name <name>')
  .option('--admin', 'a platform admin: may do everything')
  .option('--password-stdin', 'read the password from stdin')
  .action(async (opts) => (await usersCli()).userCreateCommand(opts))
user.command('reset').description("set a user's password (generated and shown once, unless --password-stdin) and end their sessions")
  .requiredOption('--email <email>').option('--password-stdin', 'read the password from stdin')
  .action(async (opts) => (await usersCli()).userResetCommand(opts))
user.command('grant').description("set a user's permissions: on a service (view_activity, send_messages, manage_templates, manage_service, manage_api_keys) or the pipeline (view, operate)")
  .requiredOption('--email <email>').option('--service <name-or-id>').option('--permissions <list>', 'comma-separated, with --service')
  .option('--pipeline <list>', 'comma-separated: view, operate')
  .action(async (opts) => (await usersCli()).userGrantCommand(opts))
user.command('list').description("the console's users").action(async () => (await usersCli()).userListCommand())

const queue = program.command('queue').description('every engine\'s work: waiting, in flight, retrying, failed, and the oldest waiting')
  .enablePositionalOptions()
  .option('--json', 'print JSON')
  .action(async (opts) => (await queueCli()).queueCommand(opts))
queue.command('failed').description("an engine's failed items, each with its error and events")
  .argument('<engine>')
  .option('--limit <n>', 'how many, newest first', '100')
  .option('--json', 'print JSON')
  .action(async (engine, opts) => (await queueCli()).queueFailedCommand(engine, opts))
queue.command('retry').description("an engine's failed items due again, with their attempts anew (all of them without ids)")
  .argument('<engine>')
  .argument('[ids...]')
  .action(async (engine, ids) => (await queueCli()).queueRetryCommand(engine, ids))

program.command('ingest').description('ingest export files: a file, a folder or s3://bucket/prefix')
  .argument('<paths...>')
  .option('--json', 'print a machine-readable summary per file')
  .action(async (paths, opts) => (await ingestCli()).ingestCommand(paths, opts))

program.command('files').description('list ingested files and their statistics; with an id, one file: per county, and each row it could not use')
  .argument('[id]')
  .option('--json', 'print JSON')
  .option('--limit <n>', 'how many, newest first', '50')
  .action(async (id, opts) => (await ingestCli()).filesCommand(id, opts))

program.command('inbox').description('list files found in the inbox and their state: waiting, being ingested, done or failed')
  .option('--failed', 'only those that failed every attempt')
  .option('--json', 'print JSON')
  .option('--limit <n>', 'how many, newest first', '50')
  .action(async (opts) => (await ingestCli()).inboxCommand(opts))

program.command('inspect').description("validate an export without ingesting it: each row's line, version and v1/v2/v3 checksums, and each error")
  .argument('<file>')
  .option('--json', 'one JSON object per line')
  .action(async (file, opts) => (await ingestCli()).inspectCommand(file, opts))

const counties = program.command('counties').description("CommCare's county list: each county's domain, whether it takes part, the state domain")
  .option('--json', 'print JSON')
  .action(async (opts) => (await linkCli()).countiesCommand(opts))
counties.command('load').description('load a county list: the JSON of CommCare\'s fixture API (fixture_type=county_list)')
  .argument('<file>')
  .action(async (file) => (await linkCli()).countiesLoadCommand(file))

program.command('link').description('the link queue: rows waiting, retrying or failed')
  .option('--failed', 'list the rows that failed, with their errors')
  .option('--retry', 'put every failed row back in line')
  .option('--json', 'print JSON')
  .action(async (opts) => (await linkCli()).linkCommand(opts))

program.command('trace').description('a lab row: every decision link made about it, why, and the cases it reached')
  .argument('<row-id>')
  .option('--json', 'print JSON')
  .action(async (id, opts) => (await linkCli()).traceCommand(id, opts))

program.command('person').description('a person: keys, cases, lab results and the history of decisions')
  .argument('<id>', 'person id, external id (uuid) or patient key')
  .option('--json', 'print JSON')
  .action(async (id, opts) => (await linkCli()).personCommand(id, opts))

const cases = program.command('cases').description('case sync with CommCare: cases waiting to be posted, retrying, failed; changes pulled back')
  .option('--failed', 'list the cases whose sync failed, with their errors')
  .option('--json', 'print JSON')
  .action(async (opts) => (await casesyncCli()).casesCommand(opts))
cases.command('retry').description('post failed cases again, with their attempts anew (all failed cases without an id)')
  .argument('[case-ids...]', 'index case ids, as herald cases --failed lists them')
  .action(async (ids) => (await casesyncCli()).casesRetryCommand(ids))
cases.command('resolve').description('answer a case waiting on an unresolved transfer or missing in CommCare: the case its changes go to, or create it again')
  .argument('<case>', 'index case id, as herald cases --failed lists it')
  .option('--to <case-id>', 'the CommCare case its changes go to (and on along that case\'s transfers and duplicates)')
  .option('--domain <domain>', 'the domain of --to (default: the transfer\'s destination domain, else the case\'s own)')
  .option('--recreate', 'a case CommCare no longer has: post it again as a new case')
  .action(async (id, opts) => (await casesyncCli()).casesResolveCommand(id, opts))

const exposure = program.command('exposure').description('exposure notification: verification codes texted to newly positive residents')
exposure.command('status').description('notices by state and reason (pending, phone checked, issued, not sent and why)')
  .option('--json', 'print JSON')
  .action(async (opts) => (await exposureCli()).exposureStatusCommand(opts))
exposure.command('retry').description('try again the notices not sent for a reason (e.g. out_of_attempts, lookup_refused)')
  .requiredOption('--reason <reason>', 'the reason, as herald exposure status shows it')
  .action(async (opts) => (await exposureCli()).exposureRetryCommand(opts))

const service = program.command('service').description('messaging services: who sends texts, with what limits')
service.command('create').description('create a service (then: herald key create, herald template create)')
  .argument('<name>')
  .option('--sender <from>', 'the From of its texts: a number or a sender id (default: the name, 11 characters)')
  .option('--international', 'may text numbers outside HERALD_PHONE_REGION')
  .option('--restricted', 'trial mode: live keys text team members and the guest list only')
  .option('--rate-limit <n>', 'requests a minute per key type', positive)
  .option('--message-limit <n>', 'texts a day', positive)
  .option('--timezone <tz>', 'its days (daily limit, retention, facts)')
  .option('--json', 'print JSON')
  .action(async (name, opts) => (await messagingCli()).serviceCreateCommand(name, opts))
service.command('list').description('every service').option('--json', 'print JSON').action(async (opts) => (await messagingCli()).serviceListCommand(opts))
service.command('inbound-number').description("a service's inbound numbers (residents' replies, STOP): set one, remove it, or list them with the webhook URLs")
  .requiredOption('--service <id>', 'service id or name')
  .option('--number <e164>', 'the provider number residents text, e.g. +12125550100 (moved here if another service had it)')
  .option('--remove', 'remove --number from the service')
  .option('--json', 'print JSON')
  .action(async (opts) => (await messagingCli()).inboundNumberCommand(opts))
service.command('callback').description("a service's callbacks (as GOV.UK Notify's): set one (--url, its bearer token on stdin), remove it, or show them and their last failures")
  .requiredOption('--service <id>', 'service id or name')
  .option('--kind <kind>', 'delivery_status or inbound_sms')
  .option('--url <url>', 'where to POST: https (http only to 127.0.0.1)')
  .option('--token-stdin', 'read the bearer token (at least 10 characters) from stdin')
  .option('--remove', 'remove the callback of --kind')
  .option('--json', 'print JSON')
  .action(async (opts) => (await messagingCli()).serviceCallbackCommand(opts))

const key = program.command('key').description("a service's API keys (GOV.UK Notify format)")
key.command('create').description('create an API key; it is shown once')
  .requiredOption('--service <id>', 'service id or name')
  .requiredOption('--name <name>', 'what the key is for')
  .requiredOption('--type <type>', 'normal (live), team (team members and guest list only) or test (never sent)')
  .option('--json', 'print JSON')
  .action(async (opts) => (await messagingCli()).keyCreateCommand(opts))
key.command('revoke').description('revoke a key').argument('<key>', 'key id or name').requiredOption('--service <id>', 'service id or name')
  .action(async (k, opts) => (await messagingCli()).keyRevokeCommand(k, opts))

const template = program.command('template').description("a service's SMS templates: ((placeholders)), every version kept")
template.command('create').description('create a template: a text message, or an email with --email --subject')
  .requiredOption('--service <id>', 'service id or name')
  .requiredOption('--name <name>', 'its name')
  .option('--body <text>', 'the text, with ((placeholders)); an email\'s body uses GOV.UK Notify\'s formatting (# headings, * lists, ^ inset, ---)')
  .option('--file <file>', 'read the text from a file')
  .option('--email', 'an email template (needs --subject)')
  .option('--subject <text>', "the email's subject, with ((placeholders))")
  .option('--json', 'print JSON')
  .action(async (opts) => (await messagingCli()).templateCreateCommand(opts))
template.command('update').description('a new version of a template').argument('<id>')
  .option('--name <name>').option('--body <text>').option('--file <file>')
  .action(async (id, opts) => (await messagingCli()).templateUpdateCommand(id, opts))
template.command('archive').description('archive a template: no more texts from it').argument('<id>').action(async (id) => (await messagingCli()).templateArchiveCommand(id))

const member = program.command('member').description('team members and the guest list: whom team keys may text')
member.command('add').description('add a team member (or, with --guest, a guest list entry)')
  .requiredOption('--service <id>', 'service id or name')
  .requiredOption('--phone <number>', 'their mobile number')
  .option('--name <name>', 'their name')
  .option('--guest', 'a guest list entry rather than a team member')
  .action(async (opts) => (await messagingCli()).memberAddCommand(opts))

const jobs = program.command('jobs').description('bulk jobs: a CSV of recipients for one template; progress of each')
  .enablePositionalOptions()
  .option('--service <id>', 'one service only')
  .option('--json', 'print JSON')
  .action(async (opts) => (await messagingCli()).jobsCommand(opts))
jobs.command('create').description('upload a CSV ("phone number" column, one per placeholder): every row is checked first')
  .argument('<file>')
  .requiredOption('--service <id>', 'service id or name')
  .requiredOption('--template <id>', 'template id')
  .option('--at <time>', 'send at this time (ISO 8601) instead of now')
  .option('--json', 'print JSON')
  .action(async (file, opts) => (await messagingCli()).jobCreateCommand(file, opts))
jobs.command('cancel').description('cancel a job, with its texts not yet sent').argument('<id>').action(async (id) => (await messagingCli()).jobCancelCommand(id))

const retention = program.command('retention').description("how long each service keeps its notifications (default 7 days); then they move to history without numbers")
  .enablePositionalOptions()
  .option('--json', 'print JSON')
  .action(async (opts) => (await retentionCli()).retentionShowCommand(opts))
retention.command('run').description('remove what is past retention now (the nightly run does this too)')
  .option('--as-of <time>', 'judge retention from this moment instead of now (ISO 8601)')
  .option('--batch <n>', 'notifications moved per transaction', positive)
  .option('--json', 'print JSON')
  .action(async (opts) => (await retentionCli()).retentionRunCommand(opts))
retention.command('set').description("set a service's retention")
  .requiredOption('--service <id>', 'service id or name')
  .requiredOption('--days <n>', 'days to keep, 3 to 90', positive)
  .option('--type <type>', 'notification type', 'sms')
  .action(async (opts) => (await retentionCli()).retentionSetCommand(opts))

program.command('facts').description('compute billing and status facts (default: the last 3 days of each service, as the nightly run does)')
  .option('--from <day>', 'first local day (YYYY-MM-DD)')
  .option('--to <day>', 'last local day (default --from)')
  .option('--json', 'print JSON')
  .action(async (opts) => (await retentionCli()).factsCommand(opts))

program.command('usage').description("a service's texts, fragments and cost by month, from the facts")
  .requiredOption('--service <id>', 'service id or name')
  .option('--year <yyyy>', 'calendar year (default this one)', positive)
  .option('--json', 'print JSON')
  .action(async (opts) => (await retentionCli()).usageCommand(opts))

program.command('report').description("a CSV of a job's notifications, or a service's over local days, with phone numbers while they are kept")
  .requiredOption('--service <id>', 'service id or name')
  .option('--job <id>', "one bulk job's rows")
  .option('--from <day>', 'first local day (YYYY-MM-DD)')
  .option('--to <day>', 'last local day (default --from)')
  .option('--out <file>', 'write to a file instead of standard output')
  .action(async (opts) => (await retentionCli()).reportCommand(opts))

const generate = program.command('generate').description('write synthetic data for demos and benchmarks')
generate.command('eclrs').description('a realistic synthetic ECLRS export (fake people)')
  .requiredOption('--rows <n>', 'data rows', positive)
  .requiredOption('--out <file>', 'where to write it')
  .option('--version <v>', 'header version 1, 2 or 3', (v) => {
    if (!['1', '2', '3'].includes(v)) throw new InvalidArgumentError('must be 1, 2 or 3')
    return Number(v)
  }, 3)
  .option('--repeat-from <file>', 'an earlier export whose rows this one repeats')
  .option('--repeat-fraction <f>', 'share of rows taken from --repeat-from', fraction, 0.9)
  .option('--seed <n>', 'random seed (a different seed gives different people)', positive, 1)
  .action(async (opts) => {
    const r = await (await import('./ingest/generate.ts')).generateEclrs({ rows: opts.rows, version: opts.version, out: opts.out, repeatFrom: opts.repeatFrom,
      repeatFraction: opts.repeatFrom ? opts.repeatFraction : undefined, seed: opts.seed })
    console.log(`wrote ${opts.out}: ${r.rows} rows (v${opts.version}), ${r.repeated} repeated from ${opts.repeatFrom ?? 'nothing'}`)
  })

try {
  await program.parseAsync()
} catch (err) {
  const e = err as Error
  // By name: the classes live in modules this file does not load up front.
  const prefix = e instanceof ConfigError ? 'configuration error' : e.name === 'DataFolderBusy' ? 'busy' : e.name === 'CountyListError' ? 'county list' : 'error'
  console.error(`herald: ${prefix}: ${errorText(e)}`)
  process.exitCode = e instanceof ConfigError ? 2 : 1
}
