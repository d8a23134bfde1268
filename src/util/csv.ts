/**
 * The one way Herald writes a CSV cell for people to open. Two rules, in this order:
 * - Formula injection (as GOV.UK Notify does): a cell a spreadsheet would run, one starting with
 *   `=`, `+`, `-`, `@`, a tab or a carriage return, gets an apostrophe in front. Spreadsheets take
 *   a leading apostrophe as "this is text" and do not show it, so `=cmd|' /C calc'!A0` stays text
 *   and `+12125550001` stays as typed instead of becoming the number 12125550001.
 * - RFC 4180: a cell holding a comma, a double quote or a line break is quoted, quotes doubled.
 * Reports build most of each line in PostgreSQL (the speed of a million-row report); `sqlCsvCell`
 * is the same two rules as SQL, from the same patterns, and a test holds the two to the same
 * output. Every CSV output goes through one of them: `csvLine`/`csvCell` in this process,
 * `sqlCsvCell` in a query. A column of system values (timestamps, ids, counts) may skip them only
 * if it can never start with one of those characters.
 */

/** The characters that make a spreadsheet read a cell as a formula when they come first. */
export const FORMULA_START = ['=', '+', '-', '@', '\t', '\r'] as const

// Each pattern once, as regular-expression source meaning the same in JS and in PostgreSQL (AREs
// take \t, \r and \n as escapes, inside brackets too; a '-' last in brackets is itself).
const FORMULA = String.raw`^[=+@\t\r-]`
const QUOTES = String.raw`[",\r\n]`
const formula = new RegExp(FORMULA)
const quotes = new RegExp(QUOTES)

/** One cell: neutralised, then quoted if it must be. */
export function csvCell(value: string): string {
  const v = formula.test(value) ? `'${value}` : value
  return quotes.test(v) ? `"${v.replace(/"/g, '""')}"` : v
}

/** One line of cells, with its line end. */
export const csvLine = (cells: readonly string[]): string => cells.map(csvCell).join(',') + '\n'

/**
 * `csvCell` in SQL, for a text expression (evaluated more than once: give a column or a cheap
 * expression). Most cells need neither rule, so one regular expression decides that first and
 * such a cell is returned as it is: a report costs about what quoting alone cost.
 */
export function sqlCsvCell(e: string): string {
  const mark = `CASE WHEN ${e} ~ '${FORMULA}' THEN '''' ELSE '' END`
  return `CASE WHEN ${e} !~ '${FORMULA}|${QUOTES}' THEN ${e}
    WHEN ${e} ~ '${QUOTES}' THEN '"' || ${mark} || replace(${e}, '"', '""') || '"'
    ELSE '''' || ${e} END`
}
