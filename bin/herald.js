#!/usr/bin/env -S node --max-old-space-size=256
// The `herald` command: TypeScript sources run through tsx, so there is no build step to forget.
// The heap cap keeps memory flat on long runs: ingest makes garbage fast, and without a cap V8
// lets it pile up to gigabytes before collecting it (see docs/benchmarks.md).
import { register } from 'tsx/esm/api'
register()
await import('../src/cli.ts')
