import { describe, expect, it } from 'vitest'
import { parseEclrsDate, zonedToUtc } from '../../src/ingest/eclrs/dates.ts'

const utc = (s: string) => zonedToUtc(parseEclrsDate(s)!).toISOString()

describe('ECLRS dates', () => {
  it('parses the export form, microseconds included', () => {
    expect(parseEclrsDate('20MAR2020:06:03:36.589000')).toEqual({ year: 2020, month: 3, day: 20, hour: 6, minute: 3, second: 36, micro: 589000 })
  })
  it('rejects what is not a real date', () => {
    for (const bad of ['31FEB2020:00:00:00.000000', '01XYZ2020:00:00:00.000000', '2020-03-01', '01MAR2020:25:00:00.000000', '']) {
      expect(parseEclrsDate(bad), bad).toBeUndefined()
    }
    expect(parseEclrsDate('29FEB2020:00:00:00.000000')).toBeDefined()
  })
  it('converts New York time to UTC with daylight saving on that date', () => {
    expect(utc('15JAN2021:12:00:00.000000')).toBe('2021-01-15T17:00:00.000Z') // EST
    expect(utc('15JUL2021:12:00:00.000000')).toBe('2021-07-15T16:00:00.000Z') // EDT
    expect(utc('20MAR2020:06:03:36.589000')).toBe('2020-03-20T10:03:36.589Z')
  })
  it('reads the skipped spring hour with the standard offset and the repeated autumn hour as its first occurrence', () => {
    expect(utc('14MAR2021:02:30:00.000000')).toBe('2021-03-14T07:30:00.000Z')
    expect(utc('07NOV2021:01:30:00.000000')).toBe('2021-11-07T05:30:00.000Z')
    expect(utc('07NOV2021:02:30:00.000000')).toBe('2021-11-07T07:30:00.000Z')
  })
})
