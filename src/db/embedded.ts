/**
 * The embedded database: PGlite in `<dataDir>/pgdata`, which only one process may open.
 *
 * `<dataDir>/herald.lock` says who has it: {pid, port}. The process that holds it either uses PGlite
 * itself (a CLI command with nothing else running) or, for `herald start`, serves it on a loopback
 * port with pglite-socket so that `herald` commands in other terminals connect to it instead of
 * opening the folder. A lock left by a dead process is taken over.
 */
import { mkdirSync, openSync, readFileSync, rmSync, writeFileSync, closeSync } from 'node:fs'
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

/** Takes the lock, or returns who has it. O_EXCL makes two processes racing for it safe. */
function tryLock(path: string): LockInfo | 'ours' {
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(path, 'wx')
      writeFileSync(fd, JSON.stringify({ pid: process.pid }))
      closeSync(fd)
      return 'ours'
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      const holder = readLock(path)
      if (holder && alive(holder.pid)) return holder
      if (!holder) {
        // Written a moment ago and not yet filled in by its owner: look again shortly.
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50)
        const again = readLock(path)
        if (again && alive(again.pid)) return again
      }
      rmSync(path, { force: true }) // stale: its process is gone
    }
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
  writeFileSync(lockPath, JSON.stringify({ pid: process.pid, port }))
  const client = serverDb(port)
  const close = client.close.bind(client)
  client.close = async () => {
    await close()
    await server.stop()
    await db.close()
  }
  return client
}
