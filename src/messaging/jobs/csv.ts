/**
 * A bulk job's CSV: a "phone number" column (any case, spaces or underscores) and a column for each
 * of the template's placeholders; other columns are ignored. Row numbers are a spreadsheet's: the
 * header is row 1, the first recipient row 2.
 */
import { parse } from 'csv-parse'
import { pipeline, type Readable } from 'node:stream'

const normal = (s: string) => s.toLowerCase().replace(/[\s_-]/g, '')

export interface JobRow { row: number; phone: string; personalisation: Record<string, string> }

export class CsvProblem extends Error {}

/** The rows of a job file, in order; the header checked against the placeholders first. */
export async function* jobRows(input: Readable | Buffer, placeholders: string[]): AsyncIterable<JobRow> {
  const parser = parse({ bom: true, relax_column_count: true, skip_empty_lines: true, trim: true })
  if (Buffer.isBuffer(input)) parser.end(input)
  // Not pipe(): the input's error (a sealed file that fails its check) must end the parse, not stall it.
  else pipeline(input, parser, () => {})
  let header: string[] | undefined
  let phoneAt = -1
  let row = 1
  for await (const record of parser as AsyncIterable<string[]>) {
    if (!header) {
      header = record.map(normal)
      phoneAt = header.indexOf('phonenumber')
      if (phoneAt < 0) throw new CsvProblem('Missing column: phone number')
      const missing = placeholders.filter((p) => !header!.includes(normal(p)))
      if (missing.length) throw new CsvProblem(`Missing column${missing.length > 1 ? 's' : ''}: ${missing.join(', ')}`)
      continue
    }
    row++
    const personalisation: Record<string, string> = {}
    for (const p of placeholders) {
      const v = record[header.indexOf(normal(p))]
      if (v !== undefined && v !== '') personalisation[p] = v
    }
    yield { row, phone: record[phoneAt] ?? '', personalisation }
  }
  if (!header) throw new CsvProblem('The file is empty')
}
