// Builds the web app into web/dist (or the directory given as the first
// argument): app/src/main.ts with the client library bundled from its
// sources, app/src/style.css, both minified with content-hashed names, and
// index.html naming them. The output is deterministic: the same sources
// give the same bytes (TestBundleFresh in web/ relies on it).
import * as esbuild from "esbuild";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, basename } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ? process.argv[2] : join(here, "..", "dist");

const result = await esbuild.build({
  entryPoints: [join(here, "src", "main.ts"), join(here, "src", "style.css")],
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2020", "chrome100", "firefox100", "safari15"],
  alias: { "@parley/client": join(here, "..", "client", "src", "index.ts") },
  entryNames: "[name]-[hash]",
  outdir: join(out, "assets"),
  write: false,
  legalComments: "none",
  charset: "utf8",
  logLevel: "warning",
});

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "assets"), { recursive: true });
const names = {};
for (const f of result.outputFiles) {
  writeFileSync(f.path, f.contents);
  names[f.path.endsWith(".css") ? "css" : "js"] = basename(f.path);
}
// The service worker keeps a fixed name (/sw.js): browsers look for
// updates of a registration at its URL.
const sw = await esbuild.build({
  entryPoints: [join(here, "src", "sw.ts")],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020"],
  write: false,
  legalComments: "none",
  charset: "utf8",
  logLevel: "warning",
});
writeFileSync(join(out, "sw.js"), sw.outputFiles[0].contents);

const html = readFileSync(join(here, "index.html"), "utf8").replace(/\{\{(js|css)\}\}/g, (_, k) => names[k]);
writeFileSync(join(out, "index.html"), html);

if (!process.argv[2]) {
  for (const f of result.outputFiles) {
    console.log(`${basename(f.path)}: ${f.contents.length} bytes, ${gzipSync(f.contents, { level: 9 }).length} gzipped`);
  }
}
