/**
 * HERALD_REPORTS_DATABASE_URL: reports read from a read replica (PostgreSQL only). The "replica" here is
 * a copy of the database taken at a moment, opened read-only: rows written to the primary after the
 * copy are not in the report, which shows where it read, and a read-only session shows it writes nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { FastifyInstance } from 'fastify'
import { parse } from 'csv-parse/sync'
import { loadConfig } from '../../src/config.ts'
import { startHttpServer } from '../../src/http/server.ts'
import { createLogger } from '../../src/log.ts'
import { messagingRoutes } from '../../src/messaging/index.ts'
import { KeySecrets } from '../../src/messaging/keys.ts'
import { createKey, createService, createTemplate } from '../../src/messaging/services.ts'
import { admin, createTestDb, onPostgres, TEST_SECRET_KEY, type TestDb } from '../helpers/db.ts'
import { seedNotifications } from '../helpers/notifications.ts'
import { createSigner } from 'fast-jwt'

let t: TestDb
let replica: string
const servers: FastifyInstance[] = []

const sql = (text: string) => admin((c) => c.query(text))

beforeAll(async () => {
  if (!onPostgres) return
  t = await createTestDb()
})
afterAll(async () => {
  for (const s of servers) await s.close()
  if (replica) await sql(`DROP DATABASE IF EXISTS ${replica} WITH (FORCE)`)
  await t?.drop()
})

describe.skipIf(!onPostgres)('reports on a read replica (PostgreSQL: PGlite has no replicas)', () => {
  it('reads the report from HERALD_REPORTS_DATABASE_URL, the rest from DATABASE_URL', { timeout: 60_000 }, async () => {
    const secrets = new KeySecrets(TEST_SECRET_KEY)
    const service = await createService(t.db, { name: 'Replica test', smsSender: 'NYSDOH' })
    const { key } = await createKey(t.db, secrets, service.id, 'live', 'normal')
    const template = await createTemplate(t.db, service.id, 'Result ready', 'Hello, your result is ready.', 'tester')
    const at = (m: number) => `2026-11-20T1${m}:00:00Z`
    await seedNotifications(t.db, service, template.id, [0, 1, 2].map((i) => ({ at: at(i), phone: `+121255500${10 + i}` })))

    // The copy: CREATE DATABASE … TEMPLATE needs the primary without connections for a moment.
    const primary = new URL(t.url!).pathname.slice(1)
    replica = `${primary}_replica`
    await sql(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '${primary}' AND pid <> pg_backend_pid()`)
    await sql(`CREATE DATABASE ${replica} TEMPLATE ${primary}`)
    await seedNotifications(t.db, service, template.id, [3, 4].map((i) => ({ at: at(i), phone: `+121255500${10 + i}` })))

    const readOnly = new URL(t.url!)
    readOnly.pathname = `/${replica}`
    readOnly.searchParams.set('options', '-c default_transaction_read_only=on')
    const base = loadConfig({ ...process.env, DATABASE_URL: t.url, HERALD_SECRET_KEY: TEST_SECRET_KEY })
    const report = async (reportsDatabaseUrl: string | undefined) => {
      const app = await startHttpServer('127.0.0.1', 0, [messagingRoutes({ ...base, reportsDatabaseUrl }, t.db, createLogger('silent'))])
      servers.push(app)
      const a = app.server.address()
      const jwt = createSigner({ key: key.slice(-36), algorithm: 'HS256' })({ iss: service.id })
      const res = await fetch(`http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}/v2/reports/notifications?from=2026-11-20&to=2026-11-20`,
        { headers: { authorization: `Bearer ${jwt}` } })
      expect(res.status).toBe(200)
      return (parse(await res.text(), { columns: true }) as Record<string, string>[]).map((r) => r['Phone number'])
    }
    expect(await report(readOnly.toString())).toEqual(["'+12125550010", "'+12125550011", "'+12125550012"])
    expect(await report(undefined)).toHaveLength(5)
  })
})
