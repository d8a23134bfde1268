/**
 * The receipt runner: plays a text's steps (Twilio's `sent`, then its final status; Vonage's final
 * receipt per part), each `callbackDelayMs` after the previous step's posts were done, so one text's
 * receipts arrive in order (real providers do not promise that). A step sets the ledger status even
 * when there is nowhere to post. Retry policy: each post is tried up to 3 times, 0.1 s then 0.2 s
 * apart, on a refused connection, a non-2xx answer or 5 s without one; then it counts in
 * `callbacksFailed` and is dropped, as a provider gives up. `close()` cancels every pending step and
 * every wait between tries, so a closed sandbox starts no post and holds no timer. A post already in
 * flight is left to finish (5 s at most): aborting it would strand its half-open keep-alive
 * connection in fetch's shared pool, and the receiver's server could then never close.
 */

/** One HTTP POST a step sends: the body already encoded in the provider's format. */
export interface Post { url: string; body: string; headers: Record<string, string> }
/** A step, built when it fires (`at`, sandbox time) so its timestamps are the moment it is sent. */
export type Step = (at: number) => { status: string; posts: Post[] }

/** A callback URL a provider would accept: http or https. */
export function isHttpUrl(s: string): boolean {
  try {
    return ['http:', 'https:'].includes(new URL(s).protocol)
  } catch {
    return false
  }
}

const TRIES = 3
const FIRST_BACKOFF_MS = 100
const ATTEMPT_TIMEOUT_MS = 5000

export class Receipts {
  // Aborted on close: cancels the waits between tries.
  private readonly stop = new AbortController()
  private readonly timers = new Set<NodeJS.Timeout>()

  constructor(
    private readonly delayMs: () => number,
    private readonly now: () => number,
    private readonly stats: { callbacksSent: number; callbacksFailed: number },
  ) {}

  /** Plays `steps` for a ledger entry, updating its status as each fires. */
  play(entry: { status: string }, steps: Step[]): void {
    const [step, ...rest] = steps
    if (!step) return
    this.later(this.delayMs(), async () => {
      const { status, posts } = step(this.now())
      entry.status = status
      await Promise.all(posts.map((p) => this.post(p)))
      if (!this.stop.signal.aborted) this.play(entry, rest)
    })
  }

  close(): void {
    this.stop.abort()
    for (const t of this.timers) clearTimeout(t)
    this.timers.clear()
  }

  private later(ms: number, fn: () => Promise<void>): void {
    if (this.stop.signal.aborted) return
    const t = setTimeout(() => {
      this.timers.delete(t)
      void fn()
    }, ms)
    this.timers.add(t)
  }

  private async post(p: Post): Promise<void> {
    for (let attempt = 0; attempt < TRIES; attempt++) {
      if (attempt > 0 && !(await this.sleep(FIRST_BACKOFF_MS * 2 ** (attempt - 1)))) return
      try {
        const res = await fetch(p.url, { method: 'POST', headers: p.headers, body: p.body, signal: AbortSignal.timeout(ATTEMPT_TIMEOUT_MS) })
        await res.arrayBuffer()
        if (res.ok) {
          this.stats.callbacksSent++
          return
        }
      } catch {
        // Refused or timed out: try again, unless the sandbox closed meanwhile.
      }
      if (this.stop.signal.aborted) return
    }
    this.stats.callbacksFailed++
  }

  /** Resolves true after `ms`, or false at once if the sandbox closes meanwhile. */
  private sleep(ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      if (this.stop.signal.aborted) return resolve(false)
      const onAbort = () => resolve(false)
      const t = setTimeout(() => {
        this.timers.delete(t)
        this.stop.signal.removeEventListener('abort', onAbort)
        resolve(true)
      }, ms)
      this.timers.add(t)
      this.stop.signal.addEventListener('abort', onAbort, { once: true })
    })
  }
}
