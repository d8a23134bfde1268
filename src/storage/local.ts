/** A folder (searched recursively) or a single file as an object store. */
import { createWriteStream } from 'node:fs'
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { join, resolve, basename } from 'node:path'
import { ObjectChanged, type ObjectStore, type StoredObject } from './types.ts'

// Files still being written are named like this by most copy tools, or should be by the sender.
const IN_PROGRESS = /^\.|\.(tmp|part|partial|crdownload|filepart)$/i

export class LocalStore implements ObjectStore {
  constructor(
    private readonly root: string,
    /** Files modified more recently than this are left for the next poll: they may still be growing. */
    private readonly settleMs = 0,
  ) {}

  async *list(): AsyncIterable<StoredObject> {
    const root = resolve(this.root)
    const info = await stat(root)
    if (info.isFile()) {
      yield { uri: root, size: info.size, modifiedAt: info.mtime }
      return
    }
    yield* this.walk(root)
  }

  private async *walk(dir: string): AsyncIterable<StoredObject> {
    const entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))
    for (const entry of entries) {
      if (IN_PROGRESS.test(entry.name)) continue
      const path = join(dir, entry.name)
      if (entry.isDirectory()) yield* this.walk(path)
      else if (entry.isFile()) {
        const info = await stat(path).catch(() => undefined) // removed since readdir
        if (!info || Date.now() - info.mtimeMs < this.settleMs) continue
        yield { uri: path, size: info.size, modifiedAt: info.mtime }
      }
    }
  }

  async open(uri: string, expected?: string) {
    const handle = await open(uri, 'r')
    const info = await handle.stat()
    const version = `${info.size}:${info.mtimeMs}`
    if (expected !== undefined && version !== expected) {
      await handle.close()
      throw new ObjectChanged(uri)
    }
    // Only the bytes there when it was opened: a file still growing is read as it was, each time.
    if (info.size === 0) {
      await handle.close()
      return { body: Readable.from([]), version }
    }
    return { body: handle.createReadStream({ highWaterMark: 1 << 20, start: 0, end: info.size - 1 }), version }
  }

  async put(name: string, body: Buffer | Readable): Promise<string> {
    const path = join(resolve(this.root), name)
    // Owner only (folders made here 0700, the file 0600): job files are personal data, even sealed.
    await mkdir(resolve(this.root), { recursive: true, mode: 0o700 })
    // Written under a name list() skips, then renamed: a reader never sees half a file. A .part left
    // by a crash goes first, so the file is created anew, with this mode ('wx').
    const part = `${path}.part`
    await rm(part, { force: true })
    try {
      await pipeline(Buffer.isBuffer(body) ? Readable.from([body]) : body, createWriteStream(part, { flags: 'wx', mode: 0o600 }))
    } catch (err) {
      await rm(part, { force: true })
      throw err
    }
    await rename(part, path)
    return path
  }

  async remove(uri: string): Promise<void> {
    await rm(uri, { force: true })
  }
}

export function displayName(uri: string): string {
  return uri.startsWith('s3://') ? uri : basename(uri)
}
