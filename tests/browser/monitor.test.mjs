// The mesh monitor page in a real browser: starts a real `gateway-example gateway` and two
// `todos` replicas on the loopback mesh (an environment of their own, free ports), opens
// /distribution/monitor in headless Chromium (Debian's chromium through playwright-core), logs
// in, and checks that the page lists the three nodes and that a SIGKILLed replica disappears
// from it live (no reload). Screenshots go to the artifacts directory.
//
// Usage: node monitor.test.mjs --bin <gateway-example> --artifacts <dir>
// Env:   PLUME_CHROMIUM  the browser binary (default /usr/bin/chromium)
//
// Every wait has a deadline; nothing sleeps for a fixed time.

import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { launchLoopbackChromium } from './chromium.mjs';

const STEP_TIMEOUT = 15_000;
const START_TIMEOUT = 60_000;
const NODE_TIMEOUT_MS = 2000;

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
if (!args.bin || !args.artifacts) {
  console.error('usage: node monitor.test.mjs --bin <gateway-example> --artifacts <dir>');
  process.exit(2);
}
mkdirSync(args.artifacts, { recursive: true });
const shot = (page, name) => page.screenshot({ path: path.join(args.artifacts, `${name}.png`), fullPage: true });

function withDeadline(promise, ms, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

const environment = `browser-monitor-${process.pid}`;
const children = [];
process.on('exit', () => children.forEach((c) => c.kill('SIGKILL'))); // never leave one behind

// Start `gateway-example ...args`; resolves with the child and its first stdout line.
function start(name, argv) {
  const child = spawn(args.bin, argv, {
    env: {
      ...process.env,
      PLUME_ENV: environment,
      PLUME_HEARTBEAT_MS: '200',
      PLUME_NODE_TIMEOUT_MS: String(NODE_TIMEOUT_MS),
      RUST_LOG: process.env.RUST_LOG || 'error',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  const first = new Promise((resolve, reject) => {
    child.on('exit', (code, signal) => reject(new Error(`${name} exited (${code ?? signal})`)));
    createInterface({ input: child.stdout }).once('line', (line) => {
      console.log(`  [${name}] ${line}`);
      resolve(line);
    });
  });
  return withDeadline(first, START_TIMEOUT, `${name} starts`).then((line) => ({ child, line }));
}

let passed = 0;
let failed = 0;
let page;
async function step(name, fn) {
  if (failed) {
    console.log(`skip - ${name}`);
    return;
  }
  try {
    await fn();
    passed += 1;
    console.log(`ok - ${name}`);
  } catch (error) {
    failed += 1;
    console.log(`not ok - ${name}\n  ${String(error.stack || error).split('\n').join('\n  ')}`);
    if (page) await shot(page, 'failure').catch(() => {});
  }
}

let url;
let todosB;
await step('a gateway and two replicas start', async () => {
  const [gateway, , b] = await Promise.all([
    start('gateway', ['gateway', '--port', '0']),
    start('todos-a', ['todos', '--name', 'todos-a', '--port', '0', '--store', 'memory']),
    start('todos-b', ['todos', '--name', 'todos-b', '--port', '0', '--store', 'memory']),
  ]);
  const m = /^gateway listening on (http:\/\/127\.0\.0\.1:\d+)$/.exec(gateway.line);
  if (!m) throw new Error(`unexpected gateway line ${gateway.line}`);
  url = m[1];
  todosB = b.child;
});

const userDataDir = mkdtempSync(path.join(tmpdir(), 'plume-chromium-'));
let context;
await step('the page asks for a login, and the snapshot needs one', async () => {
  // Loopback only: anything else the page would fetch is refused (and fails the check below).
  const launched = await launchLoopbackChromium(userDataDir, { width: 1100, height: 800 }, STEP_TIMEOUT);
  context = launched.context;
  const outside = launched.outside;
  page = context.pages()[0] || (await context.newPage());
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(`${url}/distribution/monitor`);
  await page.locator('#login').waitFor({ state: 'visible' });
  const anonymous = await page.evaluate(() => fetch('/distribution/mesh').then((r) => r.status));
  if (anonymous !== 401) throw new Error(`an anonymous GET /distribution/mesh answered ${anonymous}`);
  if (outside.length) throw new Error(`the page fetched outside loopback: ${outside}`);
  if (errors.length) throw new Error(`page errors: ${errors}`);
  await shot(page, '1-login');
});

await step('after the login the page lists the three nodes, their services and links', async () => {
  await page.fill('#email', 'demo@plume.local');
  await page.fill('#password', 'plume-demo');
  await page.click('#login button');
  await page.locator('body[data-nodes="gateway,todos-a,todos-b"]').waitFor();
  const rows = await page.locator('#nodes tr').count();
  if (rows !== 3) throw new Error(`${rows} node rows`);
  await page.locator('#nodes tr[data-name="todos-a"]', { hasText: 'svc:todos' }).waitFor();
  await page.locator('#nodes tr[data-name="gateway"]', { hasText: '127.0.0.1:' }).waitFor();
  const links = await page.locator('#links tr').count();
  if (links !== 3) throw new Error(`${links} links between three nodes`);
  await shot(page, '2-three-nodes');
});

await step('a SIGKILLed replica disappears from the page, live', async () => {
  await page.evaluate(() => { window.__notReloaded = true; });
  todosB.kill('SIGKILL');
  await page.locator('body[data-nodes="gateway,todos-a"]').waitFor({ timeout: NODE_TIMEOUT_MS + STEP_TIMEOUT });
  await page.locator('#events li.loss', { hasText: 'todos-b' }).waitFor();
  if (!(await page.evaluate(() => window.__notReloaded === true))) throw new Error('the page reloaded');
  await shot(page, '3-one-lost');
});

if (context) await context.close().catch(() => {});
rmSync(userDataDir, { recursive: true, force: true });
for (const child of children) {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
}
await withDeadline(
  Promise.all(children.map((c) => (c.exitCode !== null || c.signalCode !== null ? null : new Promise((r) => c.on('exit', r))))),
  STEP_TIMEOUT,
  'the processes stop',
).catch((error) => {
  failed += 1;
  console.log(`not ok - the processes stop\n  ${error}`);
});
console.log(`screenshots in ${args.artifacts}`);
console.log(`monitor page: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
