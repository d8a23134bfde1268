/** Drives the ingest engine's pieces directly, as the engine and `herald ingest` do. */
import type { Db } from '../../src/db/types.ts'
import { ingestFile, type IngestOptions, type IngestResult } from '../../src/ingest/file.ts'
import { claim, register } from '../../src/ingest/inbox.ts'
import { storeFor } from '../../src/storage/index.ts'

export const testConfig: { s3: { endpoint: string | undefined; region: string } } = { s3: { endpoint: undefined, region: 'us-east-1' } }

export function options(extra: Partial<IngestOptions> = {}): IngestOptions {
  return { workerId: 'test-worker', leaseSeconds: 60, batchRows: 1000, ...extra }
}

/** Registers, claims and ingests every file at `location`, in name order. */
export async function ingestPath(db: Db, location: string, extra: Partial<IngestOptions> = {}, config = testConfig): Promise<IngestResult[]> {
  const store = storeFor(location, config)
  const objects = []
  for await (const o of store.list()) objects.push(o)
  const ids = await register(db, objects)
  const results: IngestResult[] = []
  for (const id of ids) {
    const opts = options(extra)
    const item = await claim(db, opts.workerId, opts.leaseSeconds, [id])
    if (!item) throw new Error(`inbox file ${id} could not be claimed`)
    results.push(await ingestFile(db, store, item, opts))
  }
  return results
}

export const counts = (r: IngestResult) => ({ rows: r.rows, ...r.totals })

/**
 * A file about to crash: `path` registered and claimed by worker `doomed` with a 1 s lease, and a Db
 * whose `failAt`-th transaction fails as a lost connection would, so ingesting the file with it
 * leaves the batches before that one committed.
 */
export async function crashingAt(db: Db, path: string, failAt: number) {
  const store = storeFor(path, testConfig)
  const objects = []
  for await (const o of store.list()) objects.push(o)
  const [id] = await register(db, objects)
  const item = (await claim(db, 'doomed', 1, [id]))!
  let n = 0
  const dying: Db = { ...db, kind: db.kind, query: db.query.bind(db), exec: db.exec.bind(db), copyInto: db.copyInto.bind(db), close: db.close.bind(db),
    transaction: (fn) => (++n === failAt ? Promise.reject(new Error('connection lost')) : db.transaction(fn)) }
  return { store, item, dying }
}
