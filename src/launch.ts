/**
 * The `herald` command's launcher (bin/herald.js runs it): Node sets a heap's size when it starts and
 * never after, so the launcher starts Node once more, with the cap for what the command hosts, on the
 * compiled CLI, and stands in for it: signals forwarded, its exit status passed on.
 *
 * Why a cap at all: ingest makes garbage fast, and without one V8 lets it pile up to gigabytes
 * before collecting it; with one, memory stays flat (docs/benchmarks.md). The console and the API
 * keep more live (caches, sessions, requests in flight), hence more for the roles that serve HTTP.
 */
import { spawn } from 'node:child_process'
import { constants } from 'node:os'
import { isatty } from 'node:tty'

export class HeapError extends Error {}

/** MB of heap per role: one-shot commands and engine-only processes, the API, both in one process. */
export const HEAP_MB = { engines: 256, api: 512, all: 768 } as const

/** The command's name: the first argument that is not an option. */
const commandOf = (argv: string[]) => argv.find((a) => !a.startsWith('-'))

/** `--role X` or `--role=X` of `herald run` and `herald start`; absent: all. */
function roleOf(argv: string[]): string {
  const i = argv.findIndex((a) => a === '--role' || a.startsWith('--role='))
  if (i < 0) return 'all'
  return argv[i].includes('=') ? argv[i].slice('--role='.length) : argv[i + 1] ?? 'all'
}

/** HERALD_HEAP_MB, else the role's default (`run` and `start` host a role, all by default; other commands are one-shot). */
export function heapMb(argv: string[], env: Record<string, string | undefined>): number {
  const raw = env.HERALD_HEAP_MB?.trim()
  if (raw) {
    if (!/^\d+$/.test(raw) || Number(raw) < 64) throw new HeapError(`HERALD_HEAP_MB: must be a whole number of MB, at least 64, got "${raw}"`)
    return Number(raw)
  }
  const command = commandOf(argv)
  if (command !== 'run' && command !== 'start') return HEAP_MB.engines
  const role = roleOf(argv)
  return role === 'api' || role === 'engines' ? HEAP_MB[role] : HEAP_MB.all
}

/**
 * Runs `node --max-old-space-size=MB entry ...argv` and exits as it exits (its code, or the signal
 * that ended it). A `--max-old-space-size` given to this Node (node --max-old-space-size=N herald)
 * is kept unless HERALD_HEAP_MB is set.
 */
export function launch(entry: string, argv: string[], env: NodeJS.ProcessEnv = process.env): void {
  let flags = process.execArgv
  try {
    if (env.HERALD_HEAP_MB?.trim() || !flags.some((f) => f.startsWith('--max-old-space-size'))) {
      flags = [...flags.filter((f) => !f.startsWith('--max-old-space-size')), `--max-old-space-size=${heapMb(argv, env)}`]
    }
  } catch (err) {
    if (!(err instanceof HeapError)) throw err
    console.error(`herald: configuration error: ${err.message}`) // as the CLI reports a bad setting: exit 2
    process.exit(2)
  }
  // A terminal's Ctrl-C, `kill %1` and a control group's stop signal reach every process of the group:
  // forwarded as well, a signal would arrive twice, and a second signal means "quit now" to a
  // long-running process, which would skip its drain. So `run` and `start` get a process group of
  // their own and hear signals only from here. One-shot commands stay in ours (they may read a
  // password from the terminal, which a process outside the foreground group may not); a terminal's
  // Ctrl-C already reaches them, so SIGINT is forwarded to them only when no terminal is attached.
  const command = commandOf(argv)
  const ownGroup = command === 'run' || command === 'start'
  // The fourth stdio is a channel the child watches (cli.ts): a launcher killed with SIGKILL cannot forward
  // it, and the worker must not live on holding leases, so the channel's close ends the child too.
  const child = spawn(process.execPath, [...flags, entry, ...argv], { stdio: ['inherit', 'inherit', 'inherit', 'ipc'], env, detached: ownGroup })
  child.channel?.unref()
  const forward = (signal: NodeJS.Signals) => {
    if (signal === 'SIGINT' && !ownGroup && isatty(0)) return // (not process.stdin: that would open it, and a password typed is the child's)
    child.kill(signal)
  }
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const
  for (const signal of signals) process.on(signal, forward)
  child.on('error', (err) => {
    console.error(`herald: could not start node: ${err.message}`)
    process.exit(1)
  })
  child.on('exit', (code, signal) => {
    for (const s of signals) process.off(s, forward)
    if (!signal) process.exit(code ?? 1)
    // Die of it too, so our parent sees what happened; the shell's 128 + N should it be one Node ignores.
    process.exitCode = 128 + (constants.signals[signal] ?? 0)
    process.kill(process.pid, signal)
  })
}
