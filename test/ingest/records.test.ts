import { describe, expect, it } from 'vitest'
import { parse } from 'csv-parse/sync'
import { readRecords } from '../../src/ingest/eclrs/records.ts'

async function records(input: string | Buffer, chunk = 1 << 20) {
  const buf = Buffer.isBuffer(input) ? input : Buffer.from(input)
  async function* chunks() {
    for (let i = 0; i < buf.length; i += chunk) yield buf.subarray(i, i + chunk)
  }
  const out = []
  for await (const r of readRecords(chunks())) out.push(r)
  return out
}

describe('readRecords', () => {
  it('splits plain lines on | and keeps empty fields', async () => {
    const [a, b] = await records('A|B|C\n1||3\n')
    expect(a.fields).toEqual(['A', 'B', 'C'])
    expect(b).toMatchObject({ line: 2, fields: ['1', '', '3'] })
    expect(b.bytes.toString()).toBe('1||3')
    expect(b.ends).toEqual([1, 2, 4])
  })

  it('reads quoted fields holding |, doubled quotes and line breaks, and counts lines from where a record starts', async () => {
    const rs = await records('H|I\n"a|b"|"say ""hi"""\n"two\nlines"|x\nlast|row\n')
    expect(rs.map((r) => r.fields)).toEqual([['H', 'I'], ['a|b', 'say "hi"'], ['two\nlines', 'x'], ['last', 'row']])
    expect(rs.map((r) => r.line)).toEqual([1, 2, 3, 5])
    // The checksum form quotes only where needed.
    expect(rs[1].bytes.toString()).toBe('"a|b"|"say ""hi"""')
  })

  it('re-serialises a needlessly quoted field without quotes', async () => {
    const [, r] = await records('H\n"plain"|x\n')
    expect(r.bytes.toString()).toBe('plain|x')
  })

  it('handles CRLF line endings, a byte-order mark and a last line without a line ending', async () => {
    const rs = await records(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('H|I\r\na|b\r\n"q"|c\r\nend|x')]))
    expect(rs.map((r) => r.fields)).toEqual([['H', 'I'], ['a', 'b'], ['q', 'c'], ['end', 'x']])
    expect(rs[1].bytes.toString()).toBe('a|b')
  })

  it('keeps bytes that are not UTF-8, decoding that record as Latin-1', async () => {
    const rs = await records(Buffer.concat([Buffer.from('H|I\nJOS'), Buffer.from([0xc9]), Buffer.from('|x\n')]))
    expect(rs[1].fields[0]).toBe('JOSÉ')
    expect(rs[1].bytes.equals(Buffer.concat([Buffer.from('JOS'), Buffer.from([0xc9]), Buffer.from('|x')]))).toBe(true)
  })

  it('reports an unterminated quote at the end of the file instead of dropping the row', async () => {
    const rs = await records('H|I\na|"never closed\n')
    expect(rs).toHaveLength(2)
    expect(rs[1].error).toMatch(/not closed/)
  })

  it('gives up on a quote not closed within 1 MiB: that line is an error and the rest is read', async () => {
    const filler = 'x'.repeat(1000)
    const text = `H|I\na|"opened\n${Array.from({ length: 1200 }, () => `${filler}|y`).join('\n')}\nlast|row\n`
    for (const chunk of [65536, 1 << 20]) {
      const rs = await records(text, chunk)
      expect(rs[1]).toMatchObject({ line: 2, error: expect.stringMatching(/not closed/) })
      expect(rs[1].bytes.toString()).toBe('a|"opened')
      expect(rs).toHaveLength(2 + 1200 + 1)
      expect(rs.at(-1)!.fields).toEqual(['last', 'row'])
    }
  })

  it('skips empty lines', async () => {
    const rs = await records('H\n\na\n\r\n\nb\n\n')
    expect(rs.map((r) => [r.line, r.fields[0]])).toEqual([[1, 'H'], [3, 'a'], [6, 'b']])
  })

  it('gives the same records whatever the chunk size, and agrees with csv-parse', async () => {
    const alphabet = ['a', 'b', '|', '"', '\n', ' ', 'é']
    let seed = 7
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n)
    for (let t = 0; t < 200; t++) {
      const fields = Array.from({ length: 1 + rand(4) }, () => Array.from({ length: rand(6) }, () => alphabet[rand(alphabet.length)]).join(''))
      const line = fields.map((f) => (/[|"\n]/.test(f) || rand(3) === 0 ? `"${f.replaceAll('"', '""')}"` : f)).join('|')
      const text = `h\n${line}\nz\n`
      const expected = parse(text, { delimiter: '|', relax_column_count: true, skip_empty_lines: true })
      for (const chunk of [1, 3, 1 << 20]) {
        const got = await records(text, chunk)
        expect(got.map((r) => r.fields), `${JSON.stringify(text)} in chunks of ${chunk}`).toEqual(expected)
      }
    }
  })
})
