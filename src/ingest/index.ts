/**
 * The ingest engine: lab-result export files → lab rows.
 *
 * Inbox: inbox_files waiting (or whose worker's lease expired), claimed through the work queue
 * (queue.ts: inboxQueue); new objects in HERALD_INBOX (a folder or s3://bucket/prefix) are
 * registered by polling. Writes files (content identity, version,
 * totals new / seen / duplicate / error, also per county), lab_rows (each distinct row once, typed),
 * lab_row_keys (row identity, last sighting: a file's sightings go to ingest_sightings and are folded
 * in after its last commit, see sightings.ts) and ingest_errors (unusable rows with line and reason).
 * Outcome per inbox file: ingested, already_ingested, rejected, released (stopped; resumes), or
 * retry / failed after an error (the spec's backoff; failed after its last attempt, with the error
 * kept on the inbox row, until `herald ingest PATH` or `herald queue retry ingest`).
 */
import type { Config } from '../config.ts'
import type { Db } from '../db/types.ts'
import type { Engine } from '../engine/engine.ts'
import { errorText, type Logger } from '../log.ts'
import { displayName } from '../storage/local.ts'
import { storeFor, type ObjectStore } from '../storage/index.ts'
import { ingestFile, type IngestOptions, type IngestResult } from './file.ts'
import { claim, discover, fail, IngestConflict, release, type InboxFile } from './inbox.ts'
import { foldSightings } from './sightings.ts'

// A local file must be left alone this long before it is taken: it may still be being copied in.
const SETTLE_MS = 2000

export function ingestOptions(config: Config): IngestOptions {
  return { workerId: config.workerId, leaseSeconds: config.claimLeaseSeconds, batchRows: config.ingestBatchRows }
}

export function logResult(log: Logger, r: IngestResult) {
  log.info(
    { file: displayName(r.file), file_id: r.fileId, outcome: r.outcome, version: r.version, rows: r.rows, ...r.totals },
    `ingest ${r.outcome}`,
  )
}

/**
 * Ingests one claimed file. A failure is recorded on the inbox row (retry with backoff, or failed)
 * and logged without personal data; a lost claim is left to the worker that has it now.
 */
export async function processInboxFile(db: Db, store: ObjectStore, item: InboxFile, opts: IngestOptions, log: Logger): Promise<IngestResult | { outcome: 'retry' | 'failed' | 'conflict'; error: string }> {
  try {
    const result = await ingestFile(db, store, item, opts)
    if (result.outcome === 'released') await release(db, [item.id], opts.workerId)
    logResult(log, result)
    // The file's rows and counts are committed: its sightings are folded after, outside its time.
    if (result.outcome === 'ingested') await fold(db, log)
    return result
  } catch (err) {
    const error = errorText(err)
    if (err instanceof IngestConflict) {
      log.warn({ file: displayName(item.uri), inbox_id: item.id, err: error }, 'ingest lost its claim')
      return { outcome: 'conflict', error }
    }
    const next = await fail(db, item, opts.workerId, error)
    if (next === 'conflict') log.warn({ file: displayName(item.uri), inbox_id: item.id, err: error }, 'ingest lost its claim')
    else log.error({ file: displayName(item.uri), inbox_id: item.id, attempt: item.attempts, next, err: error }, 'ingest failed')
    return { outcome: next, error }
  }
}

/** Folds pending sightings (sightings.ts); a failure leaves them for the next fold. */
export async function fold(db: Db, log: Logger) {
  try {
    const { files, keys } = await foldSightings(db)
    if (files > 0) log.info({ files, keys }, 'ingest sightings folded')
  } catch (err) {
    log.warn({ err: errorText(err) }, 'ingest sightings not folded yet')
  }
}

export function ingestEngine(config: Config, log: Logger, location = config.inbox): Engine {
  const store = storeFor(location, config, { settleMs: SETTLE_MS })
  const opts = ingestOptions(config)
  let lastDiscovery = 0
  return {
    name: 'ingest',
    batchSize: 1, // files go one at a time, in order (see claim)
    async step(db, signal) {
      if (Date.now() - lastDiscovery >= config.pollIntervalMs) {
        lastDiscovery = Date.now()
        await discover(db, store).catch((err) => log.warn({ inbox: location, err: errorText(err) }, 'inbox not readable'))
      }
      if (signal.aborted) return {}
      // PGlite opened by this process alone: no other worker can be alive, whatever its lease says.
      const item = await claim(db, config.workerId, config.claimLeaseSeconds, undefined, db.kind === 'pglite')
      // Nothing to ingest: the time to fold what a process that died after a file's last commit left.
      if (!item) {
        await fold(db, log)
        return {}
      }
      // Claims go in order, so this may be a file someone named to `herald ingest` from elsewhere.
      const from = item.uri.startsWith('s3://') === location.startsWith('s3://') ? store : storeFor(item.uri, config)
      // A stop reaches the file's next batch boundary: it is released there, resumable (outcome `released`).
      return { [(await processInboxFile(db, from, item, { ...opts, signal }, log)).outcome]: 1 }
    },
  }
}
