/**
 * The ingest engine: lab-result export files → lab rows.
 *
 * Inbox: inbox_files waiting (or whose worker's lease expired); new objects in HERALD_INBOX (a
 * folder or s3://bucket/prefix) are registered by polling. Writes files (content identity, version,
 * totals new / seen / duplicate / error, also per county), lab_rows (each distinct row once, typed),
 * lab_row_keys (row identity, last sighting) and ingest_errors (unusable rows with line and reason).
 * Outcome per inbox file: ingested, already_ingested, rejected, released (stopped; resumes), or
 * retry / failed after an error (failed after 5 attempts, with the error kept on the inbox row).
 */
import type { Config } from '../config.ts'
import type { Db } from '../db/types.ts'
import type { Engine } from '../engine/engine.ts'
import type { Logger } from '../log.ts'
import { displayName } from '../storage/local.ts'
import { storeFor, type ObjectStore } from '../storage/index.ts'
import { ingestFile, type IngestOptions, type IngestResult } from './file.ts'
import { claim, discover, fail, release, type InboxFile } from './inbox.ts'

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

/** Ingests one claimed file and records a failure (retry or failed) if it throws. */
export async function processInboxFile(db: Db, store: ObjectStore, item: InboxFile, opts: IngestOptions, log: Logger) {
  try {
    const result = await ingestFile(db, store, item, opts)
    if (result.outcome === 'released') await release(db, [item.id])
    logResult(log, result)
    return result
  } catch (err) {
    const message = (err as Error).message
    const next = await fail(db, item, message)
    log.error({ file: displayName(item.uri), inbox_id: item.id, attempt: item.attempts, next, err: message }, 'ingest failed')
    throw err
  }
}

export function ingestEngine(config: Config, log: Logger, location = config.inbox): Engine<InboxFile> {
  const store = storeFor(location, config, { settleMs: SETTLE_MS })
  const opts = ingestOptions(config)
  let lastDiscovery = 0
  return {
    name: 'ingest',
    batchSize: 1, // a file is a big unit of work: claim one at a time so others can share the inbox
    async discover(db) {
      if (Date.now() - lastDiscovery < config.pollIntervalMs) return
      lastDiscovery = Date.now()
      await discover(db, store).catch((err) => log.warn({ inbox: location, err: (err as Error).message }, 'inbox not readable'))
    },
    claim: (db, limit) => claim(db, config.workerId, config.claimLeaseSeconds, limit),
    async process(db, item, signal) {
      return (await processInboxFile(db, store, item, { ...opts, signal }, log)).outcome
    },
    release: (db, items) => release(db, items.map((i) => i.id)),
  }
}
