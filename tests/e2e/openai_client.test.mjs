// The official openai client against a real mxserve (CPU, random tiny demo model): the model's words are
// random, so these tests assert on the response structure, not on wording.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';
import { startServer, metric } from './lib/server.mjs';

let server;
let client;

before(async () => {
  server = await startServer(['--max-length', '1024']);
  client = new OpenAI({ apiKey: 'unused', baseURL: `${server.base}/v1`, maxRetries: 0, timeout: 60000 });
});

after(async () => {
  const { code } = await server.stop();
  assert.equal(code, 0, 'graceful shutdown exits 0');
});

const messages = [
  { role: 'system', content: 'You are a helpful assistant.' },
  { role: 'user', content: 'What is 2 + 2?' },
];

function checkUsage(usage) {
  assert.ok(usage.prompt_tokens > 0);
  assert.ok(usage.completion_tokens > 0);
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
  assert.equal(typeof usage.completion_tokens_details.reasoning_tokens, 'number');
  assert.ok(usage.completion_tokens_details.reasoning_tokens <= usage.completion_tokens);
}

test('models lists the served model', async () => {
  const list = await client.models.list();
  assert.equal(list.data.length, 1);
  assert.equal(list.data[0].id, server.model);
  assert.equal(list.data[0].object, 'model');
});

test('non-streaming chat completion', async () => {
  const r = await client.chat.completions.create({ model: server.model, messages, max_tokens: 8, temperature: 0 });
  assert.match(r.id, /^chatcmpl-/);
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.model, server.model);
  assert.equal(r.choices.length, 1);
  const c = r.choices[0];
  assert.equal(c.message.role, 'assistant');
  assert.ok(['stop', 'length', 'tool_calls'].includes(c.finish_reason));
  assert.ok(c.message.content === null || typeof c.message.content === 'string');
  assert.ok('reasoning_content' in c.message && 'reasoning' in c.message);
  assert.deepEqual(c.message.reasoning, c.message.reasoning_content);
  checkUsage(r.usage);
  assert.equal(r.usage.completion_tokens, 8);
  assert.equal(c.finish_reason, 'length');
});

test('streaming chat: one id, role first, finish last, usage chunk, [DONE]', async () => {
  const stream = await client.chat.completions.create({
    model: server.model, messages, max_tokens: 6, stream: true, stream_options: { include_usage: true },
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.ok(chunks.length >= 3);
  const ids = new Set(chunks.map((c) => c.id));
  assert.equal(ids.size, 1);
  assert.equal(chunks[0].object, 'chat.completion.chunk');
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  const usageChunk = chunks.at(-1);
  assert.deepEqual(usageChunk.choices, []);
  checkUsage(usageChunk.usage);
  assert.equal(usageChunk.usage.completion_tokens, 6);
  const finishChunk = chunks.at(-2);
  assert.equal(finishChunk.choices[0].finish_reason, 'length');
  for (const c of chunks.slice(0, -2)) {
    assert.equal(c.choices[0].finish_reason, null);
    assert.equal(c.usage, null);
  }
});

test('completions, non-streaming and streaming, with logprobs and stop', async () => {
  const r = await client.completions.create({ model: server.model, prompt: 'Once upon a time', max_tokens: 5, logprobs: 2, seed: 11 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(typeof r.choices[0].text, 'string');
  assert.equal(r.choices[0].logprobs.tokens.length, 5);
  assert.equal(r.choices[0].logprobs.token_logprobs.length, 5);
  assert.ok(r.choices[0].logprobs.token_logprobs.every((x) => x <= 0));
  assert.ok(r.choices[0].logprobs.top_logprobs.every((t) => Object.keys(t).length >= 1));
  assert.equal(r.usage.completion_tokens, 5);

  const stream = await client.completions.create({ model: server.model, prompt: 'Once upon a time', max_tokens: 5, seed: 11, stream: true });
  let text = '';
  let finish = null;
  for await (const c of stream) {
    text += c.choices[0]?.text ?? '';
    finish = c.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(text, r.choices[0].text, 'same seed, same tokens, streamed or not');
  assert.equal(finish, 'length');

  // A stop string taken from the text itself cuts the answer right before it.
  const full = r.choices[0].text;
  const stopAt = full.slice(Math.floor(full.length / 2)).trim().slice(0, 3);
  if (stopAt.length > 0) {
    const s = await client.completions.create({ model: server.model, prompt: 'Once upon a time', max_tokens: 5, seed: 11, stop: [stopAt] });
    assert.equal(s.choices[0].finish_reason, 'stop');
    assert.ok(!s.choices[0].text.includes(stopAt));
    assert.ok(full.startsWith(s.choices[0].text));
  }
});

test('seeded sampling is reproducible', async () => {
  const req = { model: server.model, prompt: 'The weather', max_tokens: 6, temperature: 1.0, top_p: 0.9, seed: 1234 };
  const a = await client.completions.create(req);
  const b = await client.completions.create(req);
  assert.equal(a.choices[0].text, b.choices[0].text);
});

const tools = [{
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Gets the weather',
    parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
  },
}];

test('tool call round trip: a named tool_choice returns a call; its result renders back', async () => {
  const r = await client.chat.completions.create({
    model: server.model, messages: [{ role: 'user', content: 'Weather in Paris?' }], tools,
    tool_choice: { type: 'function', function: { name: 'get_weather' } }, max_tokens: 6,
  });
  const msg = r.choices[0].message;
  assert.equal(msg.tool_calls.length, 1);
  const call = msg.tool_calls[0];
  assert.match(call.id, /^call_/);
  assert.equal(call.type, 'function');
  assert.equal(call.function.name, 'get_weather');
  assert.equal(typeof call.function.arguments, 'string');
  assert.ok(['tool_calls', 'length'].includes(r.choices[0].finish_reason));

  // Streaming: the call's first delta carries id + name, later ones only argument pieces.
  const stream = await client.chat.completions.create({
    model: server.model, messages: [{ role: 'user', content: 'Weather in Paris?' }], tools,
    tool_choice: { type: 'function', function: { name: 'get_weather' } }, max_tokens: 6, stream: true,
  });
  const deltas = [];
  for await (const c of stream) for (const t of c.choices[0]?.delta?.tool_calls ?? []) deltas.push(t);
  assert.ok(deltas.length >= 1);
  assert.equal(deltas[0].function.name, 'get_weather');
  assert.match(deltas[0].id, /^call_/);
  assert.ok(deltas.slice(1).every((d) => d.id === undefined && d.index === 0));

  // The arguments are held to the tool's parameters, and `required` to a tool's name: sampled from the random model, a
  // closed call is to get_weather with arguments that parse as an object of the schema, whatever the seed.
  let closed = 0;
  for (const seed of [1, 2, 3, 4]) {
    const s = await client.chat.completions.create({
      model: server.model, messages: [{ role: 'user', content: 'Weather in Paris?' }], tools, temperature: 1, seed,
      tool_choice: seed % 2 ? { type: 'function', function: { name: 'get_weather' } } : 'required', max_tokens: 200,
    });
    const c = s.choices[0];
    if (c.finish_reason !== 'tool_calls') continue;
    ++closed;
    assert.equal(c.message.tool_calls[0].function.name, 'get_weather');
    const args = JSON.parse(c.message.tool_calls[0].function.arguments);
    assert.deepEqual(Object.keys(args), ['city'], c.message.tool_calls[0].function.arguments);  // required; no other
    assert.equal(typeof args.city, 'string', c.message.tool_calls[0].function.arguments);
  }
  assert.ok(closed >= 1, `${closed} of 4 calls closed`);

  // Round trip: the assistant's call and the tool's answer go back in; the server renders them (200).
  const followUp = await client.chat.completions.create({
    model: server.model, tools, max_tokens: 4,
    messages: [
      { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: null, tool_calls: [{ id: call.id, type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
      { role: 'tool', tool_call_id: call.id, content: '{"temperature_c": 21}' },
    ],
  });
  assert.equal(followUp.choices.length, 1);
  checkUsage(followUp.usage);
  assert.ok(followUp.usage.prompt_tokens > r.usage.prompt_tokens);
});

test('tool_choice none never returns tool calls; auto accepts tools', async () => {
  const none = await client.chat.completions.create({ model: server.model, messages, tools, tool_choice: 'none', max_tokens: 4 });
  assert.equal(none.choices[0].message.tool_calls, undefined);
  assert.notEqual(none.choices[0].finish_reason, 'tool_calls');
  const auto = await client.chat.completions.create({ model: server.model, messages, tools, max_tokens: 4 });
  assert.ok(auto.usage.prompt_tokens > none.usage.prompt_tokens, 'tools are rendered into the prompt with auto only');
});

test('reasoning_effort changes the rendered system prompt', async () => {
  const tok = async (effort) => {
    const r = await fetch(`${server.base}/tokenize`, { method: 'POST', body: JSON.stringify({ messages, reasoning_effort: effort }) });
    assert.equal(r.status, 200);
    return (await r.json()).tokens;
  };
  const low = await tok('low');
  const high = await tok('high');
  assert.notDeepEqual(low, high);
  const det = await (await fetch(`${server.base}/detokenize`, { method: 'POST', body: JSON.stringify({ tokens: high }) })).json();
  assert.match(det.prompt, /Reasoning: high/);
  for (const effort of ['low', 'medium', 'high']) {
    const r = await client.chat.completions.create({ model: server.model, messages, reasoning_effort: effort, max_tokens: 3 });
    assert.equal(r.choices.length, 1);
  }
});

test('chat logprobs and sampling parameters are accepted', async () => {
  const r = await client.chat.completions.create({
    model: server.model, messages, max_completion_tokens: 4, logprobs: true, top_logprobs: 3, temperature: 0.7,
    top_p: 0.95, frequency_penalty: 0.5, presence_penalty: 0.1, seed: 5, stop: ['\n\n'],
    top_k: 20, min_p: 0.01,
  });
  assert.equal(r.usage.completion_tokens, 4);
  assert.ok(Array.isArray(r.choices[0].logprobs.content));
});

test('n choices: one id, every index once, its own seed, usage counts the prompt once', async () => {
  const n = 3;
  const r = await client.chat.completions.create({
    model: server.model, messages, max_tokens: 12, temperature: 1, seed: 5, n,
  });
  assert.match(r.id, /^chatcmpl-/);
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2]);
  for (const c of r.choices) {
    assert.equal(c.message.role, 'assistant');
    assert.ok(['stop', 'length', 'tool_calls'].includes(c.finish_reason));
  }
  checkUsage(r.usage);
  // Each choice is the request with seed 5 + index (the random model's chat answers are mostly empty, so the
  // completions check below is the one that compares generated text).
  const alone = [];
  for (const seed of [5, 6, 7]) {
    alone.push(await client.chat.completions.create({ model: server.model, messages, max_tokens: 12, temperature: 1, seed }));
  }
  for (let i = 0; i < n; ++i) assert.deepEqual(r.choices[i].message, alone[i].choices[0].message, `choice ${i}`);
  assert.equal(r.usage.prompt_tokens, alone[0].usage.prompt_tokens);
  assert.equal(r.usage.completion_tokens, alone.reduce((sum, a) => sum + a.usage.completion_tokens, 0));

  // Streaming: chunks of every index, each index's role first and finish last, one usage chunk, then the end.
  const stream = await client.chat.completions.create({
    model: server.model, messages, max_tokens: 6, temperature: 1, seed: 5, n, stream: true,
    stream_options: { include_usage: true },
  });
  const ids = new Set();
  const seen = new Map();  // index -> {role, finish}
  let usage = null;
  for await (const chunk of stream) {
    ids.add(chunk.id);
    if (chunk.usage) {
      assert.equal(usage, null, 'one usage chunk');
      assert.equal(chunk.choices.length, 0);
      usage = chunk.usage;
      continue;
    }
    for (const c of chunk.choices) {
      const s = seen.get(c.index) ?? { role: false, finish: null };
      if (!s.role) assert.equal(c.delta.role, 'assistant', `choice ${c.index}: role first`);
      assert.equal(s.finish, null, `choice ${c.index}: nothing after its finish`);
      s.role = true;
      if (c.finish_reason) s.finish = c.finish_reason;
      seen.set(c.index, s);
    }
  }
  assert.equal(ids.size, 1);
  assert.deepEqual([...seen.keys()].sort(), [0, 1, 2]);
  for (const [, s] of seen) assert.ok(s.finish, 'every choice finished');
  checkUsage(usage);
  assert.equal(usage.prompt_tokens, r.usage.prompt_tokens);
  assert.ok(usage.completion_tokens >= n && usage.completion_tokens <= n * 6);

  // Legacy completions (raw text: the random model's words differ by seed, where its chat answers are mostly empty):
  // choice i is the n = 1 request with seed 5 + i, token for token.
  const t = await client.completions.create({ model: server.model, prompt: 'Hello', max_tokens: 8, temperature: 1, seed: 5, n });
  assert.deepEqual(t.choices.map((c) => c.index), [0, 1, 2]);
  const texts = [];
  for (let i = 0; i < n; ++i) {
    const a = await client.completions.create({ model: server.model, prompt: 'Hello', max_tokens: 8, temperature: 1, seed: 5 + i });
    assert.equal(t.choices[i].text, a.choices[0].text, `choice ${i} is the request with seed ${5 + i}`);
    texts.push(a.choices[0].text);
  }
  assert.ok(new Set(texts).size >= 2, 'the choices differ');
});

test('n choices share one prefill: choices 1..n-1 take the prompt from the prefix cache', async () => {
  // A prompt no earlier request had (a nonce first), long enough for many 16-token blocks.
  const prompt = `${Date.now()} ${Math.random()} ` + 'the quick brown fox jumps over the lazy dog '.repeat(30);
  const hits0 = await metric(server.base, 'mxserve_prefix_cache_hits_tokens_total');
  const computed0 = await metric(server.base, 'mxserve_engine_computed_tokens_total');
  const n = 3;
  const t = await client.completions.create({ model: server.model, prompt, max_tokens: 4, temperature: 1, n });
  const P = t.usage.prompt_tokens;
  assert.ok(P > 200, `prompt of ${P} tokens`);
  const hits = (await metric(server.base, 'mxserve_prefix_cache_hits_tokens_total')) - hits0;
  const computed = (await metric(server.base, 'mxserve_engine_computed_tokens_total')) - computed0;
  // Choices 1 and 2 each find all of the prompt's full blocks but (at most) the last one cached.
  assert.ok(hits >= (n - 1) * (P - 32), `prefix cache hits ${hits} for ${n - 1} choices of a ${P}-token prompt`);
  assert.ok(computed < 2 * P, `computed ${computed} tokens: the prompt once, not ${n} times`);
});

async function post(path, body) {
  const r = await fetch(`${server.base}${path}`, { method: 'POST', body: JSON.stringify(body) });
  assert.equal(r.status, 200, path);
  return r.json();
}

test('logit_bias forces and bans tokens; min_tokens holds back the stop token; ignore_eos runs to max_tokens', async () => {
  const [x] = (await post('/tokenize', { prompt: ' banana' })).tokens;
  const [y] = (await post('/tokenize', { prompt: ' cherry' })).tokens;
  assert.notEqual(x, y);
  const decode = async (ids) => (await post('/detokenize', { tokens: ids })).prompt;
  const base = { model: server.model, prompt: 'Once upon a time', max_tokens: 3, temperature: 0 };
  const forced = await client.completions.create({ ...base, logit_bias: { [x]: 100, [y]: 99 } });
  assert.equal(forced.choices[0].text, await decode([x, x, x]));
  const banned = await client.completions.create({ ...base, logit_bias: { [x]: -100, [y]: 99 } });
  assert.equal(banned.choices[0].text, await decode([y, y, y]));
  // Sampled too: every draw takes the forced token.
  const sampled = await client.completions.create({ ...base, temperature: 1, seed: 5, logit_bias: { [y]: 100 } });
  assert.equal(sampled.choices[0].text, await decode([y, y, y]));
  // stop_token_ids: the forced token now ends the completion (and is not part of the text).
  const stopped = await client.completions.create({ ...base, logit_bias: { [y]: 100 }, stop_token_ids: [y] });
  assert.equal(stopped.choices[0].finish_reason, 'stop');
  assert.equal(stopped.choices[0].text, '');
  assert.equal(stopped.usage.completion_tokens, 1);

  // <|return|> (200002) is a stop token: forced, it ends the completion at once; min_tokens holds it back.
  const ret = { ...base, max_tokens: 8, logit_bias: { 200002: 100 } };
  const now = await client.completions.create(ret);
  assert.equal(now.choices[0].finish_reason, 'stop');
  assert.equal(now.usage.completion_tokens, 1);
  const later = await client.completions.create({ ...ret, min_tokens: 3 });
  assert.equal(later.choices[0].finish_reason, 'stop');
  assert.equal(later.usage.completion_tokens, 4);
  const never = await client.completions.create({ ...ret, ignore_eos: true });
  assert.equal(never.choices[0].finish_reason, 'length');
  assert.equal(never.usage.completion_tokens, 8);
  // Chat takes them too (the stop token ends the answer as soon as min_tokens allows).
  const chat = await client.chat.completions.create({ model: server.model, messages, max_tokens: 8, temperature: 0,
                                                      logit_bias: { 200002: 100 }, min_tokens: 2 });
  assert.equal(chat.choices[0].finish_reason, 'stop');
  assert.equal(chat.usage.completion_tokens, 3);

  for (const [body, param] of [[{ logit_bias: { 999999: 1 } }, 'logit_bias'], [{ logit_bias: { 5: 200 } }, 'logit_bias'],
                               [{ min_tokens: 9 }, 'min_tokens']]) {
    await assert.rejects(client.completions.create({ ...base, max_tokens: 8, ...body }), (e) => {
      assert.equal(e.status, 400);
      assert.equal(e.param, param, e.message);
      return true;
    });
  }
});

test('response_format json_object: the completion is a JSON object, then a stop token', async () => {
  const [close] = (await post('/tokenize', { prompt: '}' })).tokens;
  const base = { model: server.model, prompt: 'A JSON object:', response_format: { type: 'json_object' } };
  // Greedy with '}' pushed up: the shortest object, then the stop token.
  const tiny = await client.completions.create({ ...base, max_tokens: 8, temperature: 0, logit_bias: { [close]: 100 } });
  assert.deepEqual(JSON.parse(tiny.choices[0].text), {});
  assert.ok(tiny.choices[0].text.startsWith('{'));
  assert.equal(tiny.choices[0].finish_reason, 'stop');
  // Sampled from the random model: a JSON object when it ends by itself, a prefix of one when max_tokens cuts it.
  for (const seed of [1, 2, 3]) {
    const r = await client.completions.create({ ...base, max_tokens: 40, temperature: 1, seed, logit_bias: { [close]: 6 } });
    const text = r.choices[0].text;
    assert.ok(text.startsWith('{'), text);
    if (r.choices[0].finish_reason === 'stop') assert.equal(typeof JSON.parse(text), 'object', text);
  }
  // json_schema: greedy from the random model, an object of the schema (an enum and a boolean: it must close).
  const schema = { type: 'object', additionalProperties: false, required: ['color', 'ok'],
                   properties: { color: { enum: ['red', 'green'] }, ok: { type: 'boolean' } } };
  const js = await client.completions.create({ model: server.model, prompt: 'A JSON object:', max_tokens: 64,
    temperature: 0, response_format: { type: 'json_schema', json_schema: { name: 'c', strict: true, schema } } });
  assert.equal(js.choices[0].finish_reason, 'stop', js.choices[0].text);
  const obj = JSON.parse(js.choices[0].text);
  assert.deepEqual(Object.keys(obj).sort(), ['color', 'ok']);
  assert.ok(['red', 'green'].includes(obj.color) && typeof obj.ok === 'boolean', js.choices[0].text);
  // Chat takes it too (the reasoning stays free; only the final answer is constrained).
  const chat = await client.chat.completions.create({ model: server.model, messages, max_tokens: 8,
                                                      response_format: { type: 'json_object' } });
  assert.ok(['length', 'stop'].includes(chat.choices[0].finish_reason));
  await assert.rejects(client.chat.completions.create({ model: server.model, messages,
                                                        response_format: { type: 'json_schema', json_schema: { name: 'x', schema: {} } } }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.param, 'response_format');
    return true;
  });
});

// What `zodResponseFormat` sends (draft-7: nullable unions, integer and number bounds, maxLength / maxItems, a recursive type
// through "definitions"), enforced by the server and checked by zod itself. Every value is bounded, so that the random
// model closes the document within max_tokens.
test('response_format from zod: the output parses with the zod schema', async () => {
  const Level = z.enum(['low', 'high']);
  const Node = z.object({ v: z.number().int().min(0).max(9), get kids() { return z.array(Node).max(1); } });
  const Answer = z.object({
    ok: z.boolean(),
    level: Level.nullable(),
    code: z.string().max(3),
    items: z.array(z.object({ level: Level, n: z.number().int().min(-2).max(2) })).max(2),
    pick: z.union([z.boolean(), z.string().max(1)]),
    score: z.number().min(0).max(1),
    tree: Node.nullable(),
  });
  const format = zodResponseFormat(Answer, 'answer');
  assert.ok(JSON.stringify(format).includes('"$ref"'), 'the schema has a reference');
  let closed = 0;
  for (const [temperature, seed] of [[0, 1], [1, 2], [1, 3], [1, 4]]) {
    const r = await client.completions.create({ model: server.model, prompt: 'A JSON object:', max_tokens: 400,
                                                temperature, seed, response_format: format });
    const text = r.choices[0].text;
    assert.ok(text.startsWith('{'), text);
    if (r.choices[0].finish_reason !== 'stop') continue;
    ++closed;
    const parsed = Answer.safeParse(JSON.parse(text));
    assert.ok(parsed.success, `${text}: ${parsed.error}`);
  }
  assert.ok(closed >= 2, `${closed} of 4 closed`);
  // Chat takes the same format; its schema also goes into the prompt's developer message (harmony's "# Response
  // Formats"), which makes the prompt longer than the same request without it.
  const plain = await client.chat.completions.create({ model: server.model, messages, max_tokens: 1 });
  const withFormat = await client.chat.completions.create({ model: server.model, messages, max_tokens: 1,
                                                            response_format: format });
  assert.ok(withFormat.usage.prompt_tokens > plain.usage.prompt_tokens + 50,
            `${withFormat.usage.prompt_tokens} vs ${plain.usage.prompt_tokens}`);
  // What the subset cannot enforce is a 400 naming the keyword.
  const Email = z.object({ to: z.email() });
  await assert.rejects(client.completions.create({ model: server.model, prompt: 'x', max_tokens: 4,
                                                   response_format: zodResponseFormat(Email, 'mail') }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.param, 'response_format');
    assert.match(e.message, /\/properties\/to: keyword '(format|pattern)' is not supported/);
    return true;
  });
});

// The Responses API through the client's own helpers: create, stream (its accumulator rebuilds the response from
// the typed events and throws on any event out of order), and a function call sent back as input items.
test('responses: create, stream, function call round trip', async () => {
  const tools = [{ type: 'function', name: 'get_weather', description: 'The weather of a city', strict: false,
                   parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } }];
  const req = { model: server.model, input: 'Weather in Paris?', instructions: 'Be brief.', tools,
                tool_choice: { type: 'function', name: 'get_weather' }, max_output_tokens: 8, seed: 5 };
  const r = await client.responses.create(req);
  assert.equal(r.object, 'response');
  assert.ok(r.id.startsWith('resp_'));
  assert.equal(r.instructions, 'Be brief.');
  assert.equal(r.output[0].type, 'function_call');
  assert.equal(r.output[0].name, 'get_weather');
  assert.ok(r.output[0].call_id.startsWith('call_'));
  assert.ok(['completed', 'incomplete'].includes(r.status));
  assert.equal(r.output_text, '');  // (the client's helper: no message item)
  assert.ok(r.usage.output_tokens <= 8 && r.usage.input_tokens > 0);
  assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);

  const stream = client.responses.stream(req);
  const types = [];
  for await (const ev of stream) types.push(ev.type);
  const streamed = await stream.finalResponse();
  assert.equal(types[0], 'response.created');
  assert.ok(['response.completed', 'response.incomplete'].includes(types.at(-1)), types.at(-1));
  assert.ok(types.includes('response.function_call_arguments.delta'));
  assert.equal(streamed.output[0].arguments, r.output[0].arguments);  // the same seed, the same tokens
  assert.equal(streamed.usage.input_tokens, r.usage.input_tokens);
  assert.equal(streamed.usage.output_tokens, r.usage.output_tokens);
  assert.ok(streamed.usage.input_tokens_details.cached_tokens > 0);  // the first request's prompt, from the cache

  const next = await client.responses.create({ model: server.model, tools, max_output_tokens: 4, input: [
    { role: 'user', content: 'Weather in Paris?' }, ...r.output,
    { type: 'function_call_output', call_id: r.output[0].call_id, output: '{"sunny": true}' }] });
  assert.equal(next.object, 'response');
  assert.ok(next.usage.input_tokens > r.usage.input_tokens);

  // Stored: retrieved as answered, continued by previous_response_id (the call's output as the new input), deleted.
  assert.deepEqual(await client.responses.retrieve(r.id), r);
  const cont = await client.responses.create({ model: server.model, tools, max_output_tokens: 4, previous_response_id: r.id,
    input: [{ type: 'function_call_output', call_id: r.output[0].call_id, output: '{"sunny": true}' }] });
  assert.equal(cont.previous_response_id, r.id);
  assert.equal(cont.usage.input_tokens, next.usage.input_tokens);  // the same conversation as sending it whole
  await client.responses.delete(r.id);
  await assert.rejects(client.responses.retrieve(r.id), (e) => e.status === 404);
  await assert.rejects(client.responses.create({ model: server.model, input: 'x', previous_response_id: r.id }),
                       (e) => e.status === 400 && e.param === 'previous_response_id');
  await assert.rejects(client.responses.create({ model: server.model, input: 'x', max_output_tokens: 0 }),
                       (e) => e.status === 400 && e.param === 'max_output_tokens');
});

test('errors come back in the OpenAI envelope', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'no-such-model', messages }), (e) => {
    assert.equal(e.status, 404);
    assert.equal(e.code, 'model_not_found');
    assert.equal(e.param, 'model');
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model: server.model, messages, temperature: 5 }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.param, 'temperature');
    assert.equal(e.type, 'invalid_request_error');
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model: server.model, messages, n: 17 }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.param, 'n');
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model: server.model, messages: [{ role: 'wizard', content: 'x' }] }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.param, 'messages[0].role');
    return true;
  });
  await assert.rejects(client.chat.completions.create({ model: server.model, messages, max_tokens: 5000 }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.code, 'context_length_exceeded');
    assert.match(e.message, /1024/);
    assert.match(e.message, /5000/);
    return true;
  });
  await assert.rejects(client.completions.create({ model: server.model, prompt: 'x '.repeat(2000) }), (e) => {
    assert.equal(e.status, 400);
    assert.equal(e.code, 'context_length_exceeded');
    return true;
  });
});

test('API key: 401 without it, 200 with it', async () => {
  const keyed = await startServer([], { env: { MXSERVE_API_KEY: 'sekrit' } });
  try {
    const bad = new OpenAI({ apiKey: 'wrong', baseURL: `${keyed.base}/v1`, maxRetries: 0 });
    await assert.rejects(bad.models.list(), (e) => {
      assert.equal(e.status, 401);
      assert.equal(e.code, 'invalid_api_key');
      return true;
    });
    const good = new OpenAI({ apiKey: 'sekrit', baseURL: `${keyed.base}/v1`, maxRetries: 0 });
    const r = await good.chat.completions.create({ model: keyed.model, messages, max_tokens: 2 });
    assert.equal(r.choices.length, 1);
    assert.equal((await fetch(`${keyed.base}/health`)).status, 200, '/health needs no key');
  } finally {
    assert.equal((await keyed.stop()).code, 0);
  }
});
