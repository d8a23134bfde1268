/** Object stores hold export files: a local folder or an S3 bucket (or any S3-compatible server). */
import type { Readable } from 'node:stream'

export interface StoredObject {
  /** Absolute path, or s3://bucket/key. */
  uri: string
  size: number
  modifiedAt: Date
}

export interface ObjectStore {
  /** Every object at or under the location, in name order. */
  list(): AsyncIterable<StoredObject>
  /**
   * The object's bytes as a stream, and its version (S3: the ETag; a file: size and mtime). Given
   * `version`, opening fails with ObjectChanged unless the object is still that version, so two
   * reads of one object (its hash, then its rows) are known to see the same bytes.
   */
  open(uri: string, version?: string): Promise<{ body: Readable; version: string }>
  /**
   * Stores bytes under `name` at the location (a local file readable by its owner only); returns the
   * object's uri. A stream is written as it comes, never held whole; S3 needs its `size` first.
   */
  put(name: string, body: Buffer | Readable, size?: number): Promise<string>
  /** Deletes an object; one already gone is not an error. */
  remove(uri: string): Promise<void>
}

export class ObjectChanged extends Error {
  constructor(uri: string) {
    super(`${uri} changed while it was being read; it will be read again as a new file`)
    this.name = 'ObjectChanged'
  }
}
