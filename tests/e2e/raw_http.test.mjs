// Raw HTTP against a real mxserve: malformed requests, protocol errors, slow clients, a client that leaves
// mid-stream (its request is cancelled and its KV blocks freed), the 429 path, and an in-band error when the
// server shuts down under a running stream. The server must answer each with the right status and survive.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startServer, metric, waitFor } from './lib/server.mjs';

let server;

before(async () => {
  server = await startServer(['--max-body-bytes', '4096', '--header-timeout', '1', '--max-length', '2048']);
});

after(async () => {
  assert.equal((await server.stop()).code, 0);
});

// Sends raw bytes, returns everything the server sent until it closed (or until timeoutMs).
function rawExchange(port, bytes, { timeoutMs = 10000, endAfterWrite = false } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let data = '';
    const timer = setTimeout(() => {
      sock.destroy();
      resolve({ data, closed: false });
    }, timeoutMs);
    sock.on('connect', () => {
      sock.write(bytes);
      if (endAfterWrite) sock.end();
    });
    sock.on('data', (d) => (data += d.toString()));
    sock.on('close', () => {
      clearTimeout(timer);
      resolve({ data, closed: true });
    });
    sock.on('error', reject);
  });
}

const post = (path, body, headers = {}) =>
  fetch(`${server.base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });

async function expectErrorAt(base, body, status) {
  const res = await fetch(`${base}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return expectError(res, status);
}

async function expectError(res, status, param) {
  assert.equal(res.status, status);
  const j = await res.json();
  assert.ok(j.error, 'OpenAI error envelope');
  for (const k of ['message', 'type', 'param', 'code']) assert.ok(k in j.error, `error.${k} present`);
  assert.equal(typeof j.error.message, 'string');
  if (param !== undefined) assert.equal(j.error.param, param);
  return j.error;
}

test('malformed JSON and wrong shapes are 400s', async () => {
  await expectError(await post('/v1/chat/completions', '{"messages": [}'), 400);
  await expectError(await post('/v1/chat/completions', '[1, 2, 3]'), 400);
  await expectError(await post('/v1/chat/completions', ''), 400);
  await expectError(await post('/v1/chat/completions', '{"messages": "hi"}'), 400, 'messages');
  await expectError(await post('/v1/chat/completions', '{"messages": [{"role": "user", "content": 5}]}'), 400);
  await expectError(await post('/v1/chat/completions', JSON.stringify({ messages: [{ role: 'user', content: 'x' }], max_tokens: 'ten' })), 400, 'max_tokens');
  await expectError(await post('/v1/completions', '{"prompt": {"a": 1}}'), 400, 'prompt');
  await expectError(await post('/v1/completions', '{"prompt": [999999999]}'), 400, 'prompt');
  await expectError(await post('/v1/chat/completions', '['.repeat(3000)), 400);
  // Invalid UTF-8 inside a JSON string: an error, not a crash.
  const bad = Buffer.concat([Buffer.from('{"messages":[{"role":"user","content":"'), Buffer.from([0xff, 0xfe]), Buffer.from('"}],"max_tokens":2}')]);
  assert.ok([200, 400].includes((await post('/v1/chat/completions', bad)).status));
  assert.equal((await fetch(`${server.base}/health`)).status, 200);
});

test('mutated requests never crash the server: each gets 200 or an OpenAI error', async () => {
  const base = {
    model: server.model, max_tokens: 1, max_completion_tokens: 1, temperature: 0.5, top_p: 0.9, stream: false,
    messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }],
    tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { a: { type: 'string' } } } } }],
    tool_choice: 'auto', stop: ['x'], logprobs: false, reasoning_effort: 'low',
  };
  const weird = [null, true, -1, 0, 1e308, -1e308, 2 ** 53, 'str', '', [], {}, [1, 'a'], { a: { b: [] } }, '\u0000', 'é😀'];
  let seed = 12345;
  const rand = (n) => ((seed = (seed * 1103515245 + 12345) % 2147483648) % n);
  // Every path to a value inside `obj` (objects and arrays), for picking a mutation site.
  const paths = (obj, prefix = []) => Object.entries(obj).flatMap(([k, v]) =>
    [[...prefix, k], ...(v && typeof v === 'object' ? paths(v, [...prefix, k]) : [])]);
  let served = 0;
  for (let i = 0; i < 150; ++i) {
    const body = structuredClone(base);
    const all = paths(body).filter((p) => !(p.length === 1 && (p[0] === 'max_tokens' || p[0] === 'max_completion_tokens')));
    const path = all[rand(all.length)];
    let parent = body;
    for (const k of path.slice(0, -1)) parent = parent[k];
    if (rand(4) === 0) delete parent[path.at(-1)];
    else parent[path.at(-1)] = weird[rand(weird.length)];
    const res = await post('/v1/chat/completions', JSON.stringify(body));
    if (res.status === 200) {
      served++;
      const text = await res.text();  // JSON, or SSE when `stream` was mutated to true
      assert.ok(text.startsWith('{') || text.trimEnd().endsWith('data: [DONE]'), text);
    } else {
      assert.ok([400, 404].includes(res.status), `${res.status} for ${JSON.stringify(body)}`);
      const j = await res.json();
      assert.equal(typeof j.error.message, 'string');
    }
  }
  assert.ok(served > 0 && served < 150);
  assert.equal((await fetch(`${server.base}/health`)).status, 200);
});

test('unknown route 404, wrong method 405, body too large 413', async () => {
  await expectError(await fetch(`${server.base}/v1/nothing`), 404);
  const r405 = await fetch(`${server.base}/v1/chat/completions`);
  await expectError(r405, 405);
  assert.equal(r405.headers.get('allow'), 'POST');
  await expectError(await post('/v1/chat/completions', JSON.stringify({ messages: [{ role: 'user', content: 'x'.repeat(8000) }] })), 413);
});

test('garbage bytes and broken HTTP get 400 or a close, never a crash', async () => {
  const r1 = await rawExchange(server.port, 'THIS IS NOT HTTP\r\n\r\n');
  assert.ok(r1.closed);
  assert.ok(r1.data === '' || /^HTTP\/1\.1 400/.test(r1.data), r1.data);
  const r2 = await rawExchange(server.port, 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n');
  assert.match(r2.data, /^HTTP\/1\.1 400/);
  const r3 = await rawExchange(server.port, 'GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ' + 'a'.repeat(100000) + '\r\n\r\n');
  assert.match(r3.data, /^HTTP\/1\.1 431/);
  assert.equal((await fetch(`${server.base}/health`)).status, 200);
});

test('keep-alive serves several requests on one connection, pipelined too', async () => {
  const req = 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n';
  const r = await rawExchange(server.port, req + req + 'GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  assert.equal((r.data.match(/HTTP\/1\.1 200/g) || []).length, 3);
  assert.ok(r.closed);
});

test('slow client: headers not finished within --header-timeout are dropped', async () => {
  const t0 = Date.now();
  const r = await rawExchange(server.port, 'POST /v1/completions HTTP/1.1\r\nHost: x\r\n', { timeoutMs: 8000 });
  assert.ok(r.closed, 'server closed the connection');
  assert.ok(Date.now() - t0 < 5000);
  // A slow body (headers complete, body trickling) is dropped too.
  const r2 = await rawExchange(server.port, 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"pro', { timeoutMs: 8000 });
  assert.ok(r2.closed);
  assert.equal((await fetch(`${server.base}/health`)).status, 200);
});

// POSTs `body` to `path` on a raw connection and leaves (destroys the socket) once done(everything received) holds.
function postAndLeave(path, body, done) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(server.port, '127.0.0.1', () => {
      sock.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
    let got = '';
    sock.on('data', (d) => {
      got += d.toString();
      if (done(got)) {
        sock.destroy();
        resolve();
      }
    });
    sock.on('error', reject);
  });
}

test('a client leaving mid-stream cancels its request and frees its KV blocks', async () => {
  const cancelledBefore = await metric(server.base, 'mxserve_requests_cancelled_total');
  const body = JSON.stringify({ prompt: 'Tell me a long story', max_tokens: 1500, stream: true, temperature: 1 });
  await postAndLeave('/v1/completions', body, (got) => (got.match(/data: /g) || []).length >= 3);  // mid-stream
  await waitFor(async () => (await metric(server.base, 'mxserve_requests_cancelled_total')) > cancelledBefore, 10000, 'cancellation');
  await waitFor(async () => (await metric(server.base, 'mxserve_engine_requests_running')) === 0, 10000, 'engine idle');
  assert.equal(await metric(server.base, 'mxserve_kv_cache_blocks_used'), 0, 'every KV block returned');
  assert.ok((await metric(server.base, 'mxserve_engine_generation_tokens_total')) < 1500 + 200, 'generation stopped early');
});

test('a client leaving before a non-streaming answer cancels it too', async () => {
  const cancelledBefore = await metric(server.base, 'mxserve_requests_cancelled_total');
  const body = JSON.stringify({ messages: [{ role: 'user', content: 'Write a lot' }], max_tokens: 1500 });
  const sock = net.connect(server.port, '127.0.0.1', () => {
    sock.write(`POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  });
  await waitFor(async () => (await metric(server.base, 'mxserve_engine_requests_running')) === 1, 10000, 'request running');
  sock.destroy();
  await waitFor(async () => (await metric(server.base, 'mxserve_requests_cancelled_total')) > cancelledBefore, 10000, 'cancellation');
  await waitFor(async () => (await metric(server.base, 'mxserve_engine_requests_running')) === 0, 10000, 'engine idle');
  assert.equal(await metric(server.base, 'mxserve_kv_cache_blocks_used'), 0);
});

test('a client leaving an n = 4 stream cancels every choice and frees their KV blocks', async () => {
  const cancelledBefore = await metric(server.base, 'mxserve_requests_cancelled_total');
  const body = JSON.stringify({ prompt: 'Tell me four long stories', max_tokens: 1500, stream: true, temperature: 1, n: 4 });
  // Leave once every choice is streaming.
  await postAndLeave('/v1/completions', body, (got) => new Set([...got.matchAll(/"index":(\d)/g)].map((m) => m[1])).size === 4);
  await waitFor(async () => (await metric(server.base, 'mxserve_requests_cancelled_total')) > cancelledBefore, 10000, 'cancellation');
  await waitFor(async () => (await metric(server.base, 'mxserve_engine_requests_running')) === 0, 10000, 'every choice stopped');
  assert.equal(await metric(server.base, 'mxserve_kv_cache_blocks_used'), 0, 'every KV block returned');
  assert.equal(await metric(server.base, 'mxserve_requests_active'), 0);
});

test('429 with Retry-After when the waiting queue is full', async () => {
  const small = await startServer(['--max-queued-requests', '1', '--max-batch-size', '1']);
  try {
    const body = JSON.stringify({ prompt: 'Count with me', max_tokens: 40 });
    const results = await Promise.all(Array.from({ length: 6 }, () =>
      fetch(`${small.base}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
        .then(async (r) => ({ status: r.status, retry: r.headers.get('retry-after'), body: await r.json() }))));
    const rejected = results.filter((r) => r.status === 429);
    const ok = results.filter((r) => r.status === 200);
    assert.ok(rejected.length >= 1, `some requests are refused: ${results.map((r) => r.status)}`);
    assert.ok(ok.length >= 1, 'some requests are served');
    for (const r of rejected) {
      assert.equal(r.retry, '1');
      assert.equal(r.body.error.type, 'rate_limit_error');
    }
    assert.ok((await metric(small.base, 'mxserve_requests_rejected_total')) >= rejected.length);
    // A request whose n choices the queue can never hold is a 400 naming n, before any choice starts.
    const e = await expectErrorAt(small.base, { prompt: 'x', max_tokens: 2, n: 2 }, 400);
    assert.equal(e.param, 'n');
    // Once the queue drains, requests are accepted again.
    const again = await fetch(`${small.base}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x', max_tokens: 2 }) });
    assert.equal(again.status, 200);
  } finally {
    assert.equal((await small.stop()).code, 0);
  }
});

test('shutdown under a running stream: in-band error, [DONE], clean exit', async () => {
  const s = await startServer(['--shutdown-timeout', '0.3']);
  const res = await fetch(`${s.base}/v1/chat/completions`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content: 'Go on forever' }], max_tokens: 3000, stream: true }),
  });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  let text = '';
  const first = await reader.read();
  text += Buffer.from(first.value).toString();
  const stopped = s.stop();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += Buffer.from(value).toString();
  }
  const { code } = await stopped;
  assert.equal(code, 0);
  const events = text.split('\n\n').filter((e) => e.startsWith('data: '));
  assert.equal(events.at(-1), 'data: [DONE]');
  const err = JSON.parse(events.at(-2).slice(6));
  assert.ok(err.error, 'the last JSON event is an error');
  assert.equal(err.error.type, 'server_error');
});
