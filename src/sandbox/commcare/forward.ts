/**
 * The case forwarder: CommCare's data forwarding, which POSTs a case's JSON to a configured URL after
 * each change. Fire and forget: each post is tried once and retried 3 times (0.1 s, 0.2 s, 0.4 s apart),
 * then dropped silently, as a forwarder that gives up does. Posts of different changes may overlap and
 * arrive out of order; receivers order them by server_date_modified, as they must with CommCare.
 */
import { caseJson, type SandboxCase } from './store.ts'

export interface ForwardTarget { url: string; user: string; password: string }

const RETRIES = 3
const FIRST_DELAY_MS = 100

export class Forwarder {
  // Aborted on close so a sandbox never outlives its test while a retry waits.
  private readonly stop = new AbortController()

  constructor(private readonly target: ForwardTarget) {}

  send(c: SandboxCase): void {
    void this.post(JSON.stringify(caseJson(c)))
  }

  close(): void {
    this.stop.abort()
  }

  private async post(body: string): Promise<void> {
    const auth = 'Basic ' + Buffer.from(`${this.target.user}:${this.target.password}`).toString('base64')
    for (let attempt = 0; attempt <= RETRIES && !this.stop.signal.aborted; attempt++) {
      if (attempt > 0) await sleep(FIRST_DELAY_MS * 2 ** (attempt - 1), this.stop.signal)
      try {
        const res = await fetch(this.target.url, {
          method: 'POST', body, signal: this.stop.signal,
          headers: { 'content-type': 'application/json', authorization: auth },
        })
        await res.arrayBuffer()
        if (res.ok) return
      } catch {
        // Unreachable or aborted: try again (or stop, once aborted).
      }
    }
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms)
    signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true })
  })
}
