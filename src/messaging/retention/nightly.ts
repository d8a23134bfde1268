/**
 * The nightly run: facts for the last days (statuses settle for 3), then retention. Every Herald
 * process hosts the engine; the first to find the night due claims it with a row in nightly_runs,
 * so it runs once however many processes there are. A run that died is taken over after 2 hours.
 * Facts come first so the days they recompute still hold every notification.
 */
import type { Db } from '../../db/types.ts'
import type { BatchEngine } from '../../engine/engine.ts'
import type { Logger } from '../../log.ts'
import type { ObjectStore } from '../../storage/types.ts'
import { computeFacts } from '../facts/facts.ts'
import { runRetention } from './retention.ts'

const CHECK_EVERY_MS = 60_000

export function nightlyEngine(opts: { store: ObjectStore; at: string; timezone: string; log: Logger }): BatchEngine {
  let checked = 0
  return {
    name: 'nightly',
    batchSize: 1,
    async step(db: Db): Promise<Record<string, number>> {
      if (Date.now() - checked < CHECK_EVERY_MS) return {}
      checked = Date.now()
      const [claim] = await db.query(
        `INSERT INTO nightly_runs (task, night) SELECT 'messaging', (now() AT TIME ZONE $1)::date WHERE (now() AT TIME ZONE $1)::time >= $2::time
         ON CONFLICT (task, night) DO UPDATE SET started_at = now()
           WHERE nightly_runs.finished_at IS NULL AND nightly_runs.started_at < now() - interval '2 hours'
         RETURNING night::text`, [opts.timezone, opts.at])
      if (!claim) return {}
      opts.log.info({ night: claim.night }, 'nightly run: facts, then retention')
      const facts = await computeFacts(db)
      const retention = await runRetention(db, { store: opts.store, log: opts.log })
      const summary = {
        facts,
        archived: retention.reduce((n, s) => n + s.archived, 0),
        deleted: retention.reduce((n, s) => n + s.deleted, 0),
        files: retention.reduce((n, s) => n + s.files, 0),
      }
      await db.query(`UPDATE nightly_runs SET finished_at = now(), summary = $2 WHERE task = 'messaging' AND night = $1`, [claim.night, JSON.stringify(summary)])
      opts.log.info({ night: claim.night, ...summary }, 'nightly run done')
      return { nights: 1 }
    },
  }
}
