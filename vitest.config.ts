import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // One process per test file: each file gets its own database (a PGlite instance or a fresh
    // PostgreSQL database) and files run two at a time on this two-core machine.
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
})
