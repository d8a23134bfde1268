// Part of `npm run build`: tsc emits only JavaScript, but the code reads files beside it at run time
// (migrations' SQL, the console's views and assets, the sandbox's county list). Every file under src/
// that is not TypeScript is copied to the same place under dist/, so `new URL('./x', import.meta.url)`
// finds it in both. Plain Node, no shell tools: it runs wherever npm does.
import { cpSync, existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const src = fileURLToPath(new URL('../src/', import.meta.url))
const dist = fileURLToPath(new URL('../dist/', import.meta.url))
if (!existsSync(dist)) throw new Error('dist/ is missing: run tsc -p tsconfig.build.json first')
cpSync(src, dist, { recursive: true, filter: (path) => !path.endsWith('.ts') })
