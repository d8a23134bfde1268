/** An S3 bucket and prefix as an object store (AWS SDK v3; S3_ENDPOINT for S3-compatible servers, path style). */
import { DeleteObjectCommand, GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import type { Readable } from 'node:stream'
import { ObjectChanged, type ObjectStore, type StoredObject } from './types.ts'

export function parseS3Uri(uri: string): { bucket: string; key: string } {
  const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(uri)
  if (!m) throw new Error(`"${uri}" is not an s3://bucket/key location`)
  return { bucket: m[1], key: m[2] }
}

export function s3Client(opts: { endpoint?: string; region: string }): S3Client {
  return new S3Client({
    region: opts.region,
    endpoint: opts.endpoint,
    forcePathStyle: Boolean(opts.endpoint),
    // Only checksum when the API requires it: S3-compatible servers differ in the newer optional ones.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  })
}

export class S3Store implements ObjectStore {
  private readonly bucket: string
  private readonly prefix: string

  constructor(
    location: string,
    private readonly client: S3Client,
  ) {
    const { bucket, key } = parseS3Uri(location)
    this.bucket = bucket
    this.prefix = key
  }

  async *list(): AsyncIterable<StoredObject> {
    let token: string | undefined
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix || undefined, ContinuationToken: token }),
      )
      for (const o of page.Contents ?? []) {
        if (!o.Key || o.Key.endsWith('/')) continue
        yield { uri: `s3://${this.bucket}/${o.Key}`, size: o.Size ?? 0, modifiedAt: o.LastModified ?? new Date(0) }
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined
    } while (token)
  }

  async open(uri: string, expected?: string) {
    const { bucket, key } = parseS3Uri(uri)
    try {
      const res = await this.client.send(new GetObjectCommand({ Bucket: bucket, Key: key, IfMatch: expected }))
      // S3 answers 412 to IfMatch itself; some S3-compatible servers ignore it, so compare as well.
      if (expected !== undefined && res.ETag !== expected) {
        ;(res.Body as Readable).destroy()
        throw new ObjectChanged(uri)
      }
      return { body: res.Body as Readable, version: res.ETag ?? '' }
    } catch (err) {
      if ((err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 412) throw new ObjectChanged(uri)
      throw err
    }
  }

  async put(name: string, body: Buffer | Readable, size?: number): Promise<string> {
    const key = this.prefix ? `${this.prefix.replace(/\/?$/, '/')}${name}` : name
    // A stream goes up as it is made, with its length given (S3 refuses a stream of unknown length).
    if (!Buffer.isBuffer(body) && size === undefined) throw new Error('an S3 upload from a stream needs its size')
    await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentLength: Buffer.isBuffer(body) ? undefined : size }))
    return `s3://${this.bucket}/${key}`
  }

  async remove(uri: string): Promise<void> {
    const { bucket, key } = parseS3Uri(uri)
    await this.client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }))
  }
}
