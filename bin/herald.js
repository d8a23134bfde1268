#!/usr/bin/env node
// The `herald` command: the compiled CLI (dist/, made by `npm run build`, which `npm install` runs),
// started by the launcher with the heap cap for its role (HERALD_HEAP_MB; why a cap: src/launch.ts
// and docs/benchmarks.md). HERALD_FROM_SOURCE=1 (the tests set it) runs src/ through tsx in this
// process instead, with no cap: what the tests exercise is the source, and the process they signal
// is the one doing the work.
if (process.env.HERALD_FROM_SOURCE === '1') {
  const { register } = await import('tsx/esm/api')
  register()
  await import('../src/cli.ts')
} else {
  const { fileURLToPath } = await import('node:url')
  const launcher = await import('../dist/launch.js').catch((err) => {
    if (err?.code !== 'ERR_MODULE_NOT_FOUND') throw err
    console.error('herald: dist/ is missing or incomplete: run npm run build (or HERALD_FROM_SOURCE=1 to run src/ through tsx)')
    process.exit(1)
  })
  launcher.launch(fileURLToPath(new URL('../dist/cli.js', import.meta.url)), process.argv.slice(2))
}
