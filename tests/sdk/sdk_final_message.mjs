// Prints what the official Anthropic TypeScript SDK makes of a recorded SSE
// stream: the JSON of `MessageStream.finalMessage()` (beta stream, which
// rebuilds tool input for tool_use, server_tool_use and mcp_tool_use).
//
// Usage: node sdk_final_message.mjs FILE.sse [--ga]
// The bytes are served to the SDK through its `fetch` option, so they go
// through the SDK's own SSE decoder and accumulator exactly as a live
// response would. Exit 0 with the message on stdout; exit 3 with
// {"sdk_error": {...}} on stdout when the SDK throws.
import { readFileSync } from 'node:fs';
import Anthropic from '@anthropic-ai/sdk';

const args = process.argv.slice(2);
const file = args.find((a) => !a.startsWith('--'));
if (!file) {
  process.stderr.write('usage: node sdk_final_message.mjs FILE.sse [--ga]\n');
  process.exit(2);
}
const useGa = args.includes('--ga');
const bytes = readFileSync(file);

const client = new Anthropic({
  apiKey: 'sk-ant-interop-test',
  baseURL: 'http://127.0.0.1:9',
  maxRetries: 0,
  fetch: async () =>
    new Response(bytes, {
      status: 200,
      headers: { 'content-type': 'text/event-stream', 'request-id': 'req_interop' },
    }),
});

const params = {
  model: 'claude-interop-test',
  max_tokens: 1024,
  messages: [{ role: 'user', content: 'interop' }],
};

try {
  const stream = useGa ? client.messages.stream(params) : client.beta.messages.stream(params);
  const message = await stream.finalMessage();
  process.stdout.write(JSON.stringify(message) + '\n');
} catch (err) {
  process.stdout.write(
    JSON.stringify({
      sdk_error: {
        name: err?.constructor?.name ?? 'Error',
        message: String(err?.message ?? err),
        type: err?.type ?? err?.error?.error?.type ?? null,
        status: err?.status ?? null,
      },
    }) + '\n',
  );
  process.exit(3);
}
