// `mxserve bench serve` against a real demo server: a small run at concurrency 1 and 4 must complete every
// request and print the markdown table and JSON with the vLLM-style metrics; a run whose prompts the server
// rejects must list each failure with its HTTP status and message; --ignore-eos and --response-format reach the server.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { startServer, binaryPath } from './lib/server.mjs';

const run = promisify(execFile);
let server, dir;

before(async () => {
  server = await startServer(['--max-length', '256']);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mxs-bench-serve-'));
});

after(async () => {
  fs.rmSync(dir, { recursive: true, force: true });
  assert.equal((await server.stop()).code, 0);
});

async function bench(args) {
  const json = path.join(dir, `out-${Math.random().toString(36).slice(2)}.json`);
  const { stdout } = await run(binaryPath(), ['bench', 'serve', '--url', server.base, '--json', json, '--timeout', '30', ...args],
                               { timeout: 50000 });
  return { stdout, report: JSON.parse(fs.readFileSync(json, 'utf8')) };
}

const DIST = ['count', 'mean_ms', 'median_ms', 'p90_ms', 'p99_ms'];

for (const endpoint of ['chat', 'completions']) {
  test(`${endpoint}: 8 prompts at concurrency 1 and 4 all complete, with every metric`, async () => {
    const { stdout, report } = await bench(['--endpoint', endpoint, '--concurrency', '1,4', '--num-prompts', '8',
                                            '--input-len', '16', '--output-len', '8', '--goodput', 'ttft:60000,tpot:60000']);
    for (const row of ['Completed requests', 'Failed requests', 'Request throughput (req/s)', 'Output throughput (tok/s)',
                       'Total throughput (tok/s)', 'Peak output throughput (tok/s)', 'Goodput (req/s)', 'TTFT mean (ms)',
                       'TTFT p99 (ms)', 'TPOT median (ms)', 'ITL p90 (ms)', 'E2E latency mean (ms)', 'Time to first answer token mean (ms)'])
      assert.match(stdout, new RegExp(`^\\| ${row.replace(/[()]/g, '\\$&')} \\|`, 'm'), `table row ${row}`);
    assert.match(stdout, /^\| Metric \| c=1 \| c=4 \|$/m);
    assert.doesNotMatch(stdout, /## Failed requests/);
    assert.equal(report.model, server.model);
    assert.equal(report.levels.length, 2);
    assert.deepEqual(report.levels.map((l) => l.concurrency), [1, 4]);
    for (const l of report.levels) {
      assert.equal(l.failed, 0, JSON.stringify(l.failures));
      assert.equal(l.completed, 8);
      assert.deepEqual(l.failures, []);
      // No ignore_eos: a request may stop early, never past max_tokens.
      assert.ok(l.total_output_tokens >= 8 && l.total_output_tokens <= 64, `output tokens ${l.total_output_tokens}`);
      assert.ok(l.total_input_tokens >= 8 * 16, `input tokens ${l.total_input_tokens}`);
      for (const k of ['duration_s', 'request_throughput', 'output_throughput', 'total_token_throughput'])
        assert.ok(l[k] > 0, `${k} = ${l[k]}`);
      assert.ok(l.total_token_throughput > l.output_throughput);
      for (const m of ['ttft', 'tpot', 'itl', 'e2el', 'ttfa']) for (const k of DIST) assert.equal(typeof l[m][k], 'number', `${m}.${k}`);
      assert.equal(l.e2el.count, 8);
      assert.ok(l.e2el.median_ms <= l.e2el.p90_ms && l.e2el.p90_ms <= l.e2el.p99_ms);
      if (endpoint === 'completions') {
        // Raw text streams chunk by chunk: every request has a TTFT, and all of its text is answer.
        assert.equal(l.ttft.count, 8);
        assert.equal(l.ttfa.count, 8);
        assert.ok(l.tpot.count > 0 && l.itl.count > 0);
        assert.ok(l.ttft.mean_ms > 0 && l.ttft.mean_ms <= l.e2el.mean_ms);
        assert.ok(l.ttft.median_ms <= l.ttft.p90_ms && l.ttft.p90_ms <= l.ttft.p99_ms);
        assert.ok(l.peak_output_throughput > 0);
        assert.ok(l.goodput > 0 && l.goodput <= l.request_throughput + 1e-9, `goodput ${l.goodput}`);
        assert.equal(l.total_reasoning_tokens, 0);
      } else {
        // The random demo model rarely forms harmony text: a chat request may stream no text at all, and then
        // has no TTFT (the server's usage still counts its tokens).
        assert.ok(l.ttft.count <= 8 && l.ttfa.count <= l.ttft.count);
        assert.ok(l.total_reasoning_tokens >= 0 && l.total_reasoning_tokens <= l.total_output_tokens);
        assert.ok(l.goodput >= 0 && l.goodput <= l.request_throughput + 1e-9, `goodput ${l.goodput}`);
      }
    }
  });
}

test('--ignore-eos: every request generates --output-len tokens; --response-format json_object is sent', async () => {
  const { report } = await bench(['--endpoint', 'completions', '--concurrency', '4', '--num-prompts', '8',
                                  '--input-len', '16', '--output-len', '8', '--ignore-eos']);
  assert.equal(report.levels[0].failed, 0);
  assert.equal(report.levels[0].total_output_tokens, 8 * 8);
  // json_object: the server constrains every answer (it ends when its object closes, never past max_tokens); with
  // --ignore-eos the server refuses it, which shows the field reached it.
  const json = await bench(['--endpoint', 'completions', '--concurrency', '4', '--num-prompts', '4', '--input-len', '16',
                            '--output-len', '8', '--temperature', '1', '--response-format', 'json_object']);
  assert.equal(json.report.levels[0].failed, 0);
  assert.ok(json.report.levels[0].total_output_tokens <= 4 * 8);
  const refused = await bench(['--concurrency', '2', '--num-prompts', '2', '--input-len', '16', '--output-len', '8',
                               '--response-format', 'json_object', '--ignore-eos']);
  assert.equal(refused.report.levels[0].failed, 2);
  for (const f of refused.report.levels[0].failures) assert.match(f.error, /ignore_eos/);
});

test('rejected requests are listed with status and message', async () => {
  // 400 words do not fit --max-length 256: every request is a 400.
  const { stdout, report } = await bench(['--concurrency', '2', '--num-prompts', '3', '--input-len', '400', '--output-len', '4']);
  const l = report.levels[0];
  assert.equal(l.completed, 0);
  assert.equal(l.failed, 3);
  for (const f of l.failures) {
    assert.equal(f.status, 400);
    assert.ok(f.error.length > 0);
  }
  assert.match(stdout, /## Failed requests/);
  assert.match(stdout, /^\| 2 \| 0 \| 400 \| .+ \|$/m);
});

test('a bad --url is a clear error', async () => {
  await assert.rejects(run(binaryPath(), ['bench', 'serve', '--url', 'https://127.0.0.1:1']), (e) => {
    assert.notEqual(e.code, 0);
    assert.match(e.stderr, /https is not supported/);
    return true;
  });
});
