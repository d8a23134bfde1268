/**
 * Case sync: index cases ⇄ CommCare, one domain (project space) per county.
 *   outbound.ts  cases marked by link → one form each, following transfers and duplicates (resolve.ts)
 *   poll.ts      changes in CommCare → back into Herald, from a cursor per domain (inbound.ts has the rules)
 *   forwarder.ts CommCare's case forwarder → the same import, in seconds
 *   cases.ts     the cases it posts: loaded, and adopted at the end of a chain (moved_to)
 *   jobs.ts      the outbound jobs on the work queue; queue.ts: both queues' specs; client.ts, xform.ts: the wire
 */
import type { Config } from '../config.ts'
import type { Db } from '../db/types.ts'
import type { Engine } from '../engine/engine.ts'
import { parseCountyList, readCounties, saveCounties } from '../link/counties.ts'
import { errorText, type Logger } from '../log.ts'
import { CommCareClient, CommCareError } from './client.ts'
import { outboundEngine } from './outbound.ts'
import { claimCursor, ensureCursors, pollCursor } from './poll.ts'

export function commcareClient(config: Config, url: string): CommCareClient {
  return new CommCareClient({ ...config.commcare, url })
}

export function casesyncOutEngine(config: Config, log: Logger, client: CommCareClient) {
  return outboundEngine({ client, commcare: config.commcare, workerId: config.workerId, log })
}

/**
 * Each round polls every participating domain that is due, `pollConcurrency` domains at a time
 * (HERALD_COMMCARE_POLL_CONCURRENCY: a poll mostly waits on CommCare, and one domain at a time fell
 * behind the poll interval with New York's 56 domains), each claimed cursor by one loop, until none
 * is due or it is stopped. Outcomes: importCase's, and `poll_failed` for each poll that failed
 * (backed off; `herald run --until-idle` exits non-zero on it).
 */
export function casesyncInEngine(config: Config, log: Logger, client: CommCareClient): Engine {
  return {
    name: 'casesync-in',
    batchSize: 1,
    async step(db, signal) {
      const counties = await readCounties(db)
      const domains = [...new Set([...counties.byFips.values()].filter((c) => c.participating && c.domain).map((c) => c.domain!))]
      await ensureCursors(db, domains)
      const opts = { worker: config.workerId, pollSeconds: config.commcare.pollSeconds, pullSince: config.commcare.pullSince, signal }
      const total: Record<string, number> = {}
      // Each domain at most once a round, whatever its retry_at says after (a 429 may ask for no wait at all).
      // The loops share `left`; the claim's lease keeps two of them from taking one domain.
      const left = new Set(domains)
      const loop = async () => {
        for (let cursor; !signal.aborted && left.size > 0 && (cursor = await claimCursor(db, config.workerId, [...left]));) {
          const domain = cursor.domain
          left.delete(domain)
          try {
            const counts = await pollCursor(db, client, cursor, counties, opts)
            for (const [k, n] of Object.entries(counts)) total[k] = (total[k] ?? 0) + n
          } catch (err) {
            const status = err instanceof CommCareError ? err.status : undefined
            log.warn({ domain, status, err: status === undefined ? errorText(err) : undefined }, 'polling CommCare failed; next poll will try again')
            total.poll_failed = (total.poll_failed ?? 0) + 1
          }
        }
      }
      await Promise.all(Array.from({ length: Math.min(config.commcare.pollConcurrency, domains.length) }, loop))
      const changed = Object.entries(total).filter(([k]) => k !== 'unchanged' && k !== 'ignored')
      if (changed.length > 0) log.info(total, 'pulled changes from CommCare')
      return total
    },
  }
}

/** Loads CommCare's county list into counties; returns how many counties it holds. */
export async function fetchCounties(db: Db, client: CommCareClient): Promise<number> {
  const list = parseCountyList(await client.countyList())
  await db.transaction((tx) => saveCounties(tx, list))
  return list.length
}
