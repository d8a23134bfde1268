/** What every sandbox's main.ts needs to read its flags: a message and exit 2 for a bad one. */
export function fail(message: string): never {
  console.error(message)
  process.exit(2)
}

/** A flag that must be a number from `min` to `max`. */
export function num(name: string, text: string, min: number, max = Infinity): number {
  const n = Number(text)
  if (text.trim() === '' || !Number.isFinite(n) || n < min || n > max) fail(`--${name} must be a number from ${min}${max < Infinity ? ` to ${max}` : ''}, not "${text}"`)
  return n
}
