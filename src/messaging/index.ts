/**
 * Messaging: a GOV.UK Notify-compatible platform. Services, keys and templates (services.ts, keys.ts,
 * templates.ts); the public API v2 (api/); sending through SMS providers with failover (send/, with
 * each provider's failure codes as reasons a person can act on: send/failure-reasons.ts) and emails
 * through SMTP or SES (email/); delivery receipts (receipts/); texts residents send back and their
 * STOP/START opt-outs (inbound/); callbacks to a service's own URL (callbacks/); retention and the
 * nightly run (retention/), billing and status facts (facts/), reports (reports/). Phone numbers,
 * email addresses, message content and personalisation are kept sealed (src/privacy/).
 */
import type { FastifyInstance } from 'fastify'
import type { Config } from '../config.ts'
import type { Db } from '../db/types.ts'
import type { Logger } from '../log.ts'
import { secretKey } from '../privacy/keys.ts'
import { Sealer } from '../privacy/seal.ts'
import { authenticateFirst, Authenticator } from './api/auth.ts'
import { Directory } from './api/directory.ts'
import { notifyErrors } from './api/errors.ts'
import { jobRoutes } from './api/jobs.ts'
import { reportRoutes } from './api/reports.ts'
import { messagingApi } from './api/routes.ts'
import { storeFor } from '../storage/index.ts'
import { reportsDb } from '../db/connect.ts'
import { KeySecrets } from './keys.ts'

/** The keys of messaging, from HERALD_SECRET_KEY (or the data folder's key). */
export function messagingKeys(config: Config) {
  const secret = secretKey(config)
  return { sealer: new Sealer(secret), secrets: new KeySecrets(secret) }
}

/** The API v2 routes, in a scope of their own with Notify's error format. */
export function messagingRoutes(config: Config, db: Db, log: Logger) {
  const { sealer, secrets } = messagingKeys(config)
  const dir = new Directory(db, config.messaging.cacheMs)
  const auth = new Authenticator(dir, secrets)
  const region = config.exposure.defaultRegion
  const api = messagingApi({ db, dir, sealer, auth, region, emailFrom: config.email.from })
  const jobs = jobRoutes({ db, dir, sealer, auth, region, store: storeFor(config.messaging.jobStore, config) })
  // Reports are the long reads: on a read replica when one is set, so they never slow the primary.
  const replica = reportsDb(config, db)
  const reports = reportRoutes({ db, reportsDb: replica.db, sealer, auth })
  return (app: FastifyInstance) => {
    app.addHook('onClose', () => replica.close())
    void app.register(async (scope) => {
      notifyErrors(scope, log)
      authenticateFirst(scope, auth)
      api(scope)
      jobs(scope)
      reports(scope)
    })
  }
}
