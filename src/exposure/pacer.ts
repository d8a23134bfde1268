/**
 * One quota for every worker: the verification server's X-RateLimit-* as last reported, in
 * rate_limits. Before a batch a worker takes codes from `remaining`; when a window has ended, the
 * new one starts with the last reported limit (X-RateLimit-Limit), so workers do not all rush it. With nothing left it is told how long until the
 * window resets, and its notices wait until then in the database: no fixed epochs, no sleeps.
 */
import type { Db } from '../db/types.ts'

/** Codes that may be sent now (up to n), or 0 and the seconds until the window resets. */
export async function takeQuota(db: Db, n: number): Promise<{ granted: number; waitSeconds: number }> {
  const [r] = await db.query(
    // A second's margin past the reset: the server's clock, and its rounding of the reset, may differ.
    `WITH cur AS (SELECT remaining, quota, reset_at, (reset_at IS NULL OR reset_at + interval '1 second' <= now()) AS new_window
                  FROM rate_limits WHERE name = 'enx' FOR UPDATE),
          avail AS (SELECT CASE WHEN new_window THEN quota ELSE remaining END AS left_, reset_at, new_window FROM cur)
     UPDATE rate_limits r SET remaining = CASE WHEN a.left_ IS NULL THEN NULL ELSE a.left_ - least(a.left_, $1) END,
       -- a new window's end is not known until the server reports it: a second, provisionally
       reset_at = CASE WHEN a.new_window THEN now() + interval '1 second' ELSE r.reset_at END, updated_at = now()
     FROM avail a WHERE r.name = 'enx'
     RETURNING coalesce(least(a.left_, $1), $1) AS granted,
       greatest(0, extract(epoch FROM (a.reset_at + interval '1 second' - now())))::float AS wait_seconds`, [n])
  if (!r) {
    // No quota known yet (a fresh database): nothing to pace by until the server reports one.
    await db.query(`INSERT INTO rate_limits (name) VALUES ('enx') ON CONFLICT DO NOTHING`)
    return { granted: n, waitSeconds: 0 }
  }
  return { granted: r.granted, waitSeconds: r.granted > 0 ? 0 : Math.max(1, Math.ceil(r.wait_seconds ?? 1)) }
}

/** What the server said after a request: codes left in the window, its end, and its size. */
export async function reportQuota(db: Db, rate: { remaining: number; reset: number; limit?: number }) {
  await db.query(
    `UPDATE rate_limits SET updated_at = now(), quota = coalesce($3, quota),
       remaining = CASE WHEN reset_at = to_timestamp($2) THEN least(coalesce(remaining, $1), $1) ELSE $1 END,
       reset_at = to_timestamp($2)
     WHERE name = 'enx' AND (reset_at IS NULL OR reset_at <= to_timestamp($2))`, [rate.remaining, rate.reset, rate.limit ?? null])
}

/** A 429: nothing left until Retry-After. */
export async function exhaustQuota(db: Db, retryAfterSeconds: number) {
  await db.query(`UPDATE rate_limits SET remaining = 0, reset_at = now() + make_interval(secs => $1), updated_at = now() WHERE name = 'enx'`, [retryAfterSeconds])
}
