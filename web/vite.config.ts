// The app is served by Keyhold itself (src/keyhold/api/web.py) from dist/: no dev server in
// production, no CDN. Hashed asset names let the server cache them for a year.
import { defineConfig } from "vite";

export default defineConfig({
  base: "/",
  build: {
    outDir: "dist",
    assetsDir: "assets",
    target: "es2022",
    sourcemap: false,
    // The wasm crypto core is its own chunk, fetched only when a member opens an e2ee conversation.
    chunkSizeWarningLimit: 6000,
    rolldownOptions: {
      output: {
        codeSplitting: {
          // The verifiers (src/verify, but its lazily loaded AccessHistory page) are one chunk,
          // shared by the access history, the staff and public pages and the e2ee key log:
          // one chunk to preload, not one per subset of its importers.
          groups: [{ name: "access", test: /[\\/]src[\\/]verify[\\/](?!AccessHistory)/, includeDependenciesRecursively: false }],
        },
      },
    },
  },
});
