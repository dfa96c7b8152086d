// Interop of toolmesh-fakeapi with the official Anthropic TypeScript SDK as a
// real client over loopback HTTP.
//
// 1. Every fault-free example scenario (tests/testing/fakeapi/scenarios,
//    those without an error fault) and the rule-driven model are driven
//    through a small agent loop (tool_use -> tool_results, pause_turn ->
//    send the content back) twice: streamed with messages.stream() and
//    finalMessage(), then, after POST /_fake/reset, non-streamed with
//    messages.create(). Each turn's final message must equal the
//    non-streamed message, the loop must end with end_turn, and the fake API
//    must have rejected nothing (stats.rejected_400 == 0).
// 2. Injected errors surface as the SDK's own error types: 429
//    RateLimitError, 500 InternalServerError, 529 OverloadedError, a
//    mid-stream `error` event an APIError without status carrying the
//    error type, a cut connection a connection-level error; with retries on,
//    the SDK honours retry-after-ms and gets through a 429 and a 529.
//
// Environment: TOOLMESH_FAKEAPI_BIN (the server binary).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import Anthropic, {
  APIError,
  InternalServerError,
  OverloadedError,
  RateLimitError,
} from '@anthropic-ai/sdk';

const here = dirname(fileURLToPath(import.meta.url));
const bin = process.env.TOOLMESH_FAKEAPI_BIN;
const scenariosDir = join(here, '..', 'testing', 'fakeapi', 'scenarios');

const tools = [
  { type: 'web_search_20250305', name: 'web_search' },
  {
    name: 'get_weather',
    description: 'Current weather for a city',
    input_schema: {
      type: 'object',
      properties: { city: { type: 'string' }, units: { enum: ['celsius', 'fahrenheit'] } },
      required: ['city'],
    },
  },
];

const children = [];

// Starts toolmesh-fakeapi with `args`; resolves to its base URL.
async function startServer(args) {
  assert.ok(bin, 'TOOLMESH_FAKEAPI_BIN is not set');
  const child = spawn(bin, ['--listen', '127.0.0.1:0', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  const lines = createInterface({ input: child.stdout });
  for await (const line of lines) {
    const m = /^listening on (\S+)$/.exec(line);
    if (m) return `http://${m[1]}`;
  }
  throw new Error('toolmesh-fakeapi exited before listening');
}

after(() => {
  for (const child of children) child.kill('SIGTERM');
});

function client(baseURL, options = {}) {
  return new Anthropic({ apiKey: 'sk-fake-interop', baseURL, maxRetries: 0, ...options });
}

function scenarioHasErrorFault(doc) {
  const responses = Array.isArray(doc) ? doc : doc.responses;
  const errorFaults = new Set(['http_429', 'http_500', 'http_529', 'http', 'sse_error', 'cut',
    'malformed', 'splice']);
  return responses.some((r) => {
    const f = r.fault;
    if (!f) return false;
    return errorFaults.has(typeof f === 'string' ? f : f.type);
  });
}

// Runs one task to completion; returns every turn's final message.
async function runTask(sdk, streamed) {
  const messages = [{ role: 'user', content: 'What is the weather in Paris? use get_weather' }];
  const turns = [];
  for (let turn = 0; turn < 6; turn++) {
    const params = { model: 'claude-fake-1', max_tokens: 1024, tools, messages };
    const message = streamed
      ? await sdk.messages.stream(params).finalMessage()
      : await sdk.messages.create(params);
    turns.push(message);
    if (message.stop_reason === 'tool_use') {
      messages.push({ role: 'assistant', content: message.content });
      messages.push({
        role: 'user',
        content: message.content
          .filter((b) => b.type === 'tool_use')
          .map((b) => ({ type: 'tool_result', tool_use_id: b.id, content: `ok from ${b.name}` })),
      });
    } else if (message.stop_reason === 'pause_turn') {
      messages.push({ role: 'assistant', content: message.content });
    } else {
      return turns;
    }
  }
  return turns;
}

// Compared as JSON values: key order ignored, and a key that is null or
// undefined equal to an absent one (the stream helper adds
// `parsed_output: null`).
function normalize(value) {
  if (Array.isArray(value)) return value.map(normalize);
  if (value !== null && typeof value === 'object') {
    const out = {};
    for (const key of Object.keys(value).sort()) {
      if (value[key] === null || value[key] === undefined) continue;
      out[key] = normalize(value[key]);
    }
    return out;
  }
  return value;
}

const scenarioFiles = readdirSync(scenariosDir)
  .filter((n) => n.endsWith('.json'))
  .sort();
const faultFree = scenarioFiles.filter(
  (n) => !scenarioHasErrorFault(JSON.parse(readFileSync(join(scenariosDir, n), 'utf8'))),
);

test('there are fault-free example scenarios', () => {
  assert.ok(faultFree.length >= 3, `found ${faultFree}`);
});

for (const name of [...faultFree, '(rule-driven model)']) {
  test(`the SDK streams ${name} to the message the API returns whole`, async () => {
    const args = name.startsWith('(') ? ['--seed', '11'] : ['--scenario', join(scenariosDir, name)];
    const baseURL = await startServer(args);
    const sdk = client(baseURL);
    const streamed = await runTask(sdk, true);
    const reset = await fetch(`${baseURL}/_fake/reset`, { method: 'POST' });
    assert.equal(reset.status, 200);
    const whole = await runTask(sdk, false);
    assert.equal(streamed.length, whole.length);
    for (let i = 0; i < streamed.length; i++) {
      assert.deepEqual(normalize(streamed[i]), normalize(whole[i]), `turn ${i + 1}`);
    }
    assert.equal(streamed.at(-1).stop_reason, 'end_turn');
    const stats = await (await fetch(`${baseURL}/_fake/stats`)).json();
    assert.equal(stats.rejected_400, 0);
    assert.equal(stats.unmatched, 0);
  });
}

test('injected errors surface as the SDK error types', async () => {
  const baseURL = await startServer(['--scenario', join(scenariosDir, 'faults_tour.json')]);
  const sdk = client(baseURL);
  const params = {
    model: 'claude-fake-1',
    max_tokens: 64,
    messages: [{ role: 'user', content: 'hi' }],
  };
  const streamError = async () => {
    try {
      await sdk.messages.stream(params).finalMessage();
    } catch (err) {
      return err;
    }
    assert.fail('expected the stream to fail');
  };

  const rateLimited = await streamError();
  assert.ok(rateLimited instanceof RateLimitError, rateLimited?.constructor?.name);
  assert.equal(rateLimited.status, 429);
  assert.equal(rateLimited.headers.get('retry-after-ms'), '10');
  assert.match(rateLimited.requestID, /^req_/);

  const serverError = await streamError();
  assert.ok(serverError instanceof InternalServerError, serverError?.constructor?.name);
  assert.equal(serverError.status, 500);

  const overloaded = await streamError();
  assert.ok(overloaded instanceof OverloadedError, overloaded?.constructor?.name);
  assert.ok(overloaded instanceof InternalServerError);
  assert.equal(overloaded.status, 529);

  const midStream = await streamError();
  assert.ok(midStream instanceof APIError, midStream?.constructor?.name);
  assert.equal(midStream.status, undefined);
  assert.equal(midStream.error?.error?.type, 'overloaded_error');

  const cut = await streamError();
  assert.ok(!(cut instanceof APIError) || cut.status === undefined, String(cut));
  assert.match(String(cut?.message ?? cut), /terminated|closed|socket|network|premature|aborted/i);

  const spliced = await streamError();
  assert.match(String(spliced?.message), /message_start/);

  const malformed = await streamError();
  assert.ok(malformed instanceof Error);

  // Faults used up: the rule-driven model answers.
  const ok = await sdk.messages.stream(params).finalMessage();
  assert.equal(ok.stop_reason, 'end_turn');
});

test('with retries on, the SDK gets through a 429 and a 529', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fakeapi-interop-'));
  const scenario = join(dir, 'retries.json');
  writeFileSync(scenario, JSON.stringify({
    responses: [
      { blocks: [{ type: 'text', text: 'unused' }], fault: { type: 'http_429', retry_after: '0', retry_after_ms: '10' } },
      { blocks: [{ type: 'text', text: 'unused' }], fault: 'http_529' },
      { blocks: [{ type: 'text', text: 'Third time lucky.' }] },
    ],
  }));
  try {
    const baseURL = await startServer(['--scenario', scenario]);
    const sdk = client(baseURL, { maxRetries: 2 });
    const message = await sdk.messages.stream({
      model: 'claude-fake-1',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'hi' }],
    }).finalMessage();
    assert.equal(message.content[0].text, 'Third time lucky.');
    const log = await (await fetch(`${baseURL}/_fake/requests`)).json();
    assert.deepEqual(log.map((e) => e.status), [429, 529, 200]);
    assert.equal(log[2].headers['x-stainless-retry-count'], '2');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
