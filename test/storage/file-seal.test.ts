/**
 * Sealed job files (src/privacy/file-seal.ts): what goes in comes out, whatever the chunking; a file changed, cut short, lengthened,
 * reordered, moved to another job or replaced by plaintext fails, with an error that quotes none of it; a million rows go through the
 * store and the CSV parser with memory flat.
 */
import { describe, expect, it } from 'vitest'
import { readFileSync, statSync } from 'node:fs'
import { Readable } from 'node:stream'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { FileSealer, FRAME, JobFileError } from '../../src/privacy/file-seal.ts'
import { jobRows } from '../../src/messaging/jobs/csv.ts'
import { LocalStore } from '../../src/storage/local.ts'
import { tempDir } from '../helpers/files.ts'

const files = new FileSealer('a test secret of thirty-two bytes or more')
const HEADER = 21
setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void
const sealed = async (plain: Buffer, name = 'job', frame?: number) => Buffer.concat(await files.seal(plain, name, { frame }).body.toArray())
const chunked = (b: Buffer, size: number) => Readable.from((function* () {
  for (let at = 0; at < b.length; at += size) yield b.subarray(at, at + size)
})())
const opened = async (stored: Buffer, name = 'job', opts: { plaintext?: boolean; chunk?: number } = {}) =>
  Buffer.concat(await files.open(chunked(stored, opts.chunk ?? 4096), name, opts).toArray())
const failure = async (p: Promise<unknown>) => {
  const err = await p.then(() => undefined, (e: unknown) => e)
  expect(err).toBeInstanceOf(JobFileError)
  return (err as Error).message
}
const SECRET_ROW = 'phone number,name\n+1 212 555 0187,Ophelia Quartermain\n'

describe('a sealed job file', () => {
  it('opens to exactly what was sealed, for sizes around the frame and any chunking', async () => {
    for (const size of [0, 1, 100, FRAME - 1, FRAME, FRAME + 1, 3 * FRAME + 5]) {
      const plain = Buffer.from(Uint8Array.from({ length: size }, (_, i) => (i * 31 + 7) % 251))
      const s = files.seal(plain, 'job')
      const bytes = Buffer.concat(await s.body.toArray())
      expect(bytes.length, `size ${size}`).toBe(s.size)
      for (const chunk of [size < 1000 ? 1 + (size % 7) : 997, 1000, 1 << 20]) expect((await opened(bytes, 'job', { chunk })).equals(plain), `size ${size}`).toBe(true)
    }
  })

  it('is not the plaintext, and two seals of one file differ (a salt of their own)', async () => {
    const plain = Buffer.from(SECRET_ROW)
    const [a, b] = [await sealed(plain), await sealed(plain)]
    for (const s of [a, b]) for (const text of ['212 555 0187', '2125550187', 'Ophelia', 'phone number']) expect(s.toString('latin1')).not.toContain(text)
    expect(a.equals(b)).toBe(false)
  })

  it('fails when any byte is changed, with a message that quotes nothing of the file', async () => {
    const plain = Buffer.from(SECRET_ROW.repeat(3000)) // several frames
    const good = await sealed(plain)
    for (const at of [0, 4, 5, 12, HEADER, HEADER + 2, HEADER + 3, HEADER + 4, HEADER + 100, HEADER + 4 + FRAME + 3, good.length - 20, good.length - 1]) {
      const bad = Buffer.from(good)
      bad[at] ^= 0x01
      const message = await failure(opened(bad))
      expect(message).not.toMatch(/212|Ophelia|phone/)
    }
  })

  it('fails when cut short (at a frame boundary or in a frame), lengthened, or its frames reordered', async () => {
    const good = await sealed(Buffer.from(SECRET_ROW.repeat(3000)))
    const frame = 4 + FRAME + 16
    expect(await failure(opened(good.subarray(0, HEADER + frame)))).toMatch(/cut short/)
    expect(await failure(opened(good.subarray(0, HEADER + frame + 100)))).toMatch(/cut short/)
    expect(await failure(opened(good.subarray(0, 10)))).toMatch(/cut short/)
    expect(await failure(opened(Buffer.alloc(0)))).toMatch(/cut short|not sealed/)
    expect(await failure(opened(Buffer.concat([good, Buffer.from('x')])))).toMatch(/integrity/)
    const swapped = Buffer.concat([good.subarray(0, HEADER), good.subarray(HEADER + frame, HEADER + 2 * frame), good.subarray(HEADER, HEADER + frame), good.subarray(HEADER + 2 * frame)])
    expect(await failure(opened(swapped))).toMatch(/integrity/)
  })

  it("does not open as another job's file, nor under another secret", async () => {
    const s = await sealed(Buffer.from(SECRET_ROW), 'job-a')
    expect(await failure(opened(s, 'job-b'))).toMatch(/integrity/)
    const other = new FileSealer('another secret of thirty-two bytes or more')
    expect(await failure(Promise.resolve(other.open(chunked(s, 100), 'job-a')).then((r) => r.toArray()))).toMatch(/integrity/)
  })

  it('a plaintext file is refused, unless it is one stored before sealing', async () => {
    const plain = Buffer.from(SECRET_ROW)
    const message = await failure(opened(plain))
    expect(message).toMatch(/not sealed/)
    expect(message).not.toMatch(/212|Ophelia|phone/)
    expect((await opened(plain, 'job', { plaintext: true, chunk: 3 })).equals(plain)).toBe(true)
    expect((await opened(Buffer.from('ab'), 'job', { plaintext: true })).toString()).toBe('ab')
    // A sealed file is opened as such, even where plaintext would do.
    expect((await opened(await sealed(plain), 'job', { plaintext: true })).equals(plain)).toBe(true)
  })

  it('holds at most a frame and a chunk while sealing and opening: small frames stream through at once', async () => {
    // Sealed with 1-byte frames, each byte written is readable at the other end before the next is written.
    const enc = files.sealer('job', 1)
    const dec = files.open(enc, 'job')
    const got: Buffer[] = []
    dec.on('data', (b: Buffer) => got.push(b))
    for (const ch of 'abc') {
      enc.write(Buffer.from(ch))
      await new Promise((r) => setTimeout(r, 5))
      expect(Buffer.concat(got).toString().endsWith(ch)).toBe(true)
    }
    enc.end()
    await new Promise((r) => dec.on('end', r))
    expect(Buffer.concat(got).toString()).toBe('abc')
  })
})

describe('a million-row job file through the store', () => {
  it('is written sealed (0600) and read back row by row, memory flat', { timeout: 120_000 }, async () => {
    const tmp = tempDir()
    try {
      const store = new LocalStore(`${tmp.dir}/jobs`)
      const ROWS = 1_000_000
      const rows = function* () {
        yield 'phone number,name\n'
        for (let i = 0; i < ROWS; i += 1000) {
          let block = ''
          for (let j = i; j < i + 1000; j++) block += `+1 212 555 ${String(j % 10000).padStart(4, '0')},Person Number ${j}\n`
          yield block
        }
      }
      // Live memory (after a full collection, so garbage not yet collected does not count), sampled as the file is written and read.
      const live = () => (gc(), process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers)
      const base = live()
      let peak = base
      const sample = setInterval(() => (peak = Math.max(peak, live())), 200)
      const uri = await store.put('big.csv.sealed', Readable.from(rows()).pipe(files.sealer('big')))
      const size = statSync(uri).size
      expect(size).toBeGreaterThan(30_000_000)
      expect(statSync(uri).mode & 0o777).toBe(0o600)
      expect(statSync(`${tmp.dir}/jobs`).mode & 0o777).toBe(0o700)
      let n = 0
      let last = ''
      for await (const r of jobRows(files.open((await store.open(uri)).body, 'big'), ['name'])) {
        n++
        last = r.personalisation.name
        if (n % 100_000 === 0) peak = Math.max(peak, live())
      }
      clearInterval(sample)
      expect([n, last]).toEqual([ROWS, `Person Number ${ROWS - 1}`])
      // The file is ~37 MB; what the process held at any time while writing and reading it is some frames and the streams'
      // chunks (the store reads 1 MiB at a time), ~9 MB whatever the file's size: a file held whole would be over this.
      expect(peak - base).toBeLessThan(size / 3)
      expect(readFileSync(uri).subarray(0, 1 << 20).toString('latin1')).not.toContain('Person Number')
    } finally {
      tmp.cleanup()
    }
  })
})
