/** `herald db …`: database changes an operator makes on purpose, never on start (docs/operations.md). */
import { partitionByDay } from '../db/optional/partition-by-day.ts'
import { withDb } from './context.ts'

export async function partitionByDayCommand(o: { daysAhead: number }) {
  return withDb(async ({ db, config }) => {
    const r = await partitionByDay(db, { timezone: config.exposure.timezone, daysAhead: o.daysAhead, progress: (l) => console.error(l) })
    if (!r.applied) {
      return console.log(`notifications and notification_history are already partitioned by day (since ${r.bound.toISOString()}): `
        + (r.partitions.length ? `added the missing day partitions ${r.partitions.join(', ')}` : 'nothing to do'))
    }
    console.log(`notifications and notification_history are partitioned by day: rows before ${r.bound.toISOString()} stay in `
      + `${r.partitions.filter((p) => p.includes('_before_')).join(' and ')}; ${(r.partitions.length - 2) / 2} day partitions each from then on, `
      + 'and the nightly run keeps a week of them ahead')
  })
}
