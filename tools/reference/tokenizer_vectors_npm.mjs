// Writes tests/data/tokenizer_vectors.jsonl in the format of tokenizer_vectors.py without Python: the oracle is
// npm `tokenizers` (Hugging Face's own Rust library through its Node binding, same version as the Python
// wheel), so the ids are HF's:
//   "ids"               HF with the added tokens removed from the JSON (special strings are plain text, like
//                       Python's encode_special_tokens=True);
//   "ids_with_specials" HF as loaded (added tokens recognized), written when it differs.
// Two independent JS tokenizers are cross-checked on "ids" and every disagreement is printed (not fatal:
// they differ from HF by design on a few code points, e.g. JS \s matches U+FEFF):
//   gpt-tokenizer o200k_harmony (tiktoken ranks) and @lenml/tokenizers (transformers.js BPE).
// Usage (packages pinned in bench/package.json, installed outside the tree):
//   mkdir -p .cache/npm-bench && cp bench/package.json bench/package-lock.json .cache/npm-bench/ &&
//   npm ci --prefix .cache/npm-bench
//   node tools/reference/tokenizer_vectors_npm.mjs TOKENIZER_JSON [--modules .cache/npm-bench/node_modules]
//        [--strings tools/reference/tokenizer_strings.json] [-o tests/data/tokenizer_vectors.jsonl]
import crypto from "node:crypto";
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..", "..");
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const modules = opt("--modules", path.join(root, ".cache/npm-bench/node_modules"));
const stringsPath = opt("--strings", path.join(here, "tokenizer_strings.json"));
const outPath = opt("-o", path.join(root, "tests/data/tokenizer_vectors.jsonl"));
if (args.length !== 1) {
  console.error("usage: node tokenizer_vectors_npm.mjs TOKENIZER_JSON [--modules DIR] [--strings F] [-o OUT]");
  process.exit(2);
}
const tokenizerPath = args[0];

const req = createRequire(path.join(path.resolve(modules), "resolver.js"));
const load = async (spec) => import(pathToFileURL(req.resolve(spec)).href);
const hfLib = (await load("tokenizers")).default;
const gptTok = await load("gpt-tokenizer/encoding/o200k_harmony");
const { TokenizerLoader } = await load("@lenml/tokenizers");
const version = (pkg) => JSON.parse(fs.readFileSync(path.join(modules, pkg, "package.json"))).version;

const raw = fs.readFileSync(tokenizerPath);
const sha = crypto.createHash("sha256").update(raw).digest("hex");
const json = JSON.parse(raw);
const hf = hfLib.Tokenizer.fromString(raw.toString("utf8"));
const hfPlain = hfLib.Tokenizer.fromString(JSON.stringify({ ...json, added_tokens: [] }));
const configPath = path.join(path.dirname(tokenizerPath), "tokenizer_config.json");
const lenml = TokenizerLoader.fromPreTrained({
  tokenizerJSON: json,
  tokenizerConfig: fs.existsSync(configPath) ? JSON.parse(fs.readFileSync(configPath)) : {},
});
const specials = json.added_tokens.map((t) => t.content);

const strings = JSON.parse(fs.readFileSync(stringsPath, "utf8")).strings;
const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const encodeHf = async (tok, text) => (await tok.encode(text, null, { addSpecialTokens: false })).getIds();
const records = [];
const disagreements = { "gpt-tokenizer": 0, "@lenml/tokenizers": 0 };
for (const { category, text } of strings) {
  const ids = await encodeHf(hfPlain, text);
  const idsSp = await encodeHf(hf, text);
  const rec = { category, text, ids };
  if (!same(idsSp, ids)) rec.ids_with_specials = idsSp;
  records.push(rec);
  const hasSpecial = specials.some((s) => text.includes(s));
  const others = { "gpt-tokenizer": gptTok.encode(text, { disallowedSpecial: new Set() }) };
  if (!hasSpecial) others["@lenml/tokenizers"] = lenml.encode(text, { add_special_tokens: false });
  for (const [name, got] of Object.entries(others)) {
    if (same(got, ids)) continue;
    disagreements[name]++;
    console.error(`${name} differs from HF on ${JSON.stringify(text)}:\n  HF ${ids}\n  ${name} ${got}`);
  }
}
const header = {
  oracle: `hf-tokenizers ${version("tokenizers")} (npm native binding)`,
  cross_checked: Object.entries(disagreements).map(([n, d]) => `${n} ${version(n)}: ${d} differ`).join("; "),
  tokenizer_sha256: sha,
  count: records.length,
};
// JSON.stringify leaves non-ASCII as is; escape it to match Python's ensure_ascii output byte for byte.
const ascii = (s) => s.replace(/[\u007f-\uffff]/g, (c) => "\\u" + c.charCodeAt(0).toString(16).padStart(4, "0"));
fs.writeFileSync(outPath, [header, ...records].map((r) => ascii(JSON.stringify(r)) + "\n").join(""));
console.log(`wrote ${records.length} vectors to ${outPath} (${header.oracle})`);
