// Prints the minified and gzipped size of the library as an app bundles it
// (everything exported, @msgpack/msgpack included).
import * as esbuild from "esbuild";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
for (const [name, contents] of [
  ["everything", `export * from ${JSON.stringify(join(here, "src", "index.ts"))};`],
  ["Client only", `export { Client } from ${JSON.stringify(join(here, "src", "index.ts"))};`],
]) {
  const r = await esbuild.build({ stdin: { contents, resolveDir: here, loader: "ts" }, bundle: true, minify: true, format: "esm", write: false, target: "es2020" });
  const b = r.outputFiles[0].contents;
  console.log(`${name}: ${b.length} bytes minified, ${gzipSync(b, { level: 9 }).length} bytes gzipped`);
}
