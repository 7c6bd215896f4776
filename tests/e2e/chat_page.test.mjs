// The chat page at GET / in headless Chromium (Debian `chromium`, driven by playwright-core): it loads with
// no external resource, shows the model name, streams text (counted in the stats line), and Stop aborts the
// request: the page returns to idle and the server cancels it (0 running); a chat turn sends the chosen
// reasoning effort and ends by itself. Set MXS_SKIP_BROWSER=1 to
// skip where chromium is not installed (CI installs it with scripts/install-deps.sh).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, metric, waitFor } from './lib/server.mjs';

const CHROMIUM = process.env.MXS_CHROMIUM || '/usr/bin/chromium';
const skip = !fs.existsSync(CHROMIUM) && process.env.MXS_SKIP_BROWSER === '1';

let server, context, page, dir;
const foreign = [];  // requests that left the server's origin

before(async () => {
  if (skip) return;
  if (!fs.existsSync(CHROMIUM))
    throw new Error(`${CHROMIUM} not found: install the Debian package chromium (scripts/install-deps.sh does), ` +
                    'or set MXS_SKIP_BROWSER=1 to skip the browser test');
  const { chromium } = await import('playwright-core');
  server = await startServer(['--max-length', '4096']);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mxs-chat-page-'));
  context = await chromium.launchPersistentContext(path.join(dir, 'profile'), {
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
    viewport: { width: 1100, height: 750 },
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.on('request', (r) => { if (!r.url().startsWith(server.base)) foreign.push(r.url()); });
});

after(async () => {
  if (skip) return;
  await context?.close();
  if (server) assert.equal((await server.stop()).code, 0);
  if (process.env.MXS_KEEP_SCREENSHOT) console.log(`screenshot kept in ${dir}`);
  else if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const state = () => page.evaluate(() => document.body.dataset.state);
const lastTokens = () => page.evaluate(() => Number(document.querySelector('#log .assistant:last-of-type .stats')?.dataset.tokens || 0));

test('the page loads self-contained, with the model name and the controls', { skip }, async () => {
  const res = await page.goto(server.base + '/');
  assert.equal(res.status(), 200);
  assert.match(res.headers()['content-type'], /^text\/html/);
  await page.waitForFunction((m) => document.getElementById('model').textContent === m, server.model, { timeout: 10000 });
  assert.deepEqual(await page.$$eval('#effort option', (os) => os.map((o) => o.value)), ['low', 'medium', 'high']);
  assert.equal(await page.getByRole('button', { name: 'Send' }).isEnabled(), true);
  assert.equal(await page.getByRole('button', { name: 'Stop' }).isDisabled(), true);
  assert.equal(await page.getByLabel('Message').count(), 1);
  assert.equal(await state(), 'idle');
});

test('a raw completion streams text, then Stop cancels it', { skip }, async () => {
  // The random demo model seldom forms harmony text in chat, so the streaming + stop path uses the page's raw
  // completion mode (/v1/completions), whose text always streams.
  await page.check('#raw');
  await page.fill('#max-tokens', '3000');  // far more than the test waits for: only Stop ends it
  await page.getByLabel('Message').fill('The lighthouse keeper climbed the stairs');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => document.body.dataset.state === 'streaming', null, { timeout: 5000 });
  await page.waitForFunction(() => {
    const a = document.querySelector('#log .assistant:last-of-type');
    return Number(a.querySelector('.stats').dataset.tokens || 0) >= 5 && a.querySelector('.answer').textContent.length > 0;
  }, null, { timeout: 20000 });
  assert.equal(await state(), 'streaming');
  assert.equal(await metric(server.base, 'mxserve_engine_requests_running'), 1);
  assert.match(await page.textContent('#log .assistant:last-of-type .stats'), /^\d+ tokens · [\d.]+ tok\/s/);
  await page.screenshot({ path: path.join(dir, 'chat-streaming.png') });

  await page.getByRole('button', { name: 'Stop' }).click();
  await page.waitForFunction(() => document.body.dataset.state === 'idle', null, { timeout: 5000 });
  assert.equal(await page.textContent('#status'), 'Stopped');
  assert.match(await page.textContent('#log .assistant:last-of-type .stats'), /stopped/);
  const stoppedAt = await lastTokens();
  assert.ok(stoppedAt >= 5 && stoppedAt < 3000, `tokens at stop: ${stoppedAt}`);
  await waitFor(async () => (await metric(server.base, 'mxserve_engine_requests_running')) === 0, 10000, '0 running requests');
  await waitFor(async () => (await metric(server.base, 'mxserve_http_in_flight_requests')) === 1, 10000,
                'the request to end (the /metrics request itself is the one in flight)');
  assert.equal(await page.getByRole('button', { name: 'Send' }).isEnabled(), true);
});

test('a chat turn with reasoning effort low ends by itself with its token count', { skip }, async () => {
  await page.uncheck('#raw');
  await page.selectOption('#effort', 'low');
  await page.fill('#max-tokens', '16');
  let sent;
  page.once('request', (r) => { if (r.url().endsWith('/v1/chat/completions')) sent = r.postDataJSON(); });
  await page.getByLabel('Message').fill('Hello there');
  await page.getByRole('button', { name: 'Send' }).click();
  await page.waitForFunction(() => document.body.dataset.state === 'idle' &&
                             document.querySelectorAll('#log .assistant').length === 2, null, { timeout: 20000 });
  assert.equal(sent.reasoning_effort, 'low');
  assert.equal(sent.stream, true);
  assert.deepEqual(sent.messages.at(-1), { role: 'user', content: 'Hello there' });
  const tokens = await lastTokens();  // usage.completion_tokens: max_tokens unless the model ended early
  assert.ok(tokens >= 1 && tokens <= 16, `tokens ${tokens}`);
  assert.equal(await page.locator('#log [role=alert]').count(), 0);
  assert.equal(await page.textContent('#status'), 'Idle');
  assert.deepEqual(foreign, [], 'no request left the server origin');
});

test('reasoning streams into its own collapsible block, apart from the answer', { skip }, async () => {
  // A scripted stream (the random model's chat output is seldom readable harmony): reasoning, then answer.
  const ev = (delta) => `data: ${JSON.stringify({ choices: [{ index: 0, delta, finish_reason: null }] })}\n\n`;
  const body = ev({ role: 'assistant', content: '' }) + ev({ reasoning_content: 'The user greets. ', reasoning: 'The user greets. ' }) +
               ev({ reasoning_content: 'Reply briefly.', reasoning: 'Reply briefly.' }) + ev({ content: 'Hello' }) + ev({ content: '!' }) +
               `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 9, completion_tokens: 7, completion_tokens_details: { reasoning_tokens: 5 } } })}\n\n` +
               'data: [DONE]\n\n';
  await page.route('**/v1/chat/completions', (route) => route.fulfill({ status: 200, contentType: 'text/event-stream', body }));
  try {
    await page.getByLabel('Message').fill('Hi');
    await page.getByRole('button', { name: 'Send' }).click();
    await page.waitForFunction(() => document.body.dataset.state === 'idle' &&
                               document.querySelectorAll('#log .assistant').length === 3, null, { timeout: 10000 });
    const last = page.locator('#log .assistant').last();
    assert.equal(await last.locator('.answer').textContent(), 'Hello!');
    const details = last.locator('details.reasoning');
    assert.equal(await details.isVisible(), true);
    assert.equal(await details.evaluate((d) => d.open), false, 'folded once the answer started');
    assert.equal(await details.locator('.text').textContent(), 'The user greets. Reply briefly.');
    await details.locator('summary').click();
    assert.equal(await details.evaluate((d) => d.open), true);
    assert.match(await last.locator('.stats').textContent(), /^7 tokens · .* · 5 reasoning$/);
  } finally {
    await page.unroute('**/v1/chat/completions');
  }
});
