/**
 * The console in tests: one database for the file (emptied, county list loaded, before each test),
 * Herald's HTTP server on a free loopback port with the API and the console, and a `Visitor`: a
 * browser without a browser (cookies kept, each form's CSRF token taken from the last page seen).
 */
import { afterAll, beforeAll, beforeEach } from 'vitest'
import type { FastifyInstance } from 'fastify'
import { consoleFor } from '../../src/console/index.ts'
import { createUser, setPipelinePermissions, setServicePermissions, type PipelinePermission, type ServicePermission } from '../../src/console/users.ts'
import type { Db } from '../../src/db/types.ts'
import { startHttpServer } from '../../src/http/server.ts'
import { createLogger } from '../../src/log.ts'
import { messagingRoutes } from '../../src/messaging/index.ts'
import { createTestDb, type TestDb } from './db.ts'
import { resetDb } from './link.ts'
import { config } from './messaging.ts'

export { config }
export const PASSWORD = 'correct horse battery staple'

export interface ConsoleWorld {
  db: Db
  url: string
}

export function consoleWorld(): ConsoleWorld {
  const w = {} as ConsoleWorld
  let t: TestDb
  let app: FastifyInstance
  beforeAll(async () => {
    t = await createTestDb()
    w.db = t.db
    const log = createLogger('silent')
    app = await startHttpServer('127.0.0.1', 0, [messagingRoutes(config, t.db, log), consoleFor(config, t.db, log)])
    const a = app.server.address()
    w.url = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`
  })
  afterAll(async () => {
    await app?.close()
    await t?.drop()
  })
  beforeEach(async () => resetDb(t.db))
  return w
}

/** A user with these permissions; returns their id. */
export async function makeUser(db: Db, email: string, grants: { admin?: boolean; pipeline?: PipelinePermission[]; services?: Record<string, ServicePermission[]> } = {}) {
  const id = await createUser(db, { email, name: email.split('@')[0], password: PASSWORD, admin: grants.admin })
  if (grants.pipeline) await setPipelinePermissions(db, id, grants.pipeline)
  for (const [service, perms] of Object.entries(grants.services ?? {})) await setServicePermissions(db, id, service, perms)
  return id
}

export class Visitor {
  private cookies = new Map<string, string>()
  private csrf = ''
  lastHtml = ''

  constructor(private readonly base: string) {}

  async get(path: string): Promise<Response & { html: string }> {
    return this.send(path, { method: 'GET' })
  }

  /** Posts a form (application/x-www-form-urlencoded), with the CSRF token of the last page seen unless given. */
  async post(path: string, fields: Record<string, string | string[]> = {}): Promise<Response & { html: string }> {
    if (!this.csrf && !('_csrf' in fields)) await this.get('/sign-in')
    const body = new URLSearchParams()
    for (const [k, v] of Object.entries({ _csrf: this.csrf, ...fields })) for (const x of [v].flat()) body.append(k, x)
    return this.send(path, { method: 'POST', body, headers: { 'content-type': 'application/x-www-form-urlencoded' } })
  }

  /** Signs in (no second factor); throws unless it worked. */
  async signIn(email: string, password = PASSWORD): Promise<this> {
    const r = await this.post('/sign-in', { email, password })
    if (r.status !== 302) throw new Error(`sign-in failed: ${r.status} ${r.html.slice(0, 300)}`)
    return this
  }

  private async send(path: string, init: RequestInit): Promise<Response & { html: string }> {
    const headers = new Headers(init.headers)
    if (this.cookies.size) headers.set('cookie', [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; '))
    const res = await fetch(this.base + path, { ...init, headers, redirect: 'manual' })
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';')
      const [k, v] = [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)]
      if (/expires=Thu, 01 Jan 1970/i.test(c) || v === '') this.cookies.delete(k)
      else this.cookies.set(k, v)
    }
    const html = await res.text()
    const token = /name="_csrf" value="([^"]+)"/.exec(html)?.[1]
    if (token) this.csrf = token
    this.lastHtml = html
    return Object.assign(res, { html })
  }
}
