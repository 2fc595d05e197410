// The documentation's code, checked: every fenced ts/js block of README.md and docs/*.md is compiled, in one
// TypeScript program, against the package's own types (`fastify-reliable-ws` is types/index.d.ts, its `/client` is
// lib/client), so an example that names a missing option, a renamed event or a wrong type fails the suite. The
// option, client-option and wsStats tables are checked against the public types the same way: a field added to the
// types without a row in its page fails too.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import t from 'tap'
import ts from 'typescript'

// One compiler program over fastify's types takes ~10 s alone, and much longer beside the rest of the suite on 2 cores.
t.setTimeout(120_000)

const root = join(__dirname, '..', '..')
const virtualDir = join(root, '__docs__')

// Each fence says what it holds. Checked: `ts` (an ES module, top-level await allowed), `js` (an ES module) and `cjs`
// (CommonJS), the last two type-checked as JavaScript. `ts fragment` is a piece of a larger program, compiled after
// FRAGMENT_PRELUDE, which gives it an `app`. Not code: shell, nginx, HTTP, text, JSON.
const CHECKED: Record<string, string> = { ts: '.mts', js: '.mjs', cjs: '.cjs' }
const EXEMPT = new Set(['sh', 'nginx', 'http', 'text', 'json'])
const FRAGMENT_PRELUDE = "import type { FastifyInstance } from 'fastify'\nimport 'fastify-reliable-ws'\ndeclare const app: FastifyInstance\n"

interface Block { doc: string, line: number, lang: string, fragment: boolean, code: string }

/** The fenced blocks of one Markdown file; indented fences (inside a list item) lose their indent. */
function extractBlocks (doc: string, text: string): Block[] {
  const blocks: Block[] = []
  const lines = text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const open = /^( *)```(.*)$/.exec(lines[i])
    if (open === null) continue
    const [lang = '', ...flags] = open[2].trim().split(/\s+/)
    const indent = open[1].length
    const body: string[] = []
    let j = i + 1
    while (j < lines.length && lines[j].trim() !== '```') body.push(lines[j++].slice(indent))
    blocks.push({ doc, line: i + 2, lang, fragment: flags.includes('fragment'), code: body.join('\n') + '\n' })
    i = j
  }
  return blocks
}

const docs = ['README.md', ...readdirSync(join(root, 'docs')).filter((name) => name.endsWith('.md')).map((name) => `docs/${name}`)]
const blocks = docs.flatMap((doc) => extractBlocks(doc, readFileSync(join(root, doc), 'utf8')))

// Blocks written wrong on purpose: the check must reject each, or it checks nothing.
const WRONG: Block[] = [
  { doc: 'wrong', line: 1, lang: 'ts', fragment: false, code: "import fastify from 'fastify'\nimport reliableWs from 'fastify-reliable-ws'\nawait fastify().register(reliableWs, { heartbeat: { intervalMS: 1000 } })\n" },
  { doc: 'wrong', line: 2, lang: 'ts', fragment: true, code: "app.get('/', { websocket: true }, (socket) => { socket.sendJson({}) })\n" },
  { doc: 'wrong', line: 3, lang: 'js', fragment: false, code: "import { ReliableWebSocket } from 'fastify-reliable-ws/client'\nconst ws = new ReliableWebSocket('ws://127.0.0.1/', { backof: {} })\nws.addEventListener('giveup', (event) => event.reasn)\n" }
]

// What each must be rejected for: the misspelt name, not some unrelated failure (an import that does not resolve).
const WRONG_BECAUSE = new Map([[1, /'intervalMS' does not exist in type 'HeartbeatOptions'/], [2, /'sendJson' does not exist/], [3, /'backof' does not exist[\s\S]*'reasn' does not exist/]])

// What the tables must cover: the public types, walked through the compiler.
const SHAPES = `import type { FastifyReliableWsOptions, RouteReliableOptions, WsStats } from 'fastify-reliable-ws'
import type { ReliableWebSocketOptions } from 'fastify-reliable-ws/client'
export type PluginOptions = FastifyReliableWsOptions
export type RouteOptions = RouteReliableOptions
export type Stats = WsStats
export type ClientOptions = ReliableWebSocketOptions
`

const fileName = (block: Block, index: number): string =>
  join(virtualDir, `${block.doc.replace(/\W/g, '_')}_${block.line}_${index}${CHECKED[block.lang]}`)

const checked = [...blocks, ...WRONG].map((block, index) => ({ block, name: fileName(block, index) })).filter(({ block }) => block.lang in CHECKED)
const sources = new Map<string, string>(checked.map(({ block, name }) => [name, block.fragment ? FRAGMENT_PRELUDE + block.code : block.code]))
const shapesFile = join(virtualDir, 'shapes.mts')
sources.set(shapesFile, SHAPES)

function compilerOptions (): ts.CompilerOptions {
  const config = ts.readConfigFile(join(root, 'tsconfig.json'), ts.sys.readFile)
  const { options } = ts.parseJsonConfigFileContent(config.config, ts.sys, root)
  return {
    ...options,
    noEmit: true,
    declaration: false,
    allowJs: true,
    checkJs: true,
    // Examples may well leave a parameter or a result unused: `(socket, request) => {}` shows the signature.
    noUnusedLocals: false,
    noUnusedParameters: false,
    paths: {
      'fastify-reliable-ws': [join(root, 'types/index.d.ts')],
      'fastify-reliable-ws/client': [join(root, 'lib/client/index.ts')]
    }
  }
}

function createProgram (): ts.Program {
  const options = compilerOptions()
  const host = ts.createCompilerHost(options)
  const { fileExists, readFile, getSourceFile } = host
  host.fileExists = (name) => sources.has(name) || fileExists.call(host, name)
  host.readFile = (name) => sources.get(name) ?? readFile.call(host, name)
  host.getSourceFile = (name, languageVersion, ...rest) => {
    const text = sources.get(name)
    return text === undefined ? getSourceFile.call(host, name, languageVersion, ...rest) : ts.createSourceFile(name, text, languageVersion, true)
  }
  return ts.createProgram([...sources.keys()], options, host)
}

const program = createProgram()

function errorsOf (name: string, block: Block): string[] {
  const file = program.getSourceFile(name)!
  const offset = block.fragment ? FRAGMENT_PRELUDE.split('\n').length - 1 : 0
  return [...program.getSyntacticDiagnostics(file), ...program.getSemanticDiagnostics(file)].map((d) => {
    const { line } = file.getLineAndCharacterOfPosition(d.start ?? 0)
    return `${block.doc}:${block.line + line - offset}: TS${d.code} ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`
  })
}

t.test('every fenced block says what it holds', async (t) => {
  for (const block of blocks) {
    t.ok(block.lang in CHECKED || EXEMPT.has(block.lang), `${block.doc}:${block.line - 1}: \`\`\`${block.lang} (expected one of ${[...Object.keys(CHECKED), ...EXEMPT].join(', ')})`)
  }
  t.ok(blocks.filter((block) => block.lang in CHECKED).length >= 20, 'the docs hold code to check')
})

t.test("the docs' ts and js blocks compile against the package's types", async (t) => {
  for (const { block, name } of checked) {
    if (block.doc !== 'wrong') t.same(errorsOf(name, block), [], `${block.doc}:${block.line} (${block.lang}${block.fragment ? ' fragment' : ''})`)
  }
})

t.test('a block written wrong fails the check', async (t) => {
  for (const { block, name } of checked) {
    if (block.doc === 'wrong') t.match(errorsOf(name, block).join('\n'), WRONG_BECAUSE.get(block.line)!, block.code.split('\n').at(-2)!)
  }
})

// The fields of an options type, as dotted paths: nested option objects are walked (a field that is only a container
// of others needs no row of its own), anything else (a function, a class, the app's registry or store, a record keyed
// by route or code) is one row.
function fieldPaths (checker: ts.TypeChecker, type: ts.Type, prefix: string, leaves: Set<string>): string[] {
  const paths: string[] = []
  for (const property of checker.getPropertiesOfType(type)) {
    const path = prefix + property.name
    const declared = checker.getNonNullableType(checker.getTypeOfSymbol(property))
    const parts = declared.isUnion() ? declared.types : [declared]
    const objects = leaves.has(path)
      ? []
      : parts.filter((part) => (part.flags & ts.TypeFlags.Object) !== 0 && part.getCallSignatures().length === 0 && ownFields(checker, part))
    // `heartbeat: {…} | false`, `health: {…} | boolean`: the field has a meaning of its own.
    if (objects.length < parts.length) paths.push(path)
    for (const part of objects) paths.push(...fieldPaths(checker, part, path + '.', leaves))
  }
  return paths
}

// An object of this package's own (an options object), not an array or a class of the platform or of a dependency.
function ownFields (checker: ts.TypeChecker, type: ts.Type): boolean {
  const properties = checker.getPropertiesOfType(type)
  return properties.length > 0 && properties.every((property) => property.declarations?.every((declaration) => {
    const file = declaration.getSourceFile().fileName
    return file.startsWith(root) && !file.includes('node_modules')
  }) === true)
}

// A table row documents the names in backticks of its first cell: `a.b` / `c` names a.b and a.c.
function documentedNames (text: string): Set<string> {
  const names = new Set<string>()
  for (const line of text.split('\n')) {
    const cell = /^\| *([^|]*)\|/.exec(line)?.[1]
    if (cell === undefined) continue
    let parent = ''
    for (const [, raw] of cell.matchAll(/`([^`]+)`/g)) {
      const name = raw.replace(/\(.*$/, '')
      if (name.includes('.') || parent === '') {
        names.add(name)
        parent = name.includes('.') ? name.slice(0, name.lastIndexOf('.') + 1) : ''
      } else names.add(parent + name)
    }
  }
  return names
}

t.test('the reference tables list every field of the public types', async (t) => {
  const checker = program.getTypeChecker()
  const shapes = program.getSourceFile(shapesFile)!
  const typeOf = (alias: string): ts.Type => {
    const node = shapes.statements.find((s): s is ts.TypeAliasDeclaration => ts.isTypeAliasDeclaration(s) && s.name.text === alias)!
    return checker.getTypeAtLocation(node.name)
  }
  const page = (doc: string): Set<string> => documentedNames(readFileSync(join(root, doc), 'utf8'))
  const cases: Array<[string, string[], Set<string>]> = [
    ['docs/options.md', fieldPaths(checker, typeOf('PluginOptions'), '', new Set(['websocket', 'onConnect', 'onDisconnect', 'allowedOrigins', 'metrics.registry', 'sessionStore', 'resume.owner', 'redis'])), page('docs/options.md')],
    // A route's fields are the plugin's, but for json and messageSchema: each needs a row, not each of its fields.
    ['docs/options.md (config.reliable)', checker.getPropertiesOfType(typeOf('RouteOptions')).map((p) => `config.reliable.${p.name}`), page('docs/options.md')],
    ['docs/client.md', fieldPaths(checker, typeOf('ClientOptions'), '', new Set(['WebSocket', 'shouldReconnect'])), page('docs/client.md')],
    ['docs/socket-and-stats.md', fieldPaths(checker, typeOf('Stats'), '', new Set(['closeCodes', 'closeCauses', 'routes'])), page('docs/socket-and-stats.md')]
  ]
  for (const [doc, paths, names] of cases) {
    t.ok(paths.length > 5, `${doc}: the types were walked (${paths.length} fields)`)
    const missing = paths.filter((path) => !names.has(path))
    t.same(missing, [], `${doc} has a row for every field`)
  }
})

// GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to hyphens; repeats get -1, -2…
function anchors (text: string): Set<string> {
  const found = new Set<string>()
  const seen = new Map<string, number>()
  let fenced = false
  for (const line of text.split('\n')) {
    if (/^ *```/.test(line)) fenced = !fenced
    if (fenced) continue
    for (const [, id] of line.matchAll(/<a id="([^"]+)"/g)) found.add(id)
    const heading = /^#{1,6} (.*)$/.exec(line)?.[1]
    if (heading === undefined) continue
    const slug = heading.toLowerCase().replace(/<[^>]*>/g, '').replace(/[^\p{L}\p{N}\- _]/gu, '').replace(/ /g, '-')
    const count = seen.get(slug) ?? 0
    seen.set(slug, count + 1)
    found.add(count === 0 ? slug : `${slug}-${count}`)
  }
  return found
}

t.test('every link between README.md and docs/ reaches a file, and a heading there', async (t) => {
  const texts = new Map(docs.map((doc) => [doc, readFileSync(join(root, doc), 'utf8')]))
  for (const [doc, text] of texts) {
    const prose = text.replace(/^ *```[\s\S]*?^ *```/gm, '')
    for (const [, target] of prose.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^[a-z]+:/.test(target)) continue
      const [path, anchor] = target.split('#')
      const file = path === '' ? doc : join(doc, '..', path).replace(/\\/g, '/')
      let exists = true
      try { readFileSync(join(root, file)) } catch { exists = false }
      t.ok(exists, `${doc}: ${target} (${file} exists)`)
      if (exists && anchor !== undefined && file.endsWith('.md')) {
        const text = texts.get(file) ?? readFileSync(join(root, file), 'utf8')
        t.ok(anchors(text).has(anchor), `${doc}: ${target} (a heading in ${file})`)
      }
    }
  }
})

// load-balancing.md explains deploy/nginx.conf piece by piece: a piece quoted there that the file no longer holds (or
// holds differently) would explain a configuration nobody runs.
t.test('every nginx line quoted in the docs is a line of deploy/nginx.conf', async (t) => {
  const deployed = new Set(readFileSync(join(root, 'deploy', 'nginx.conf'), 'utf8').split('\n').map((line) => line.trim()))
  const quoted = blocks.filter((block) => block.lang === 'nginx')
  t.ok(quoted.length >= 5, 'the docs quote the configuration')
  for (const block of quoted) {
    for (const line of block.code.split('\n').map((line) => line.trim()).filter(Boolean)) {
      t.ok(deployed.has(line), `${block.doc}:${block.line}: ${line}`)
    }
  }
})

t.test('every coded error and every source file is named in the docs', async (t) => {
  const errors = readFileSync(join(root, 'lib/core/errors.ts'), 'utf8').match(/'FST_RELIABLE_WS_[A-Z_]+'/g)!.map((code) => code.slice(1, -1))
  t.ok(errors.length >= 5, `${errors.length} error codes in lib/core/errors.ts`)
  const table = documentedNames(readFileSync(join(root, 'docs/socket-and-stats.md'), 'utf8'))
  t.same(errors.filter((code) => !table.has(code)), [], 'docs/socket-and-stats.md has a row for every error code')
  const layout = readFileSync(join(root, 'docs/development.md'), 'utf8')
  // Named by their path under lib/ (`core/symbols.ts`): one folder per layer, one level deep.
  const files = (readdirSync(join(root, 'lib'), { recursive: true }) as string[]).filter((name) => name.endsWith('.ts'))
  t.ok(files.length > 0 && files.every((name) => name.split('/').length === 2), 'lib/ holds folders one level deep')
  t.same(files.filter((name) => !layout.includes(`\`${name}\``)), [], 'docs/development.md names every file of lib/')
})
