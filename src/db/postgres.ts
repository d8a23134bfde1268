/** Db over a PostgreSQL server (node-postgres pool); bulk loads stream COPY FROM STDIN. */
import pg from 'pg'
import { from as copyFrom } from 'pg-copy-streams'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { copyText, jsonRows } from './copy-format.ts'
import type { Db, Queryable, Row } from './types.ts'

// bigint (ids, counts) as JS numbers: Herald's ids and counts stay far below 2^53.
pg.types.setTypeParser(20, (v) => Number(v))

/**
 * Two statements that lock overlapping rows in different orders (a finish and a hold over the same
 * texts after a lease ran out; an operator's UPDATE across a busy table) deadlock, and PostgreSQL
 * aborts one of them. A statement run on its own (autocommit) that was aborted so had no effect at
 * all, so it is simply run again: a finish lost that way would leave texts already handed over with
 * no provider reference. Inside a transaction this cannot be done here (the transaction is aborted):
 * the caller retries the whole transaction, as link's batches do.
 */
const DEADLOCK = '40P01'
const DEADLOCK_TRIES = 4

async function againOnDeadlock<T>(run: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await run()
    } catch (err) {
      if ((err as { code?: string }).code !== DEADLOCK || attempt >= DEADLOCK_TRIES) throw err
      // The other party holds its locks until it ends: wait a moment, more each time, jittered.
      await new Promise((resolve) => setTimeout(resolve, attempt * (20 + Math.random() * 30)))
    }
  }
}

function queryable(client: pg.PoolClient | pg.Pool, useCopy: boolean): Queryable {
  return {
    async query<R extends Row>(sql: string, params: unknown[] = []) {
      return (await client.query(sql, params)).rows as R[]
    },
    async exec(sql: string) {
      await client.query(sql)
    },
    async copyInto(table, columns, rows) {
      if (rows.length === 0) return
      const cols = columns.join(', ')
      if (!useCopy) {
        // pglite-socket cannot carry the COPY sub-protocol: send the batch as one JSON parameter instead.
        await client.query(
          `INSERT INTO ${table} (${cols}) SELECT ${cols} FROM json_populate_recordset(NULL::${table}, $1::json)`,
          [jsonRows(columns, rows)],
        )
        return
      }
      if (!('release' in client)) throw new Error('copyInto needs a transaction or a checked-out client')
      await pipeline(Readable.from([copyText(rows)]), client.query(copyFrom(`COPY ${table} (${cols}) FROM STDIN`)))
    },
  }
}

export class PostgresDb implements Db {
  private readonly pool: pg.Pool
  private readonly base: Queryable
  private readonly useCopy: boolean

  constructor(
    readonly kind: 'postgres' | 'pglite-server',
    config: pg.PoolConfig,
  ) {
    this.pool = new pg.Pool({ max: 4, ...config })
    // A server that went away must not crash an idle process; the next query reports it.
    this.pool.on('error', () => {})
    this.useCopy = kind === 'postgres'
    this.base = queryable(this.pool, this.useCopy)
  }

  /**
   * pglite-socket runs each protocol message of each client as it comes, so outside a transaction
   * another client's statement can run between one client's Parse and its Bind, and the Bind then
   * fails (26000) or binds the wrong statement. Inside a transaction it runs only the owner's
   * messages: on the embedded server every statement is given one.
   */
  query<R extends Row = Row>(sql: string, params?: unknown[]) {
    if (this.kind === 'pglite-server' && params?.length) return this.transaction((tx) => tx.query<R>(sql, params))
    return againOnDeadlock(() => this.base.query<R>(sql, params))
  }
  exec(sql: string) {
    // Not retried: a script may commit part of its work before a later statement is aborted.
    return this.base.exec(sql)
  }
  async copyInto(table: string, columns: string[], rows: unknown[][]) {
    if (!this.useCopy) return this.transaction((tx) => tx.copyInto(table, columns, rows))
    const client = await this.pool.connect()
    try {
      await queryable(client, true).copyInto(table, columns, rows)
    } finally {
      client.release()
    }
  }

  async transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    const client = await this.pool.connect()
    try {
      await client.query('BEGIN')
      const result = await fn(queryable(client, this.useCopy))
      await client.query('COMMIT')
      return result
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {})
      throw err
    } finally {
      client.release()
    }
  }

  async close() {
    await this.pool.end()
  }
}
