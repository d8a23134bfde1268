/**
 * One interface over PostgreSQL (node-postgres) and PGlite, so every engine runs unchanged on both.
 * SQL is plain PostgreSQL with $1 parameters; bulk loads go through copyInto.
 */
export type Row = Record<string, any>

export interface Queryable {
  /** One parameterised statement; returns its rows. */
  query<R extends Row = Row>(sql: string, params?: unknown[]): Promise<R[]>
  /** A script of several statements without parameters (migrations). */
  exec(sql: string): Promise<void>
  /** Bulk load: COPY where the connection supports it. Values: string, number, boolean, Date, Buffer, string[], object (jsonb), null. */
  copyInto(table: string, columns: string[], rows: unknown[][]): Promise<void>
}

export interface Db extends Queryable {
  /** postgres: a server; pglite: the data folder opened in this process; pglite-server: a running Herald serves it. */
  readonly kind: 'postgres' | 'pglite' | 'pglite-server'
  /** Runs fn in one transaction: committed when it resolves, rolled back when it throws. */
  transaction<T>(fn: (tx: Queryable) => Promise<T>): Promise<T>
  close(): Promise<void>
}

/** A bytea value already in hex, so bulk loads need not turn it into a Buffer and back. */
export class HexBytes {
  constructor(readonly hex: string) {}
}
