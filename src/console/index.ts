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
import { authPages } from './pages/auth.ts'

/** Every page group, in the order their routes are registered. */
export const PAGES: Pages[] = [authPages]

export function consoleFor(config: Config, db: Db, log: Logger): Routes {
  return consoleRoutes({ db, log, secret: secretKey(config), sealer: messagingKeys(config).sealer }, PAGES)
}
