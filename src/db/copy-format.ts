/**
 * Serialises rows for COPY ... FROM in PostgreSQL's text format (tab-separated, \N for null),
 * and for the JSON fallback used where COPY is unavailable.
 */
import { HexBytes } from './types.ts'

const SPECIAL = /[\\\t\n\r]/

function escapeCopy(text: string): string {
  if (!SPECIAL.test(text)) return text // the common case: nothing to escape, no new string
  // Backslash, and the three characters that would end a field or a row.
  return text.replace(/[\\\t\n\r]/g, (c) => (c === '\\' ? '\\\\' : c === '\t' ? '\\t' : c === '\n' ? '\\n' : '\\r'))
}

const QUOTE_OR_BACKSLASH = /["\\]/

function arrayLiteral(items: unknown[]): string {
  let out = '{'
  for (let i = 0; i < items.length; i++) {
    const item = items[i]
    if (i > 0) out += ','
    if (item === null || item === undefined) out += 'NULL'
    else {
      const text = String(item)
      out += QUOTE_OR_BACKSLASH.test(text) ? `"${text.replace(/["\\]/g, (c) => `\\${c}`)}"` : `"${text}"`
    }
  }
  return out + '}'
}

export function copyValue(value: unknown): string {
  if (value === null || value === undefined) return '\\N'
  if (typeof value === 'string') return escapeCopy(value)
  if (typeof value === 'number' || typeof value === 'bigint') return String(value)
  if (typeof value === 'boolean') return value ? 't' : 'f'
  if (value instanceof Date) return value.toISOString()
  if (value instanceof Uint8Array) return `\\\\x${Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('hex')}`
  if (value instanceof HexBytes) return `\\\\x${value.hex}`
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
        obj[col] = v instanceof Uint8Array ? `\\x${Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex')}` : v instanceof HexBytes ? `\\x${v.hex}` : v
      })
      return obj
    }),
  )
}
