/**
 * Sightings (migration 027): a batch appends the keys it sighted to ingest_sightings instead of
 * updating each one's last sighting in lab_row_keys; the fold applies them after the file's last
 * commit, in a transaction of its own, off the path that makes a file's rows available.
 *
 * Until the fold, "already sighted by this file" (a later repeat is a duplicate, not seen again) is
 * not in lab_row_keys.last_file_id: the file's ChecksumSet holds it, rebuilt from ingest_sightings
 * when a file is resumed. Which file sighted a key last, and when, is the same answer as before:
 * the fold keeps the later of the stored and the pending sighting (lab_row_last_seen shows it before).
 */
import type { Db, Queryable } from '../db/types.ts'

const WIDTH = 32 // bytes of a SHA-256

/**
 * A set of SHA-256 checksums, exact, at ~44 bytes each (packed bytes and an open-addressing table)
 * where a Set of hex strings costs ~120: a 1,000,000-row export sights up to a million keys.
 */
export class ChecksumSet {
  size = 0
  private data = Buffer.alloc(WIDTH * 1024)
  private slots = new Int32Array(2048) // 0: empty; otherwise the entry's index + 1
  private readonly scratch = Buffer.alloc(WIDTH)

  hasHex(hex: string): boolean {
    this.scratch.write(hex, 'hex')
    return this.slots[this.find(this.scratch)] !== 0
  }

  has(bytes: Buffer): boolean {
    return this.slots[this.find(bytes)] !== 0
  }

  addHex(hex: string) {
    this.scratch.write(hex, 'hex')
    this.add(this.scratch)
  }

  add(bytes: Buffer) {
    const slot = this.find(bytes)
    if (this.slots[slot] !== 0) return
    if (this.data.length < (this.size + 1) * WIDTH) {
      const grown = Buffer.alloc(this.data.length * 2)
      this.data.copy(grown)
      this.data = grown
    }
    bytes.copy(this.data, this.size * WIDTH, 0, WIDTH)
    this.slots[slot] = ++this.size
    if (this.size * 2 > this.slots.length) this.rehash()
  }

  /** The slot holding `bytes`, or the empty slot where it would go. SHA-256 bytes are their own hash. */
  private find(bytes: Buffer, slots = this.slots): number {
    const mask = slots.length - 1
    const second = bytes.readUInt32LE(4) // most probes meet another key: told apart without a compare
    for (let slot = bytes.readUInt32LE(0) & mask; ; slot = (slot + 1) & mask) {
      const entry = slots[slot]
      if (entry === 0) return slot
      const at = (entry - 1) * WIDTH
      if (this.data.readUInt32LE(at + 4) === second && this.data.compare(bytes, 0, WIDTH, at, at + WIDTH) === 0) return slot
    }
  }

  private rehash() {
    const slots = new Int32Array(this.slots.length * 2)
    for (let i = 0; i < this.size; i++) {
      const bytes = this.data.subarray(i * WIDTH, (i + 1) * WIDTH)
      slots[this.find(bytes, slots)] = i + 1
    }
    this.slots = slots
  }
}

/**
 * The keys a file sighted in the batches already committed (a resumed file). Read in ranges of
 * pages, as one hex string each, so a million sightings never become a million JavaScript rows.
 */
export async function loadSighted(db: Queryable, fileId: number): Promise<ChecksumSet> {
  const set = new ChecksumSet()
  const [{ pages }] = await db.query<{ pages: number }>(
    `SELECT (pg_relation_size('ingest_sightings') / current_setting('block_size')::int)::int AS pages`)
  const STEP = 1000
  for (let from = 0; from < pages; from += STEP) {
    const [{ hex }] = await db.query<{ hex: string | null }>(
      `SELECT string_agg(encode(checksum, 'hex'), '') AS hex FROM ingest_sightings
        WHERE ctid >= format('(%s,0)', $2::int)::tid AND ctid < format('(%s,0)', $3::int)::tid AND file_id = $1`,
      [fileId, from, from + STEP])
    for (let i = 0; hex && i < hex.length; i += 2 * WIDTH) set.addHex(hex.slice(i, i + 2 * WIDTH))
  }
  return set
}

/**
 * Applies the sightings of every file no longer being ingested to lab_row_keys, one file per
 * transaction, and deletes them in it: safe to run at any time, by any number of processes, and
 * again after a crash. A pending sighting replaces the stored one only when it is later, so the
 * result does not depend on the order of the folds (a file retried after later files went ahead).
 */
export async function foldSightings(db: Db): Promise<{ files: number; keys: number }> {
  const files = await db.query<{ file_id: number }>(
    `SELECT DISTINCT s.file_id FROM ingest_sightings s JOIN files f ON f.id = s.file_id
      WHERE f.status <> 'ingesting' ORDER BY s.file_id`)
  let keys = 0
  for (const { file_id: fileId } of files) {
    // A file's sightings name each key once (a repeat inside a file is a duplicate, not a sighting).
    const [r] = await db.query<{ n: number }>(
      `WITH folded AS (DELETE FROM ingest_sightings WHERE file_id = $1 RETURNING checksum, seen_at),
            applied AS (
              UPDATE lab_row_keys k SET last_file_id = $1, last_seen_at = f.seen_at FROM folded f
               WHERE k.checksum = f.checksum AND f.seen_at > k.last_seen_at RETURNING 1)
       SELECT count(*)::int AS n FROM applied`, [fileId])
    keys += r.n
  }
  return { files: files.length, keys }
}
