/** Db over PGlite in this process; bulk loads use COPY ... FROM '/dev/blob'. */
import { PGlite, type Transaction } from '@electric-sql/pglite'
import { copyText } from './copy-format.ts'
import type { Db, Queryable, Row } from './types.ts'

// Same conventions as the node-postgres side: bigint as number.
export const PGLITE_PARSERS = { 20: (v: string) => Number(v) }

function queryable(conn: PGlite | Transaction): Queryable {
  return {
    async query<R extends Row>(sql: string, params: unknown[] = []) {
      return (await conn.query<R>(sql, params)).rows
    },
    async exec(sql: string) {
      await conn.exec(sql)
    },
    async copyInto(table, columns, rows) {
      if (rows.length === 0) return
      await conn.query(`COPY ${table} (${columns.join(', ')}) FROM '/dev/blob'`, [], {
        blob: new Blob([copyText(rows)]),
      })
    },
  }
}

export class PgliteDb implements Db {
  readonly kind = 'pglite' as const
  private readonly base: Queryable

  constructor(
    readonly pglite: PGlite,
    private readonly onClose: () => Promise<void> = async () => {},
  ) {
    this.base = queryable(pglite)
  }

  static async open(dataDir: string | undefined, onClose?: () => Promise<void>): Promise<PgliteDb> {
    const pglite = await PGlite.create(dataDir ?? 'memory://', { parsers: PGLITE_PARSERS })
    return new PgliteDb(pglite, onClose)
  }

  query<R extends Row = Row>(sql: string, params?: unknown[]) {
    return this.base.query<R>(sql, params)
  }
  exec(sql: string) {
    return this.base.exec(sql)
  }
  copyInto(table: string, columns: string[], rows: unknown[][]) {
    return this.base.copyInto(table, columns, rows)
  }
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T> {
    return this.pglite.transaction((tx) => fn(queryable(tx)))
  }
  async close() {
    await this.pglite.close()
    await this.onClose()
  }
}
