/**
 * The console (app.ts explains it): the page groups, each a file of pages/, and how `herald start`
 * mounts them. The first administrator is made with `herald user create --admin` (cli/users.ts).
 */
import type { Config } from '../config.ts'
import type { Db } from '../db/types.ts'
import type { Routes } from '../http/server.ts'
import type { Logger } from '../log.ts'
import { messagingKeys } from '../messaging/index.ts'
import { secretKey } from '../privacy/keys.ts'
import { consoleRoutes, type Pages } from './app.ts'
import { activityPages } from './pages/activity.ts'
import { authPages } from './pages/auth.ts'
import { callbackPages } from './pages/callbacks.ts'
import { optOutPages } from './pages/optouts.ts'
import { pipelinePages } from './pages/pipeline.ts'
import { jobPages } from './pages/jobs.ts'
import { keyPages } from './pages/keys.ts'
import { sendPages } from './pages/send.ts'
import { servicePages } from './pages/services.ts'
import { teamPages } from './pages/team.ts'
import { templatePages } from './pages/templates.ts'

/** Every page group, in the order their routes are registered. */
export const PAGES: Pages[] = [authPages, pipelinePages, servicePages, templatePages, sendPages, keyPages, teamPages, jobPages, activityPages, callbackPages, optOutPages]

export function consoleFor(config: Config, db: Db, log: Logger): Routes {
  return consoleRoutes({ db, log, secret: secretKey(config), sealer: messagingKeys(config).sealer, config }, PAGES)
}
