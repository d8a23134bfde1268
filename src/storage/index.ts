/** Object stores: where export files come from. `storeFor` picks one from a location string. */
import type { Config } from '../config.ts'
import { LocalStore } from './local.ts'
import { S3Store, s3Client } from './s3.ts'
import type { ObjectStore } from './types.ts'

export { ObjectChanged, type ObjectStore, type StoredObject } from './types.ts'

export function storeFor(location: string, config: Pick<Config, 's3'>, opts: { settleMs?: number } = {}): ObjectStore {
  if (location.startsWith('s3://')) return new S3Store(location, s3Client(config.s3))
  return new LocalStore(location, opts.settleMs)
}
