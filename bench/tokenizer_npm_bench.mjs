// Baselines for bench/text_tokenizer_bench.cpp, on the same text file: npm gpt-tokenizer (o200k_harmony and
// o200k_base, pure JS) encode MB/s on one thread; with --hf TOKENIZER_JSON also HF tokenizers' Rust core
// through its npm binding (one encode call: one thread). Packages pinned in bench/package.json, installed outside the tree:
//   mkdir -p .cache/npm-bench && cp bench/package.json bench/package-lock.json .cache/npm-bench/ &&
//   npm ci --prefix .cache/npm-bench
//   node bench/tokenizer_npm_bench.mjs TEXT_FILE [--modules .cache/npm-bench/node_modules]
// gpt-tokenizer keeps its default merge cache (what its users get); the text is the C++ bench's corpus,
// which repeats its documents, so that cache is warm after the first pass.
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const mi = args.indexOf("--modules");
const modules = mi >= 0 ? args.splice(mi, 2)[1] : path.join(root, ".cache/npm-bench/node_modules");
const hi = args.indexOf("--hf");
const hfJson = hi >= 0 ? args.splice(hi, 2)[1] : null;
if (args.length !== 1) {
  console.error("usage: node bench/tokenizer_npm_bench.mjs TEXT_FILE [--modules DIR] [--hf TOKENIZER_JSON]");
  process.exit(2);
}
const req = createRequire(path.join(path.resolve(modules), "resolver.js"));
let version;
try {
  version = JSON.parse(fs.readFileSync(path.join(modules, "gpt-tokenizer/package.json"))).version;
} catch {
  console.error(`gpt-tokenizer not found under ${modules}; install it as the comment at the top of this file says`);
  process.exit(1);
}
const text = fs.readFileSync(args[0], "utf8");
const mb = Buffer.byteLength(text, "utf8") / 1e6;
for (const enc of ["o200k_harmony", "o200k_base"]) {
  const api = await import(pathToFileURL(req.resolve(`gpt-tokenizer/encoding/${enc}`)).href);
  const opts = { disallowedSpecial: new Set() };  // special-token strings in the text are plain text
  let best = Infinity;
  let n = 0;
  for (let rep = 0; rep < 5; rep++) {
    const t0 = process.hrtime.bigint();
    n = api.encode(text, opts).length;
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  console.log(`gpt-tokenizer ${version} ${enc} encode: ${(mb / best).toFixed(1)} MB/s, ` +
              `${(n / best / 1e6).toFixed(2)} M tokens/s, ${n} tokens (best of 5, node ${process.version})`);
}
if (hfJson) {
  const hfLib = (await import(pathToFileURL(req.resolve("tokenizers")).href)).default;
  const hfVersion = JSON.parse(fs.readFileSync(path.join(modules, "tokenizers/package.json"))).version;
  const raw = JSON.parse(fs.readFileSync(hfJson, "utf8"));
  const hf = hfLib.Tokenizer.fromString(JSON.stringify({ ...raw, added_tokens: [] }));  // specials as text
  let best = Infinity;
  let n = 0;
  for (let rep = 0; rep < 5; rep++) {
    const t0 = process.hrtime.bigint();
    n = (await hf.encode(text, null, { addSpecialTokens: false })).getIds().length;
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  console.log(`HF tokenizers ${hfVersion} (Rust, npm binding) encode: ${(mb / best).toFixed(1)} MB/s, ` +
              `${(n / best / 1e6).toFixed(2)} M tokens/s, ${n} tokens (best of 5)`);
}
