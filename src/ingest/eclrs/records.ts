/**
 * Splits an ECLRS export into records: `|`-separated fields; a field in double quotes may hold `|`,
 * line breaks and `""` (a literal quote). Streams: holds only the current chunk and the record in hand.
 *
 * Each record also comes re-serialised the way its checksum is defined (EXTERNAL_APIS.md §1: quote
 * a field only when it holds `|`, `"` or a line break, doubling inner quotes). A line without any
 * quote is already in that form, so the fast path hashes its bytes as read; only lines with quotes
 * (rare) are rebuilt. Bytes are hashed as received; text is decoded as UTF-8, or as Latin-1 for a
 * record that is not valid UTF-8, so nothing is lost to replacement characters.
 */
import { isUtf8 } from 'node:buffer'

export interface RawRecord {
  /** Line of the file where the record starts; the header is line 1. */
  line: number
  /** The record in checksum form: fields joined by `|`, quoted only where needed. */
  bytes: Buffer
  /** ends[i]: offset in `bytes` just past field i (its separator, or the end for the last field). */
  readonly ends: number[]
  readonly fieldCount: number
  /** The values, decoded on first use: most rows of an export are seen before and never need them. */
  readonly fields: string[]
  /** Set when the record's quoting is broken; fields then hold what could be read. */
  error?: string
}

/**
 * A line without quotes: its fields are the text between separators. Field positions and values are
 * worked out on first use; a row that turns out to be seen before needs neither.
 */
class PlainRecord implements RawRecord {
  private decoded?: string[]
  private positions?: number[]
  constructor(
    readonly line: number,
    readonly bytes: Buffer,
  ) {}
  get fields(): string[] {
    return (this.decoded ??= decode(this.bytes, isUtf8(this.bytes)).split('|'))
  }
  get fieldCount(): number {
    if (this.positions) return this.positions.length
    let n = 1
    for (let p = this.bytes.indexOf(PIPE); p !== -1; p = this.bytes.indexOf(PIPE, p + 1)) n++
    return n
  }
  get ends(): number[] {
    if (!this.positions) {
      const ends: number[] = []
      let p = this.bytes.indexOf(PIPE)
      while (p !== -1) {
        ends.push(p)
        p = this.bytes.indexOf(PIPE, p + 1)
      }
      ends.push(this.bytes.length)
      this.positions = ends
    }
    return this.positions
  }
}

const LF = 10
const CR = 13
const QUOTE = 34
const PIPE = 124
const BOM = Buffer.from([0xef, 0xbb, 0xbf])

function decode(bytes: Buffer, utf8: boolean): string {
  return utf8 ? bytes.toString('utf8') : bytes.toString('latin1')
}

function needsQuotes(field: Buffer): boolean {
  return field.indexOf(PIPE) !== -1 || field.indexOf(QUOTE) !== -1 || field.indexOf(LF) !== -1 || field.indexOf(CR) !== -1
}

/** Builds the checksum form of a record from its field values (the slow path). */
export function serialise(fields: Buffer[]): { bytes: Buffer; ends: number[] } {
  const parts: Buffer[] = []
  const ends: number[] = []
  let length = 0
  fields.forEach((field, i) => {
    if (i > 0) {
      parts.push(Buffer.from('|'))
      length += 1
    }
    const out = needsQuotes(field) ? Buffer.from(`"${field.toString('latin1').replaceAll('"', '""')}"`, 'latin1') : field
    parts.push(out)
    length += out.length
    ends.push(length)
  })
  return { bytes: Buffer.concat(parts, length), ends }
}

interface Parsed {
  record: RawRecord
  next: number
  lines: number
}

/**
 * Parses one record with quotes starting at `start`. Returns undefined when the buffer ends before
 * the record does and more input may come.
 */
/** A quoted field not closed within this many bytes of its record's start makes that line an error. */
const MAX_RECORD_BYTES = 1 << 20

/** The first physical line of a record whose quote never closes: an error, and reading resumes after it. */
function unclosed(buf: Buffer, start: number, line: number, reason: string): Parsed {
  const nl = buf.indexOf(LF, start)
  const end = nl === -1 ? buf.length : nl
  const bytes = buf.subarray(start, end > start && buf[end - 1] === CR ? end - 1 : end)
  return {
    record: { line, bytes, ends: [bytes.length], fieldCount: 1, fields: [decode(bytes, isUtf8(bytes))], error: reason },
    next: nl === -1 ? buf.length : nl + 1,
    lines: 1,
  }
}

/**
 * Parses one record with quotes starting at `start`. Returns undefined when the buffer ends before
 * the record does and more input may come. The 1 MiB limit is measured from the record's start,
 * so the outcome does not depend on how the input was cut into chunks (a resume re-reads it).
 */
function quotedRecord(buf: Buffer, start: number, line: number, eof: boolean): Parsed | undefined {
  const raw: Buffer[] = []
  const limit = start + MAX_RECORD_BYTES
  let i = start
  let error: string | undefined
  for (;;) {
    if (buf[i] === QUOTE) {
      const pieces: Buffer[] = []
      let seg = ++i
      for (;;) {
        const q = buf.indexOf(QUOTE, i)
        if (q === -1 || q >= limit) {
          if (!eof && buf.length < limit) return undefined
          return unclosed(buf, start, line, eof && q === -1
            ? `field ${raw.length + 1}: quoted field is not closed before the end of the file`
            : `field ${raw.length + 1}: quoted field is not closed within 1 MiB`)
        }
        if (q + 1 >= buf.length && !eof) return undefined // is it "" (a quote) or the end of the field?
        if (buf[q + 1] === QUOTE) {
          pieces.push(buf.subarray(seg, q + 1))
          i = seg = q + 2
          continue
        }
        pieces.push(buf.subarray(seg, q))
        i = q + 1
        break
      }
      raw.push(Buffer.concat(pieces))
      const c = buf[i]
      if (i < buf.length && c !== PIPE && c !== LF && !(c === CR && buf[i + 1] === LF)) {
        error ??= `field ${raw.length}: characters after the closing quote`
        // Keep what follows up to the next separator as part of the field, so nothing is dropped.
        let j = i
        while (j < buf.length && buf[j] !== PIPE && buf[j] !== LF) j++
        if (j === buf.length && !eof) return undefined
        raw[raw.length - 1] = Buffer.concat([raw[raw.length - 1], buf.subarray(i, buf[j - 1] === CR && buf[j] === LF ? j - 1 : j)])
        i = j
      }
    } else {
      let j = i
      while (j < buf.length && buf[j] !== PIPE && buf[j] !== LF) j++
      if (j === buf.length && !eof) return undefined
      raw.push(buf.subarray(i, buf[j] === LF && buf[j - 1] === CR && j > i ? j - 1 : j))
      i = j
    }
    if (i < buf.length && buf[i] === PIPE) {
      i++
      continue
    }
    if (i < buf.length && buf[i] === CR) i++
    break
  }
  const next = i < buf.length ? i + 1 : i // past the LF
  let lines = 0
  for (let k = start; k < next; k++) if (buf[k] === LF) lines++
  if (next === buf.length && buf[next - 1] !== LF) lines++ // last line without a line ending
  const utf8 = raw.every((f) => isUtf8(f))
  const { bytes, ends } = serialise(raw)
  return { record: { line, bytes, ends, fieldCount: ends.length, fields: raw.map((f) => decode(f, utf8)), error }, next, lines: Math.max(lines, 1) }
}

/** Yields every record of the input, the header first. Empty lines are not records. */
export async function* readRecords(input: AsyncIterable<Buffer | string>): AsyncGenerator<RawRecord> {
  const iterator = input[Symbol.asyncIterator]()
  let buf: Buffer = Buffer.alloc(0)
  let pos = 0
  let line = 1
  let eof = false
  let special = -1 // cached position of the next `"` or mid-line CR at or after pos; -1 = not yet looked
  const more = async () => {
    const step = await iterator.next()
    if (step.done) {
      eof = true
      return
    }
    const chunk = typeof step.value === 'string' ? Buffer.from(step.value) : step.value
    buf = pos < buf.length ? Buffer.concat([buf.subarray(pos), chunk]) : chunk
    pos = 0
    special = -1
  }
  const findSpecial = () => {
    let q = buf.indexOf(QUOTE, pos)
    if (q === -1) q = buf.length
    // A CR right before a LF is a line ending; any other CR is content and takes the quoted path.
    let cr = buf.indexOf(CR, pos)
    while (cr !== -1 && cr < q && buf[cr + 1] === LF) cr = buf.indexOf(CR, cr + 1)
    return cr !== -1 && cr < q ? cr : q
  }

  while (!eof && buf.length < BOM.length) await more()
  if (buf.subarray(0, BOM.length).equals(BOM)) pos = BOM.length
  for (;;) {
    let nl = buf.indexOf(LF, pos)
    if (nl === -1 && !eof) {
      await more()
      continue
    }
    if (pos >= buf.length) return
    if (nl === -1) nl = buf.length
    if (special !== -1 && special < pos) special = -1
    if (special === -1) special = findSpecial()
    if (special < nl) {
      const parsed = quotedRecord(buf, pos, line, eof)
      if (!parsed) {
        await more() // the record runs on past what we have
        continue
      }
      yield parsed.record
      line += parsed.lines
      pos = parsed.next
      continue
    }
    const end = nl > pos && buf[nl - 1] === CR ? nl - 1 : nl
    if (end > pos) yield new PlainRecord(line, buf.subarray(pos, end))
    line++
    pos = nl + 1
  }
}

/** The fields of one stored record (lab_rows.raw, in checksum form). */
export function fieldsOf(raw: string): string[] {
  if (!raw.includes('"')) return raw.split('|')
  return quotedRecord(Buffer.from(raw), 0, 0, true)!.record.fields
}
