/**
 * dependency-cruiser's rules for lib/ (`npm run check:cycles`; test/import-cycles.test.ts runs the same check in
 * `npm test`). Type-only imports count: a cycle through types is still a cycle of modules to read.
 */
module.exports = {
  forbidden: [
    {
      name: "no-circular",
      severity: "error",
      comment: "lib/ has no import cycle: the layers (checkpoint, engine, text, serve, cli) and the public modules import one way",
      from: {},
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
  },
};
