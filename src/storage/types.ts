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
  /** The object's bytes as a stream. */
  open(uri: string): Promise<Readable>
}
