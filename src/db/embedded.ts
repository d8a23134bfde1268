/**
 * The embedded database: PGlite in `<dataDir>/pgdata`, which only one process may open.
 *
 * `<dataDir>/herald.lock` says who has it: {pid, port}. The process that holds it either uses PGlite
 * itself (a CLI command with nothing else running) or, for `herald start`, serves it on a loopback
 * port with pglite-socket so that `herald` commands in other terminals connect to it instead of
 * opening the folder. A lock left by a dead process is taken over.
 */
import { randomUUID } from 'node:crypto'
import { linkSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'
import { PgliteDb } from './pglite.ts'
import { PostgresDb } from './postgres.ts'
import type { Db } from './types.ts'

interface LockInfo {
  pid: number
  /** Tells this lock from any other that names the same pid (a restarted container's PID 1). */
  nonce: string
  port?: number
}

export class DataFolderBusy extends Error {
  constructor(dir: string, pid: number) {
    super(pid > 0
      ? `the data folder ${dir} is in use by process ${pid}; stop it, or run 'herald start' so commands can share it`
      : `the data folder ${dir} has a lock that cannot be read (${dir}/herald.lock); if no Herald is running, wait 10 seconds or remove it`)
    this.name = 'DataFolderBusy'
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

function readLock(path: string): LockInfo | undefined {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as LockInfo
  } catch {
    return undefined
  }
}

/** Locks this process holds, by path, with their nonce. */
const heldHere = new Map<string, string>()

// An unreadable lock (not JSON: a crash while it was written by an older Herald, or a foreign
// file) is only taken over once it has been left alone this long.
const UNREADABLE_STALE_MS = 10_000

/** Creates the lock with its content in one step (link fails if it exists): never seen empty. */
function createLock(path: string, info: LockInfo): boolean {
  const tmp = `${path}.${info.nonce}.tmp`
  writeFileSync(tmp, JSON.stringify(info))
  try {
    linkSync(tmp, path)
    return true
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false
    throw err
  } finally {
    rmSync(tmp, { force: true })
  }
}

/** Rewrites the lock's content (to add the port) in one step. */
function writeLock(path: string, info: LockInfo) {
  const tmp = `${path}.${info.nonce}.tmp`
  writeFileSync(tmp, JSON.stringify(info))
  renameSync(tmp, path)
}

function ageMs(path: string): number {
  try {
    return Date.now() - statSync(path).mtimeMs
  } catch {
    return Infinity
  }
}

/**
 * Takes the lock, or returns who has it. A lock naming a dead process, or this pid without being
 * held here, is stale: it is renamed aside and checked (by nonce) to be the very lock judged stale
 * before it is removed; anything else found there is put back.
 */
function tryLock(path: string): LockInfo | 'ours' {
  const mine: LockInfo = { pid: process.pid, nonce: randomUUID() }
  for (let attempt = 0; attempt < 5; attempt++) {
    if (createLock(path, mine)) {
      heldHere.set(path, mine.nonce)
      return 'ours'
    }
    const holder = readLock(path)
    if (!holder) {
      if (ageMs(path) < UNREADABLE_STALE_MS) return { pid: -1, nonce: '' }
    } else {
      const live = holder.pid === process.pid ? heldHere.get(path) === holder.nonce : alive(holder.pid)
      if (live) return holder
    }
    const aside = `${path}.stale-${mine.nonce}`
    try {
      renameSync(path, aside)
    } catch {
      continue // someone else moved it first
    }
    if (readLock(aside)?.nonce !== holder?.nonce) {
      // Not the lock judged stale: another process took over meanwhile. Put it back.
      try {
        linkSync(aside, path)
      } catch {
        /* a third process holds the path now; it wins */
      }
    }
    rmSync(aside, { force: true })
  }
  throw new Error(`could not take the lock ${path}`)
}

function serverDb(port: number): PostgresDb {
  return new PostgresDb('pglite-server', { host: '127.0.0.1', port, user: 'postgres', database: 'postgres', max: 2 })
}

/**
 * Opens the embedded database. With `serve`, also serves it to other processes and returns a
 * connection through that server (so this process's own work queues with theirs, transaction by
 * transaction), plus a stop function.
 */
export async function openEmbedded(dataDir: string, opts: { serve?: boolean } = {}): Promise<Db> {
  mkdirSync(dataDir, { recursive: true })
  const lockPath = join(dataDir, 'herald.lock')
  const held = tryLock(lockPath)
  if (held !== 'ours') {
    if (held.port && !opts.serve) return serverDb(held.port)
    throw new DataFolderBusy(dataDir, held.pid)
  }
  const nonce = heldHere.get(lockPath)!
  const release = async () => {
    heldHere.delete(lockPath)
    if (readLock(lockPath)?.nonce === nonce) rmSync(lockPath, { force: true })
  }
  let db: PgliteDb
  try {
    db = await PgliteDb.open(join(dataDir, 'pgdata'), release)
  } catch (err) {
    await release()
    throw err
  }
  if (!opts.serve) return db

  const server = new PGLiteSocketServer({ db: db.pglite, host: '127.0.0.1', port: 0, maxConnections: 32 })
  await server.start()
  const port = (server as unknown as { port: number }).port
  writeLock(lockPath, { pid: process.pid, nonce, port })
  const client = serverDb(port)
  const close = client.close.bind(client)
  client.close = async () => {
    await close()
    await server.stop()
    await db.close()
  }
  return client
}
