// CI's check of the package as deploy/ runs it (there is no container engine here): `npm pack`, the
// tarball installed in a clean folder (no tsx, no TypeScript, no src/), `npx herald --help`, then the
// installed bin/herald.js started as the Dockerfile's command starts it: as a non-root user, with
// deploy/herald.env (compose's env_file) and secrets from files. What differs from compose, and why:
// host names are 127.0.0.1 (minio is an s3rver here, PostgreSQL the local server, in a database made
// for this run and dropped after), ports are free ones, the *_FILE secrets are files in a temp folder.
//
//   node scripts/check-package.mjs        (DATABASE_ADMIN_URL: a PostgreSQL server it may create a database on;
//                                          default postgres://postgres@127.0.0.1:5432/postgres)
import { execFileSync, spawn } from 'node:child_process'
import { once } from 'node:events'
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import pg from 'pg'
import S3rver from 's3rver'

const repo = fileURLToPath(new URL('..', import.meta.url))
const adminUrl = process.env.DATABASE_ADMIN_URL || 'postgres://postgres@127.0.0.1:5432/postgres'
const tmp = mkdtempSync(join(tmpdir(), 'herald-package-'))
chmodSync(tmp, 0o755) // the non-root user reads the package from here
const t0 = Date.now()
const step = (what) => console.log(`-- ${Math.round((Date.now() - t0) / 1000)} s: ${what}`)
const fail = (what) => { throw new Error(what) }
const npm = (args, cwd) => execFileSync('npm', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] })

// Run as root (CI): the processes run as nobody, as the image's `herald` user would.
const asUser = process.getuid?.() === 0 ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'] : []
const giveToUser = (path) => { if (asUser.length) chownSync(path, 65534, 65534) }

const db = { name: `herald_pack_${process.pid}`, made: false, admin: new pg.Client({ connectionString: adminUrl }) }
let s3
try {
  step('npm pack (runs prepare: the build)')
  const [packed] = JSON.parse(npm(['pack', '--json', '--pack-destination', tmp, '--silent'], repo))
  const files = packed.files.map((f) => f.path)
  for (const must of ['bin/herald.js', 'dist/cli.js', 'dist/launch.js', 'dist/db/migrations/001_ingest.sql', 'dist/console/views/layout.eta',
    'dist/sandbox/commcare/county_list_ny.json', 'README.md', 'package.json']) if (!files.includes(must)) fail(`the package lacks ${must}`)
  const extra = files.filter((f) => /^(src|test|bench|scripts|deploy)\//.test(f))
  if (extra.length) fail(`the package holds what it should not: ${extra.slice(0, 5).join(', ')}`)
  console.log(`   ${packed.filename}: ${files.length} files, ${(packed.size / 2 ** 20).toFixed(1)} MB`)

  step('install it in a clean folder (from npm\'s cache where it can)')
  const app = join(tmp, 'app')
  mkdirSync(app)
  npm(['init', '-y'], app)
  npm(['install', '--prefer-offline', '--no-audit', '--no-fund', join(tmp, packed.filename)], app)
  for (const dev of ['tsx', 'typescript', 'vitest']) if (existsSync(join(app, 'node_modules', dev))) fail(`${dev} was installed: it is a dev dependency`)
  const help = execFileSync('npx', ['--no-install', 'herald', '--help'], { cwd: app, encoding: 'utf8' })
  if (!help.includes('Usage: herald')) fail(`npx herald --help printed: ${help}`)
  console.log('   npx herald --help: ok')

  // The environment of compose's herald services, and nothing else from CI's.
  const bin = join(app, 'node_modules', 'herald', 'bin', 'herald.js')
  const secrets = join(tmp, 'secrets')
  mkdirSync(secrets, { mode: 0o700 })
  const secret = (name, text) => { writeFileSync(join(secrets, name), `${text}\n`, { mode: 0o400 }); giveToUser(join(secrets, name)) }
  giveToUser(secrets)
  const data = join(tmp, 'data')
  mkdirSync(data)
  giveToUser(data)
  const dbUrl = new URL(adminUrl)
  dbUrl.pathname = `/${db.name}`
  secret('database_url', dbUrl.href)
  secret('secret_key', execFileSync('openssl', ['rand', '-hex', '32'], { encoding: 'utf8' }).trim())
  secret('aws_credentials', '[default]\naws_access_key_id = S3RVER\naws_secret_access_key = S3RVER')
  const composeEnv = Object.fromEntries(readFileSync(join(repo, 'deploy', 'herald.env'), 'utf8').split('\n')
    .filter((l) => /^[A-Z_0-9]+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
  // This Node, where the user can run it (CI's Node 24 lives in root's cache folder, which nobody may enter).
  const node = asUser.length ? join(tmp, 'node', 'bin', 'node') : process.execPath
  if (asUser.length) { mkdirSync(join(tmp, 'node', 'bin'), { recursive: true }); copyFileSync(process.execPath, node); chmodSync(node, 0o755) }
  const base = { PATH: `${dirname(node)}:${process.env.PATH}`, HOME: data, ...composeEnv, HERALD_DATA_DIR: data,
    DATABASE_URL_FILE: join(secrets, 'database_url'), HERALD_SECRET_KEY_FILE: join(secrets, 'secret_key'),
    AWS_SHARED_CREDENTIALS_FILE: join(secrets, 'aws_credentials') }
  const herald = (args, env) => spawn(asUser[0] ?? node, [...asUser.slice(1), ...(asUser.length ? [node] : []), bin, ...args],
    { cwd: app, env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const run = async (args, env = {}) => {
    const child = herald(args, env)
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    const [code] = await once(child, 'exit')
    if (code !== 0) fail(`herald ${args.join(' ')} exited ${code}:\n${out}`)
    return out
  }

  step('on PGlite: herald generate, migrate and ingest')
  const pglite = { DATABASE_URL_FILE: '', HERALD_INBOX: '', HERALD_JOB_STORE: '', HERALD_DATA_DIR: join(data, 'pglite') }
  const eclrs = join(data, 'eclrs.txt')
  await run(['generate', 'eclrs', '--rows', '200', '--out', eclrs], pglite)
  console.log(`   ${(await run(['migrate'], pglite)).trim().split('\n').at(-1)}`)
  await run(['ingest', eclrs], pglite)
  const pgliteFiles = await run(['files'], pglite)
  if (!/200/.test(pgliteFiles)) fail(`herald files shows no 200 rows:\n${pgliteFiles}`)

  step(`on PostgreSQL (${db.name}) and S3 (an s3rver standing in for minio), as compose runs it`)
  await db.admin.connect()
  db.made = true
  await db.admin.query(`CREATE DATABASE ${db.name}`)
  s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: join(tmp, 's3'),
    configureBuckets: [{ name: 'herald-inbox', configs: [] }, { name: 'herald-jobs', configs: [] }] })
  const { port: s3Port } = await s3.run()
  const endpoint = `http://127.0.0.1:${s3Port}`
  const client = new S3Client({ region: 'us-east-1', endpoint, forcePathStyle: true, credentials: { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } })
  await client.send(new PutObjectCommand({ Bucket: 'herald-inbox', Key: 'eclrs/eclrs.txt', Body: readFileSync(eclrs) }))
  const ports = { HERALD_HTTP_PORT: String(await freePort()), HERALD_METRICS_PORT: String(await freePort()), S3_ENDPOINT: endpoint }

  // compose's migrate service, then an engines process until the inbox is done.
  console.log(`   ${(await run(['migrate'], ports)).trim().split('\n').at(-1)}`)
  await run(['run', '--role', 'engines', '--until-idle'], ports)
  const listed = await run(['files'], ports)
  if (!/eclrs\.txt/.test(listed) || !/200/.test(listed)) fail(`herald files shows no eclrs.txt of 200 rows:\n${listed}`)
  console.log('   herald run --role engines --until-idle: the S3 inbox\'s file ingested')

  // The long-running roles: up, healthy, ready, the heap cap their role's, and a SIGTERM drains them: exit 0.
  for (const [role, port, heap] of [['api', ports.HERALD_HTTP_PORT, 512], ['engines', ports.HERALD_METRICS_PORT, 256]]) {
    const child = herald(['run', '--role', role], ports)
    let out = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (out += d))
    const exited = once(child, 'exit')
    const ready = await until(async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status === 200, 60_000)
    if (!ready) fail(`herald run --role ${role}: /readyz never answered 200:\n${out}`)
    const healthz = await fetch(`http://127.0.0.1:${port}/healthz`)
    if (healthz.status !== 200) fail(`herald run --role ${role}: /healthz answered ${healthz.status}`)
    const flags = heapFlags(child.pid)
    if (!flags.includes(`--max-old-space-size=${heap}`)) fail(`herald run --role ${role}: node runs with ${flags.join(' ') || 'no flags'}, not a ${heap} MB heap`)
    process.kill(child.pid, 'SIGTERM')
    const [code, signal] = await exited
    if (code !== 0) fail(`herald run --role ${role}: a SIGTERM ended it with ${code ?? signal}:\n${out}`)
    console.log(`   herald run --role ${role}: /healthz and /readyz 200, a ${heap} MB heap, SIGTERM: exit 0`)
  }
  console.log('package check: ok')
} finally {
  await s3?.close().catch(() => {})
  if (db.made) await db.admin.query(`DROP DATABASE IF EXISTS ${db.name} WITH (FORCE)`).catch((e) => console.error(e.message))
  await db.admin.end().catch(() => {})
  rmSync(tmp, { recursive: true, force: true })
}

/** The node flags of the process the launcher PID started (whichever user it runs as: through setpriv, its child). */
function heapFlags(pid) {
  const children = (p) => readdirSync('/proc').filter((d) => /^\d+$/.test(d))
    .filter((d) => { try { return readFileSync(`/proc/${d}/stat`, 'utf8').split(') ')[1].split(' ')[1] === String(p) } catch { return false } })
  const cmdline = (p) => readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0')
  for (const p of [pid, ...children(pid), ...children(pid).flatMap(children)]) {
    const args = cmdline(p)
    if (args.some((a) => a.endsWith('dist/cli.js'))) return args.filter((a) => a.startsWith('--'))
  }
  return []
}

async function until(check, ms) {
  for (const end = Date.now() + ms; Date.now() < end; await new Promise((r) => setTimeout(r, 250))) if (await check()) return true
  return false
}

async function freePort() {
  const server = createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address()
  server.close()
  return port
}
