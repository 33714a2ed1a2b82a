// Drives `cctelegram mcp` with the official TypeScript SDK, for tests/mcp.rs.
//
// Usage: node client.mjs BIN CONFIG SCENARIO, SCENARIO one of
//   full     every tool, an approval pressed in the fake Telegram, a cancelled wait
//   send     one send_telegram_event (no daemon needs to run)
//   channel  --channel: channel notifications, reply, the permission relay
// Each step prints `TAG <json>` on stdout; the Rust test reads them and, where
// a person is needed, acts on the fake Telegram and answers on our stdin.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { createInterface } from 'node:readline';

const [binary, config, scenario] = process.argv.slice(2);
const say = (tag, value) => process.stdout.write(`${tag} ${JSON.stringify(value ?? null)}\n`);

// Server stderr is kept for the cancellation check and passed on for the test log.
let serverErr = '';
const transport = new StdioClientTransport({
  command: binary,
  args: ['mcp', '--config', config, ...(scenario === 'channel' ? ['--channel'] : [])],
  env: { PATH: process.env.PATH ?? '', CCTELEGRAM_LOG: 'info' },
  stderr: 'pipe',
});
transport.stderr.on('data', (d) => {
  serverErr += d;
  process.stderr.write(d);
});
const waitForStderr = async (needle, ms) => {
  const end = Date.now() + ms;
  while (!serverErr.includes(needle)) {
    if (Date.now() > end) throw new Error(`no ${JSON.stringify(needle)} on the server's stderr`);
    await new Promise((r) => transport.stderr.once('data', r));
  }
};

const client = new Client({ name: 'cctelegram-test', version: '0.0.0' });
const notifications = [];
client.fallbackNotificationHandler = async (n) => {
  notifications.push(n);
  say('NOTIFICATION', n);
};
await client.connect(transport);

const structured = (r) => {
  if (r.isError) throw new Error(`tool failed: ${JSON.stringify(r.content)}`);
  const text = JSON.parse(r.content[0].text);
  if (JSON.stringify(text) !== JSON.stringify(r.structuredContent)) {
    throw new Error(`text and structuredContent differ: ${r.content[0].text}`);
  }
  return r.structuredContent;
};
const call = async (name, args) => structured(await client.callTool({ name, arguments: args }));
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const next = async () => (await lines.next()).value;

say('VERSION', client.getServerVersion());
say('CAPABILITIES', client.getServerCapabilities());
const { tools } = await client.listTools();
say('TOOLS', tools.map((t) => ({ name: t.name, input: t.inputSchema, output: t.outputSchema })));

if (scenario === 'send') {
  say('EVENT', await call('send_telegram_event', {
    type: 'task_started', title: 'Queued: before any daemon', description: 'waits on disk' }));
} else if (scenario === 'full') {
  say('EVENT', await call('send_telegram_event', { type: 'git_push', title: 'Pushed: main ✅', task_id: 'push-1' }));
  say('MESSAGE', await call('send_telegram_message', { message: 'Hello from node' }));
  say('COMPLETION', await call('send_task_completion', { task_id: 'node-task', title: 'Tests written' }));
  say('ALERT', await call('send_performance_alert', { title: 'CPU', current_value: 99, threshold: 90, severity: 'critical' }));
  say('TYPES', await call('list_event_types', { category: 'task_management' }));
  say('STATUS', await call('get_bridge_status', {}));
  const approval = await call('send_approval_request', {
    title: 'Deploy v1.2.3 (node)', description: 'Ship it to prod?', options: ['Ship', 'Wait', 'Abort'] });
  say('APPROVAL', approval);
  say('WAITED', await call('wait_for_response', { event_id: approval.event_id, timeout_seconds: 60 }));
  say('PENDING', await call('process_pending_responses', { since_minutes: 5 }));
  say('RESPONSES', await call('get_telegram_responses', {}));

  // A long wait that the client gives up on ends in the server at once.
  const abort = new AbortController();
  const started = Date.now();
  const pending = client.callTool({ name: 'wait_for_response', arguments: { event_id: 'evt_never', timeout_seconds: 600 } },
    undefined, { signal: abort.signal }).catch((e) => e);
  await new Promise((r) => setTimeout(r, 300));
  abort.abort('the test gave up');
  await pending;
  await waitForStderr('wait_for_response evt_never: cancelled', 10000);
  say('CANCELLED', { ms: Date.now() - started });

  // timeout_minutes is honoured: nobody answers, the approval expires, and
  // the expiry is the response the wait returns.
  const short = await call('send_approval_request', {
    title: 'Quick question (node)', description: 'Answer within a second?', timeout_minutes: 0.02 });
  say('SHORT', short);
  say('EXPIRED', await call('wait_for_response', { event_id: short.event_id, timeout_seconds: 30 }));

  try {
    await client.callTool({ name: 'send_approval_request', arguments: { title: 'x', description: 'y', options: 'Approve' } });
    say('BAD_ARGS', null);
  } catch (e) {
    say('BAD_ARGS', { code: e.code, message: e.message });
  }
  const { resources } = await client.listResources();
  const read = {};
  for (const r of resources) read[r.uri] = JSON.parse((await client.readResource({ uri: r.uri })).contents[0].text);
  say('RESOURCES', read);
  say('CLEARED', await call('clear_old_responses', {}));
} else if (scenario === 'channel') {
  say('READY', true);
  await next(); // the test has injected the messages
  say('REPLY', await call('reply', { text: 'On it.' }));
  await client.notification({
    method: 'notifications/claude/channel/permission_request',
    params: { request_id: 'tbxkq', tool_name: 'Bash', description: 'Run the tests', input_preview: '{"command":"cargo test"}' },
  });
  say('ASKED', true);
  await next(); // the test has pressed Allow
}
say('DONE', true);
await client.close();
