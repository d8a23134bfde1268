/**
 * POST /commcare/cases: CommCare's case forwarder (a "repeater" sending case JSON) pushes each
 * changed case here, so an investigator's change arrives in seconds rather than at the next poll.
 * Basic auth; patient cases only; Herald's own submissions are ignored (their values are Herald's).
 * The answer comes after the change is committed: anything but 2xx makes CommCare send it again.
 */
import { timingSafeEqual } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import type { CommCareConfig } from '../config.ts'
import type { Db } from '../db/types.ts'
import { readCounties } from '../link/counties.ts'
import { errorText, type Logger } from '../log.ts'
import type { CommCareCase, CommCareClient } from './client.ts'
import { importCase, type ImportOutcome } from './inbound.ts'

function authorised(header: string | undefined, expected: { user: string; password: string }): boolean {
  const given = Buffer.from(header?.startsWith('Basic ') ? header.slice(6) : '', 'base64')
  const want = Buffer.from(`${expected.user}:${expected.password}`)
  return given.length === want.length && timingSafeEqual(given, want)
}

export function forwarderRoutes(deps: { db: Db; client: CommCareClient; commcare: CommCareConfig; log: Logger }) {
  const { db, client, commcare, log } = deps
  return (app: FastifyInstance) => {
    app.post('/commcare/cases', async (req, reply) => {
      if (!commcare.forwarder || !authorised(req.headers.authorization, commcare.forwarder)) {
        return reply.code(401).header('WWW-Authenticate', 'Basic realm="herald"').send({ error: 'unauthorised' })
      }
      const cases = (Array.isArray(req.body) ? req.body : [req.body]) as CommCareCase[]
      if (cases.some((c) => !c || typeof c.case_id !== 'string' || typeof c.properties !== 'object' || !c.server_date_modified)) {
        return reply.code(400).send({ error: 'expected case JSON: case_id, properties, server_date_modified' })
      }
      const counties = await readCounties(db)
      const outcomes: (ImportOutcome | 'own')[] = []
      try {
        for (const c of cases) {
          if (c.user_id && c.user_id === commcare.userId) outcomes.push('own')
          else outcomes.push(await importCase(db, client, c, c.domain ?? '', counties))
        }
      } catch (err) {
        log.error({ err: errorText(err) }, 'a forwarded case could not be imported; CommCare will send it again')
        return reply.code(500).send({ error: 'not imported; send again' })
      }
      log.info({ outcomes }, 'forwarded cases')
      return { outcomes }
    })
  }
}
