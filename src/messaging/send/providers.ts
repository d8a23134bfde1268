/**
 * The providers' order: each has a configured priority (its place in HERALD_SMS_PROVIDERS) plus a
 * penalty for its recent errors that halves every HERALD_PROVIDER_RECOVERY_SECONDS, so a failing
 * provider sinks below the next one, and drifts back once it stops failing. Shared by every worker
 * through sms_providers.
 */
import type { Db } from '../../db/types.ts'

const PENALTY = 10 // one error: one priority step (providers are 10 apart)

const decayed = (halfLife: string) => `penalty * power(0.5, extract(epoch FROM now() - coalesce(penalised_at, now())) / ${halfLife})`

export async function registerProviders(db: Db, names: string[]) {
  await db.query(
    `INSERT INTO sms_providers (name, priority) SELECT n, 10 * i FROM unnest($1::text[]) WITH ORDINALITY AS x(n, i)
     ON CONFLICT (name) DO UPDATE SET priority = excluded.priority`, [names])
}

/** Provider names, best first. */
export async function providerOrder(db: Db, names: string[], recoverySeconds: number): Promise<string[]> {
  const rows = await db.query(`SELECT name FROM sms_providers WHERE name = ANY($1::text[]) ORDER BY priority + ${decayed('$2')}, priority`, [names, recoverySeconds])
  return rows.map((r) => r.name)
}

/** Errors push a provider down; successes are counted. */
export async function penalise(db: Db, failures: Map<string, number>, sentBy: string[], recoverySeconds: number) {
  const sent = new Map<string, number>()
  for (const p of sentBy) sent.set(p, (sent.get(p) ?? 0) + 1)
  const names = [...new Set([...failures.keys(), ...sent.keys()])]
  if (names.length === 0) return
  await db.query(
    `UPDATE sms_providers p SET
       penalty = CASE WHEN x.failed > 0 THEN ${decayed('$4')} + $5 * x.failed ELSE penalty END,
       penalised_at = CASE WHEN x.failed > 0 THEN now() ELSE penalised_at END,
       failed = p.failed + x.failed, sent = p.sent + x.sent
     FROM unnest($1::text[], $2::int[], $3::int[]) AS x(name, failed, sent) WHERE p.name = x.name`,
    [names, names.map((n) => failures.get(n) ?? 0), names.map((n) => sent.get(n) ?? 0), recoverySeconds, PENALTY])
}
