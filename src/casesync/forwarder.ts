/**
 * POST /commcare/cases: CommCare's case forwarder (a "repeater" sending case JSON) pushes each
 * changed case here, so an investigator's change arrives in seconds rather than at the next poll.
 * Basic auth, checked before the body is read; patient cases only; Herald's own submissions are
 * ignored (their values are Herald's). A case the import rules skip (inbound.ts) is answered 200,
 * outcome `skipped`: sending it again would change nothing, its next version is judged again. The answer comes after the change is committed: CommCare
 * sends again after a 5xx, so a 5xx is kept for what a later try may cure (the database or CommCare
 * unreachable) and a case that can never be imported (malformed, a value the database refuses) is a
 * 400: it would otherwise be retried for ever.
 */
import { timingSafeEqual } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import type { CommCareConfig } from '../config.ts'
import type { Db } from '../db/types.ts'
import { isBadValue } from '../http/server.ts'
import { readCounties } from '../link/counties.ts'
import { errorText, type Logger } from '../log.ts'
import type { CommCareCase, CommCareClient } from './client.ts'
import { importCase, type ImportOutcome } from './inbound.ts'

function authorised(header: string | undefined, expected: { user: string; password: string }): boolean {
  const given = Buffer.from(header?.startsWith('Basic ') ? header.slice(6) : '', 'base64')
  const want = Buffer.from(`${expected.user}:${expected.password}`)
  return given.length === want.length && timingSafeEqual(given, want)
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const optional = (v: unknown, type: string) => v === undefined || v === null || typeof v === type
const isTime = (v: unknown) => typeof v === 'string' && /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}/.test(v) && !Number.isNaN(Date.parse(v))

const stringsOnly = (v: unknown) => isObject(v) && Object.values(v).every((x) => x === null || typeof x === 'string')

/** What is wrong with a pushed case, by field name only (its values are personal data), or undefined. */
function malformed(c: unknown): string | undefined {
  if (!isObject(c)) return 'a case is not an object'
  if (typeof c.case_id !== 'string' || c.case_id === '' || c.case_id.length > 200) return 'case_id'
  if (!stringsOnly(c.properties)) return 'properties'
  if (!isTime(c.server_date_modified)) return 'server_date_modified'
  if (!optional(c.closed, 'boolean')) return 'closed'
  for (const k of ['domain', 'user_id', 'date_closed', 'server_date_opened'] as const) if (!optional(c[k], 'string')) return k
  // Of the children (lab results, one level deep) only the properties are read.
  if (c.child_cases !== undefined && c.child_cases !== null) {
    if (!isObject(c.child_cases) || !Object.values(c.child_cases).every((ch) => isObject(ch) && stringsOnly(ch.properties))) return 'child_cases'
  }
  return undefined
}

export function forwarderRoutes(deps: { db: Db; client: CommCareClient; commcare: CommCareConfig; log: Logger }) {
  const { db, client, commcare, log } = deps
  return (app: FastifyInstance) => {
    void app.register(async (scope) => {
      scope.addHook('onRequest', async (req, reply) => {
        if (!commcare.forwarder || !authorised(req.headers.authorization, commcare.forwarder)) {
          return reply.code(401).header('WWW-Authenticate', 'Basic realm="herald"').send({ error: 'unauthorised' })
        }
      })
      scope.post('/commcare/cases', async (req, reply) => {
        const cases: unknown[] = Array.isArray(req.body) ? req.body : [req.body]
        const bad = cases.map((c) => malformed(c)).find((b) => b)
        if (bad) return reply.code(400).send({ error: `expected case JSON: case_id, properties, server_date_modified, closed (${bad})` })
        const counties = await readCounties(db)
        const outcomes: (ImportOutcome | 'own')[] = []
        try {
          for (const c of cases as CommCareCase[]) {
            if (c.user_id && c.user_id === commcare.userId) outcomes.push('own')
            else outcomes.push(await importCase(db, client, c, c.domain ?? '', counties))
          }
        } catch (err) {
          if (isBadValue(err)) {
            log.warn({ err: errorText(err) }, 'a forwarded case has a value the database refuses; refused for good')
            return reply.code(400).send({ error: 'a value of the case cannot be stored' })
          }
          log.error({ err: errorText(err) }, 'a forwarded case could not be imported; CommCare will send it again')
          return reply.code(500).send({ error: 'not imported; send again' })
        }
        log.info({ outcomes }, 'forwarded cases')
        return { outcomes }
      })
    })
  }
}
