// Parity of `toolmesh sse decode` with the official TypeScript SDK.
//
// For every recorded stream in shared/fixtures/anthropic-sse, and every
// hand-written stream in tests/sdk/streams (quirks the recordings here do not
// show: programmatic tool calling's message_start-only response, redacted and
// signature-only thinking, input pre-filled in content_block_start, the code
// execution result family, refusal stop_details, CRLF line ends, unknown
// events, usage overwritten across several message_delta events), the final
// message printed by `toolmesh sse decode FILE` must equal what the SDK's
// BetaMessageStream.finalMessage() builds from the same bytes (compared as
// JSON values: key order ignored, and a key the SDK leaves `undefined` equal
// to an explicit null, since JSON.stringify drops undefined). Where the SDK
// throws, toolmesh must fail too, with one line naming the same cause.
//
// Environment: TOOLMESH_BIN (the toolmesh CLI), TOOLMESH_SHARED_DIR,
// TOOLMESH_REQUIRE_FIXTURES=1 to fail instead of skipping without fixtures.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const toolmesh = process.env.TOOLMESH_BIN;
const sharedDir = process.env.TOOLMESH_SHARED_DIR ?? join(here, '..', '..', '..', 'shared');
const fixturesDir = join(sharedDir, 'fixtures', 'anthropic-sse');
const required = process.env.TOOLMESH_REQUIRE_FIXTURES === '1';

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

function sdkFinalMessage(file) {
  const run = spawnSync(process.execPath, [join(here, 'sdk_final_message.mjs'), file], {
    encoding: 'utf8',
  });
  const out = JSON.parse(run.stdout.trim());
  return run.status === 0 ? { message: out } : { error: out.sdk_error };
}

function toolmeshDecode(file) {
  const run = spawnSync(toolmesh, ['sse', 'decode', file], { encoding: 'utf8' });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

const fixtures = existsSync(fixturesDir)
  ? readdirSync(fixturesDir).filter((n) => n.endsWith('.sse')).sort()
  : [];

test('fixtures are present', (t) => {
  if (fixtures.length === 0) {
    if (required) assert.fail(`no .sse fixtures in ${fixturesDir}`);
    t.skip(`shared/fixtures/anthropic-sse not found at ${fixturesDir}`);
  }
  assert.ok(toolmesh && existsSync(toolmesh), `TOOLMESH_BIN not found: ${toolmesh}`);
});

const streamsDir = join(here, 'streams');
const cases = [
  ...fixtures.map((name) => ({ name, file: join(fixturesDir, name) })),
  ...readdirSync(streamsDir)
    .filter((n) => n.endsWith('.sse'))
    .sort()
    .map((name) => ({ name: `streams/${name}`, file: join(streamsDir, name) })),
];

for (const { name, file } of cases) {
  test(`toolmesh sse decode matches the SDK on ${name}`, () => {
    const sdk = sdkFinalMessage(file);
    const ours = toolmeshDecode(file);
    if (sdk.message) {
      assert.equal(ours.status, 0, `toolmesh failed where the SDK succeeded: ${ours.stderr}`);
      assert.deepEqual(normalize(JSON.parse(ours.stdout)), normalize(sdk.message));
      return;
    }
    // The SDK threw: toolmesh must fail too, with one clear line.
    assert.notEqual(ours.status, 0, 'toolmesh succeeded where the SDK threw');
    const lines = ours.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `expected one line on stderr, got: ${ours.stderr}`);
    if (sdk.error.type) {
      assert.match(lines[0], new RegExp(sdk.error.type));
    } else {
      assert.match(lines[0], /message_start/);
    }
  });
}
