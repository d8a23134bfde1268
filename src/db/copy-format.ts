/**
 * Serialises rows for COPY ... FROM in PostgreSQL's text format (tab-separated, \N for null),
 * and for the JSON fallback used where COPY is unavailable.
 */

function escapeCopy(text: string): string {
  // Backslash first, then the three characters that would end a field or a row.
  return text.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r'))
}

function arrayLiteral(items: unknown[]): string {
  const parts = items.map((item) =>
    item === null || item === undefined ? 'NULL' : `"${String(item).replace(/["\\]/g, (c) => `\\${c}`)}"`,
  )
  return `{${parts.join(',')}}`
}

export function copyValue(value: unknown): string {
  if (value === null || value === undefined) return '\\N'
  if (typeof value === 'string') return escapeCopy(value)
  if (typeof value === 'number' || typeof value === 'bigint') return String(value)
  if (typeof value === 'boolean') return value ? 't' : 'f'
  if (value instanceof Date) return value.toISOString()
  if (value instanceof Uint8Array) return `\\\\x${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex')}`
  if (Array.isArray(value)) return escapeCopy(arrayLiteral(value))
  return escapeCopy(JSON.stringify(value))
}

export function copyText(rows: unknown[][]): string {
  let out = ''
  for (const row of rows) {
    for (let i = 0; i < row.length; i++) out += (i === 0 ? '' : '\t') + copyValue(row[i])
    out += '\n'
  }
  return out
}

/** The same rows as JSON objects keyed by column, for INSERT ... SELECT FROM json_populate_recordset. */
export function jsonRows(columns: string[], rows: unknown[][]): string {
  return JSON.stringify(
    rows.map((row) => {
      const obj: Record<string, unknown> = {}
      columns.forEach((col, i) => {
        const v = row[i]
        obj[col] = v instanceof Uint8Array ? `\\x${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex')}` : v
      })
      return obj
    }),
  )
}
