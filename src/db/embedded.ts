/**
 * The embedded database: PGlite in `<dataDir>/pgdata`, which only one process may open.
 *
 * `<dataDir>/herald.lock` says who has it: {pid, port}. The process that holds it either uses PGlite
 * itself (a CLI command with nothing else running) or, for `herald start`, serves it on a loopback
 * port with pglite-socket so that `herald` commands in other terminals connect to it instead of
 * opening the folder. A lock left by a dead process is taken over.
 */
import { closeSync, linkSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'
import { PgliteDb } from './pglite.ts'
import { PostgresDb } from './postgres.ts'
import type { Db } from './types.ts'

interface LockInfo {
  pid: number
  port?: number
}

export class DataFolderBusy extends Error {
  constructor(dir: string, pid: number) {
    super(`the data folder ${dir} is in use by process ${pid}; stop it, or run 'herald start' so commands can share it`)
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

/** Locks this process holds: a lock naming this pid but not in here was left by an earlier process. */
const heldHere = new Set<string>()

/** Writes the lock's content in one step: a reader never sees it empty or half written. */
function writeLock(path: string, info: LockInfo) {
  const tmp = `${path}.${process.pid}.tmp`
  writeFileSync(tmp, JSON.stringify(info))
  renameSync(tmp, path)
}

/**
 * Takes the lock, or returns who has it. Creation with O_EXCL decides between processes racing for
 * a free lock. A lock naming a dead process (or this very pid: a container's PID 1 restarted) is
 * stale: it is renamed aside and checked to be the one judged dead before the lock is taken, so a
 * process never deletes a lock that another has just taken over.
 */
function tryLock(path: string): LockInfo | 'ours' {
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      const fd = openSync(path, 'wx')
      closeSync(fd)
      writeLock(path, { pid: process.pid })
      heldHere.add(path)
      return 'ours'
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    let holder = readLock(path)
    if (!holder) {
      // Created a moment ago and not yet filled in by its owner: look again shortly.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100)
      holder = readLock(path)
    }
    const live = holder && (holder.pid === process.pid ? heldHere.has(path) : alive(holder.pid))
    if (holder && live) return holder
    const aside = `${path}.stale-${process.pid}`
    try {
      renameSync(path, aside)
    } catch {
      continue // someone else moved it first
    }
    const moved = readLock(aside)
    if (moved && holder && moved.pid !== holder.pid) {
      // Not the lock we judged stale: another process took it over meanwhile. Put it back.
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
  const release = async () => {
    heldHere.delete(lockPath)
    if (readLock(lockPath)?.pid === process.pid) rmSync(lockPath, { force: true })
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
  writeLock(lockPath, { pid: process.pid, port })
  const client = serverDb(port)
  const close = client.close.bind(client)
  client.close = async () => {
    await close()
    await server.stop()
    await db.close()
  }
  return client
}
