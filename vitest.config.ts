import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // The `herald` processes tests start (bin/herald.js) run src/ through tsx, not a dist/ that may be stale.
    env: { HERALD_FROM_SOURCE: '1' },
    // One process per test file: each file gets its own database (a PGlite instance or a fresh
    // PostgreSQL database) and files run two at a time on this two-core machine.
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
})
