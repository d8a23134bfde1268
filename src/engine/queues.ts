/** Every engine's queue, in pipeline order: what `herald queue` and /metrics report. */
import { inboundQueue, outboundQueue } from '../casesync/queue.ts'
import { callbackQueue } from '../messaging/callbacks/queue.ts'
import { checkQueue, intakeQueue, issueQueue } from '../exposure/queue.ts'
import { inboxQueue } from '../ingest/queue.ts'
import { linkQueue } from '../link/queue.ts'
import { jobsQueue } from '../messaging/jobs/queue.ts'
import { receiptsQueue } from '../messaging/receipts/queue.ts'
import { nightlyQueue } from '../messaging/retention/queue.ts'
import { sendQueue } from '../messaging/send/queue.ts'
import { emailQueue } from '../messaging/email/queue.ts'
import type { Queryable } from '../db/types.ts'
import { stats, type QueueSpec, type QueueStats } from './queue.ts'

export const QUEUES: QueueSpec[] = [
  inboxQueue, linkQueue, outboundQueue, inboundQueue, intakeQueue, checkQueue, issueQueue, jobsQueue, sendQueue, emailQueue, receiptsQueue, callbackQueue, nightlyQueue,
]

export function queueOf(engine: string): QueueSpec {
  const spec = QUEUES.find((q) => q.engine === engine)
  if (!spec) throw new Error(`unknown engine ${engine}; engines: ${QUEUES.map((q) => q.engine).join(', ')}`)
  return spec
}

/** Every queue's state, in pipeline order (`herald queue`, /metrics). */
export async function allStats(db: Queryable): Promise<QueueStats[]> {
  const out: QueueStats[] = []
  for (const spec of QUEUES) out.push(await stats(db, spec))
  return out
}

/** How long, for a person: 42 s, 7 min, 3.5 h, 2.1 d. */
export function age(seconds: number | null): string {
  if (seconds === null) return ''
  if (seconds < 90) return `${Math.round(seconds)} s`
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`
  if (seconds < 172_800) return `${(seconds / 3600).toFixed(1)} h`
  return `${(seconds / 86400).toFixed(1)} d`
}
