'use strict'

// The direction of lib/'s imports (npm run test:deps; docs/development.md, "Architecture"). Type-only imports count:
// a cycle through types is still a cycle for whoever reads the code.

// The server's layers, lowest first: a folder may import its own files and the folders below it, never one above.
const layers = ['core', 'timing', 'observability', 'limits', 'messages', 'redis', 'sessions', 'topics', 'wiring']

const upward = layers.slice(0, -1).map((layer, i) => ({
  name: `${layer}-not-upward`,
  comment: `lib/${layer}/ sits below ${layers.slice(i + 1).join(', ')}: it must not import them (nor index.ts).`,
  severity: 'error',
  from: { path: `^lib/${layer}/` },
  to: { path: `^(lib/(${layers.slice(i + 1).join('|')})/|index\\.ts$)` }
}))

module.exports = {
  forbidden: [
    {
      name: 'no-cycle',
      comment: 'Imports go one way: no module reaches itself again, through runtime or type-only imports.',
      severity: 'error',
      from: {},
      to: { circular: true }
    },
    {
      name: 'protocol-imports-nothing',
      comment: 'lib/protocol/ is bundled into the browser client: it imports nothing, from Node or from the server.',
      severity: 'error',
      from: { path: '^lib/protocol/' },
      to: { pathNot: '^lib/protocol/' }
    },
    {
      name: 'client-imports-protocol-only',
      comment: 'lib/client/ runs in browsers: it imports its own files and lib/protocol/, nothing else.',
      severity: 'error',
      from: { path: '^lib/client/' },
      to: { pathNot: '^lib/(client|protocol)/' }
    },
    {
      name: 'server-not-client',
      comment: 'The server shares lib/protocol/ with the client, never the client itself.',
      severity: 'error',
      from: { path: `^lib/(${layers.join('|')})/` },
      to: { path: '^lib/client/' }
    },
    {
      name: 'lib-not-index',
      comment: 'index.ts wires lib/; nothing in lib/ imports it.',
      severity: 'error',
      from: { path: '^lib/' },
      to: { path: '^index\\.ts$' }
    },
    ...upward
  ],
  options: {
    // Type-only imports are dependencies too.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.build.json' },
    // types/ is the public declaration: lib may name it (so the rules see it), but its own imports are not lib's.
    doNotFollow: { path: ['node_modules', '^types/'] },
    exclude: { path: '^(dist|test|bench|examples)/' }
  }
}
