/**
 * Bulk-job files at rest: AES-256-GCM, streamed in frames so a file of any size is sealed and read
 * with a few frames in memory, never the whole file. The key is HKDF of HERALD_SECRET_KEY for the
 * purpose messaging:job-files, then per file (a random salt, and the file's name: a sealed file
 * copied over another job's does not open).
 *
 * Layout: MAGIC (4) | version (1) | salt (16), then frames: a 4-byte big-endian word (top bit: the
 * last frame; the rest: the frame's plaintext length, at most 64 KiB), the ciphertext, its 16-byte
 * tag. Frame i's nonce is i (8 bytes) | 0 0 0 | last ? 1 : 0, and the header is its additional data
 * (the STREAM construction): a frame changed, dropped, reordered or moved, or a file cut short at a
 * frame boundary (no last frame) or carrying bytes after its last, fails.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto'
import { pipeline, Readable, Transform, type TransformCallback } from 'node:stream'
import { deriveKey } from './keys.ts'

// 0x89 first: no text file (a CSV) starts with it, so a file from before sealing is told apart.
const MAGIC = Buffer.from([0x89, 0x48, 0x4a, 0x46]) // \x89 H J F
const VERSION = 1
const HEADER = MAGIC.length + 1 + 16
export const FRAME = 64 * 1024
const TAG = 16
const LAST = 0x80000000

/** Why a job file could not be read; says nothing of what the file holds. */
export class JobFileError extends Error {
  readonly code = 'JOB_FILE_SEALED'
  constructor(message: string) {
    super(message)
    this.name = 'JobFileError'
  }
}

const nonce = (index: number, last: boolean) => {
  const n = Buffer.alloc(12)
  n.writeBigUInt64BE(BigInt(index))
  n[11] = last ? 1 : 0
  return n
}

export class FileSealer {
  private readonly key: Buffer

  constructor(secret: string) {
    this.key = deriveKey(secret, 'messaging:job-files')
  }

  private fileKey(salt: Buffer, name: string): Buffer {
    return Buffer.from(hkdfSync('sha256', this.key, salt, `herald:job-file:${name}`, 32))
  }

  /** The sealed bytes of `plain` as a stream, and their exact length (an S3 upload needs it first). */
  seal(plain: Buffer, name: string, opts: { frame?: number } = {}): { body: Readable; size: number } {
    const frame = opts.frame ?? FRAME
    // Fed a frame at a time: the sealed copy is made as the store reads it, not all at once beside the upload.
    const chunks = function* () {
      for (let at = 0; at < plain.length; at += frame) yield plain.subarray(at, at + frame)
    }
    const frames = Math.floor(plain.length / frame) + 1 // whole frames, then the last (perhaps empty)
    return { body: Readable.from(chunks()).pipe(this.sealer(name, frame)), size: HEADER + plain.length + frames * (4 + TAG) }
  }

  /** A stream that seals what is written to it. */
  sealer(name: string, frame = FRAME): Transform {
    if (!(frame > 0 && frame <= FRAME)) throw new RangeError(`frame size must be 1 to ${FRAME}`)
    const header = Buffer.concat([MAGIC, Buffer.of(VERSION), randomBytes(16)])
    const key = this.fileKey(header.subarray(MAGIC.length + 1), name)
    let index = 0
    let started = false
    let pending: Buffer[] = []
    let held = 0
    const frameOf = (plain: Buffer, last: boolean) => {
      const c = createCipheriv('aes-256-gcm', key, nonce(index++, last)).setAAD(header)
      const word = Buffer.alloc(4)
      word.writeUInt32BE((last ? LAST : 0) + plain.length)
      return Buffer.concat([word, c.update(plain), c.final(), c.getAuthTag()])
    }
    return new Transform({
      transform(chunk: Buffer, _enc, done: TransformCallback) {
        if (!started) this.push(header), (started = true)
        pending.push(chunk)
        held += chunk.length
        // Full frames go out as soon as they are whole; the last (shorter, or empty) waits for the end.
        if (held >= frame) {
          let all = Buffer.concat(pending)
          while (all.length >= frame) {
            this.push(frameOf(all.subarray(0, frame), false))
            all = all.subarray(frame)
          }
          pending = [all]
          held = all.length
        }
        done()
      },
      flush(done: TransformCallback) {
        if (!started) this.push(header)
        done(null, frameOf(Buffer.concat(pending), true))
      },
    })
  }

  /**
   * The plaintext of a stored job file, as a stream. A file without the magic is refused, unless
   * `plaintext` allows it (a job stored before sealing, still to run). Errors close `stored`.
   */
  open(stored: Readable, name: string, opts: { plaintext?: boolean } = {}): Readable {
    const out = this.opener(name, opts.plaintext ?? false)
    pipeline(stored, out, () => {}) // an error destroys both; the reader of `out` gets it
    return out
  }

  private opener(name: string, plaintext: boolean): Transform {
    let mode: 'header' | 'frames' | 'plain' | 'done' = 'header'
    let buf: Buffer = Buffer.alloc(0)
    let header: Buffer
    let key: Buffer
    let index = 0
    const broken = () => new JobFileError('the job file failed its integrity check: it was changed or damaged after upload')
    // The bytes the unit being read (magic, header, frame) takes in all, as far as `buf` tells.
    const wanted = () => {
      if (buf.length < 4) return 4
      if (mode === 'header') return HEADER
      return 4 + Math.min(FRAME + 1, buf.readUInt32BE(0) & 0x7fffffff) + TAG
    }
    const step = (push: (b: Buffer) => void): JobFileError | undefined => {
      if (mode === 'header') {
        if (buf.length < MAGIC.length) return
        if (!buf.subarray(0, MAGIC.length).equals(MAGIC)) {
          if (!plaintext) return new JobFileError('the job file is not sealed: it was replaced after upload')
          mode = 'plain'
          push(buf)
          buf = Buffer.alloc(0)
          return
        }
        if (buf.length < HEADER) return
        if (buf[MAGIC.length] !== VERSION) return new JobFileError(`the job file is sealed in an unknown version (${buf[MAGIC.length]})`)
        header = Buffer.from(buf.subarray(0, HEADER))
        key = this.fileKey(header.subarray(MAGIC.length + 1), name)
        buf = buf.subarray(HEADER)
        mode = 'frames'
      }
      while (mode === 'frames' && buf.length >= 4) {
        const word = buf.readUInt32BE(0)
        const last = word >= LAST
        const length = word - (last ? LAST : 0)
        if (length > FRAME) return broken() // bounds what is held: a forged length cannot make us buffer gigabytes
        if (buf.length < 4 + length + TAG) return
        const d = createDecipheriv('aes-256-gcm', key, nonce(index++, last)).setAAD(header)
        d.setAuthTag(buf.subarray(4 + length, 4 + length + TAG))
        let plain: Buffer
        try {
          plain = d.update(buf.subarray(4, 4 + length))
          d.final() // GCM gives nothing more here: it checks the tag
        } catch {
          return broken()
        }
        buf = buf.subarray(4 + length + TAG)
        if (plain.length) push(plain)
        if (last) mode = 'done'
      }
      if (mode === 'done' && buf.length) return broken() // bytes after the last frame
    }
    return new Transform({
      transform(chunk: Buffer, _enc, done: TransformCallback) {
        if (mode === 'plain') return done(null, chunk)
        // What a frame split across chunks still needs is copied onto it, and no more: the rest of the
        // chunk is read where it lies (a chunk is 1 MiB; copying it whole each time is garbage to collect).
        let rest = chunk
        while (rest.length) {
          let take = rest.length
          if (buf.length) take = Math.min(rest.length, Math.max(1, wanted() - buf.length))
          buf = buf.length ? Buffer.concat([buf, rest.subarray(0, take)]) : rest.subarray(0, take)
          rest = rest.subarray(take)
          const err = step((b) => this.push(b))
          if (err) return done(err)
          // Told plaintext by its first bytes (a file from before sealing): the rest of the chunk is the file's too.
          if ((mode as string) === 'plain' && rest.length) this.push(rest), (rest = rest.subarray(rest.length))
        }
        done()
      },
      flush(done: TransformCallback) {
        if (mode === 'header' && plaintext && buf.length < MAGIC.length) return done(null, buf) // a tiny plaintext file
        if (mode !== 'done' && mode !== 'plain') return done(new JobFileError('the job file is cut short: part of it is missing'))
        done()
      },
    })
  }
}
