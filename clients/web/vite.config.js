// Builds clients/web into dist/: index.html plus assets/ whose names carry a content
// hash (cache them forever; only index.html must be revalidated). Relative URLs
// (base "./") let the folder be served from any path: /web/ by `taskapi dev`, a CDN
// bucket, or Envoy. Runs offline: everything comes from node_modules.
import { fileURLToPath } from "node:url";

import { defineConfig } from "vite";

export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  base: "./",
  logLevel: "warn",
  // JSX through Vite's own transformer (Oxc), for Preact: no Babel, no plugin.
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    // The module-preload polyfill is for browsers we do not support; it would also be inline code.
    modulePreload: { polyfill: false },
    reportCompressedSize: false,
  },
});
