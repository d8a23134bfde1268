/** `herald start` (the embedded default, served to other terminals) and `herald run` (engines in the foreground). */
import { mkdirSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describeDb } from '../db/connect.ts'
import type { AnyEngine } from '../engine/engine.ts'
import { Counters } from '../engine/engine.ts'
import { serveMetrics } from '../engine/metrics.ts'
import { runEngines } from '../engine/runner.ts'
import { ingestEngine } from '../ingest/index.ts'
import { linkEngine } from '../link/index.ts'
import type { Config } from '../config.ts'
import type { Logger } from '../log.ts'
import { stopSignal, withDb } from './context.ts'
import { loadCountyFile } from './link.ts'

const SANDBOX_COUNTIES = fileURLToPath(new URL('../sandbox/commcare/county_list_ny.json', import.meta.url))

/** Every engine Herald has, in pipeline order. Later engines join this list. */
const ENGINES: Record<string, (config: Config, log: Logger) => AnyEngine> = {
  ingest: (config, log) => ingestEngine(config, log),
  link: (config, log) => linkEngine(config, log),
}

export function engineNames(list: string | undefined): string[] {
  const names = list ? list.split(',').map((s) => s.trim()).filter(Boolean) : Object.keys(ENGINES)
  const unknown = names.filter((n) => !ENGINES[n])
  if (unknown.length > 0) throw new Error(`unknown engine ${unknown.join(', ')}; engines: ${Object.keys(ENGINES).join(', ')}`)
  return names
}

export async function runCommand(opts: { engines?: string; untilIdle?: boolean }, serve = false) {
  const names = engineNames(opts.engines)
  await withDb(async ({ config, db, log }) => {
    if (!config.inbox.startsWith('s3://')) mkdirSync(config.inbox, { recursive: true })
    const signal = stopSignal(log)
    const counters = new Counters()
    const metrics = config.metricsPort ? await serveMetrics(counters, config.metricsPort) : undefined
    if (serve) {
      console.log(`Herald is running: engines ${names.join(', ')}.`)
      const where = db.kind === 'pglite-server' ? `PGlite in ${config.dataDir}/pgdata, shared with herald commands in other terminals` : describeDb(db, config)
      console.log(`  database  ${where}`)
      console.log(`  inbox     ${config.inbox}  (drop ECLRS export files here)`)
      console.log(`  commands  in another terminal: npx herald files | npx herald link | npx herald person ID | npx herald --help`)
      if (metrics) console.log(`  metrics   http://127.0.0.1:${config.metricsPort}/metrics`)
      console.log('  stop      Ctrl-C')
    }
    if (serve && db.kind === 'pglite-server' && (await db.query('SELECT 1 FROM counties LIMIT 1')).length === 0) {
      // The embedded default has no CommCare to ask yet: the sandbox's county list stands in.
      const r = await loadCountyFile(db, SANDBOX_COUNTIES)
      log.info({ counties: r.total }, 'loaded the sandbox county list (New York); herald counties load FILE replaces it')
    }
    try {
      await runEngines(db, names.map((n) => ENGINES[n](config, log)), {
        untilIdle: opts.untilIdle, pollIntervalMs: config.pollIntervalMs, signal, counters, log,
      })
    } finally {
      metrics?.close()
    }
    log.info({ counts: counters.snapshot() }, 'engines stopped')
  }, { serve })
}
