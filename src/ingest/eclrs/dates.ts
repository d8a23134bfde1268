/**
 * ECLRS dates: `01MAR1947:00:00:00.000000` (day, English month, year, time, microseconds).
 * Timestamps are New York local time; they are converted to UTC with the zone's rules on that date.
 */
const MONTHS: Record<string, number> = {
  JAN: 1, FEB: 2, MAR: 3, APR: 4, MAY: 5, JUN: 6, JUL: 7, AUG: 8, SEP: 9, OCT: 10, NOV: 11, DEC: 12,
}
const MIN_YEAR = 1800
const MAX_YEAR = 2200
const PATTERN = /^(\d{2})([A-Za-z]{3})(\d{4})(?::(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?)?$/

export interface LocalTime {
  year: number
  month: number
  day: number
  hour: number
  minute: number
  second: number
  micro: number
}

/** Parses the ECLRS form; undefined when it is not a real date and time. */
export function parseEclrsDate(text: string): LocalTime | undefined {
  const m = PATTERN.exec(text.trim())
  if (!m) return undefined
  const month = MONTHS[m[2].toUpperCase()]
  const [year, day] = [Number(m[3]), Number(m[1])]
  const [hour, minute, second] = [Number(m[4] ?? 0), Number(m[5] ?? 0), Number(m[6] ?? 0)]
  if (!month || day < 1 || hour > 23 || minute > 59 || second > 59) return undefined
  // Year 0000 is a "date" to the pattern but not to PostgreSQL; nothing in an export is that old or that far ahead.
  if (year < MIN_YEAR || year > MAX_YEAR) return undefined
  if (new Date(Date.UTC(year, month - 1, day)).getUTCDate() !== day) return undefined // 31FEB, 29FEB of a common year
  return { year, month, day, hour, minute, second, micro: Number((m[7] ?? '0').padEnd(6, '0')) }
}

export function isoDate(t: LocalTime): string {
  return `${String(t.year).padStart(4, '0')}-${String(t.month).padStart(2, '0')}-${String(t.day).padStart(2, '0')}`
}

const offsetCache = new Map<string, number>()
const formatters = new Map<string, Intl.DateTimeFormat>()

/** Minutes the zone is ahead of UTC at the UTC instant `ms`. */
function zoneOffset(zone: string, ms: number): number {
  let fmt = formatters.get(zone)
  if (!fmt) {
    fmt = new Intl.DateTimeFormat('en-US', {
      timeZone: zone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric',
    })
    formatters.set(zone, fmt)
  }
  const p = Object.fromEntries(fmt.formatToParts(new Date(ms)).map((x) => [x.type, Number(x.value)]))
  const asUtc = Date.UTC(p.year, p.month - 1, p.day, p.hour, p.minute)
  return Math.round((asUtc - (ms - (ms % 60000))) / 60000)
}

/**
 * Minutes `zone` is ahead of UTC at this wall-clock time. In the hour that does not exist (spring
 * forward) the offset before the change applies; in the hour that happens twice, the first.
 */
function offsetAt(t: LocalTime, zone: string): number {
  const key = `${zone}|${t.year}-${t.month}-${t.day}T${t.hour}`
  let offset = offsetCache.get(key)
  if (offset === undefined) {
    const wall = Date.UTC(t.year, t.month - 1, t.day, t.hour, t.minute)
    // Offsets that map this wall time back onto itself: none in the skipped hour, two in the repeated one.
    const before = zoneOffset(zone, wall - 3_600_000)
    const at = zoneOffset(zone, wall - before * 60000)
    const fits = [before, at].filter((o) => zoneOffset(zone, wall - o * 60000) === o)
    offset = fits.length > 0 ? Math.max(...fits) : before
    if (offsetCache.size > 100_000) offsetCache.clear()
    offsetCache.set(key, offset)
  }
  return offset
}

/** The UTC instant of a wall-clock time in `zone`. */
export function zonedToUtc(t: LocalTime, zone = 'America/New_York'): Date {
  const wall = Date.UTC(t.year, t.month - 1, t.day, t.hour, t.minute, t.second)
  return new Date(wall - offsetAt(t, zone) * 60000 + Math.floor(t.micro / 1000))
}

const p2 = (n: number) => (n < 10 ? `0${n}` : String(n))

/**
 * The same instant as PostgreSQL timestamptz text: the wall time with its offset, microseconds kept
 * (`2020-03-20 06:03:36.589000-04:00`). Cheaper than going through a Date, and loses nothing.
 */
export function zonedText(t: LocalTime, zone = 'America/New_York'): string {
  const offset = offsetAt(t, zone)
  const sign = offset < 0 ? '-' : '+'
  const abs = Math.abs(offset)
  return `${isoDate(t)} ${p2(t.hour)}:${p2(t.minute)}:${p2(t.second)}.${String(t.micro).padStart(6, '0')}${sign}${p2(Math.floor(abs / 60))}:${p2(abs % 60)}`
}
