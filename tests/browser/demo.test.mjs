// The gateway demo in a real browser: starts `gateway-example demo` (the real binaries, free
// loopback ports), drives headless Chromium (Debian's chromium through playwright-core) against
// its page, and checks what a user sees. Screenshots go to the artifacts directory.
//
// Usage: node demo.test.mjs --bin <gateway-example> --artifacts <dir>
// Env:   PLUME_CHROMIUM  the browser binary (default /usr/bin/chromium)
//
// Every wait has a deadline; nothing sleeps for a fixed time.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { launchLoopbackChromium } from './chromium.mjs';

const STEP_TIMEOUT = 15_000; // one UI expectation
const DEMO_READY_TIMEOUT = 120_000; // three processes start, mesh forms, login + find work
const STOP_TIMEOUT = 20_000;
// Replicas take turns (loopback, Redis) or the NATS server picks one at random: within 24 loads
// both answer, but for a chance of 2^-24 on NATS.
const MAX_RELOADS = 24;

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []),
);
if (!args.bin || !args.artifacts) {
  console.error('usage: node demo.test.mjs --bin <gateway-example> --artifacts <dir>');
  process.exit(2);
}
mkdirSync(args.artifacts, { recursive: true });
const shot = (page, name) => page.screenshot({ path: path.join(args.artifacts, `${name}.png`), fullPage: true });

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function withDeadline(promise, ms, what) {
  let timer;
  const deadline = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

// ---- the demo process ----------------------------------------------------------------------
class Demo {
  constructor(bin, port, todosPorts) {
    this.lines = [];
    this.waiters = [];
    this.pids = new Map();
    this.proc = spawn(bin, ['demo', '--port', String(port), '--todos-ports', todosPorts.join(',')], {
      // An environment of its own: never meets another Plume mesh on this host.
      env: { ...process.env, PLUME_ENV: `browser-test-${process.pid}`, RUST_LOG: process.env.RUST_LOG || 'warn' },
      // Its stdin is a pipe: `r` + Enter there restarts the children that died.
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => resolve({ code, signal })));
    this.exited.then(() => this.waiters.forEach((w) => w.reject(new Error('the demo exited'))));
    createInterface({ input: this.proc.stdout }).on('line', (line) => {
      console.log(`  [demo] ${line}`);
      this.lines.push(line);
      const started = /^started (\S+) \(pid (\d+)\)/.exec(line);
      if (started) this.pids.set(started[1], Number(started[2]));
      this.waiters = this.waiters.filter((w) => !(w.re.test(line) && (w.resolve(line), true)));
    });
  }

  waitLine(re, ms) {
    const seen = this.lines.find((l) => re.test(l));
    if (seen) return Promise.resolve(seen);
    return withDeadline(new Promise((resolve, reject) => this.waiters.push({ re, resolve, reject })), ms, `demo line ${re}`);
  }

  async stop() {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGTERM');
    return withDeadline(this.exited, STOP_TIMEOUT, 'the demo stops');
  }
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code !== 'ESRCH';
  }
}

// ---- the page ------------------------------------------------------------------------------
async function ready(page) {
  await page.locator('body[data-ready="yes"]').waitFor({ timeout: STEP_TIMEOUT });
}

async function todoTexts(page) {
  return page.locator('#todos li .text').allTextContents();
}

// Reload `page` until a find answered by `replica` shows; what it listed.
async function answeredBy(page, replica) {
  for (let load = 0; load < MAX_RELOADS; load++) {
    await page.reload();
    await ready(page);
    if ((await page.evaluate(() => document.body.dataset.answered)) === replica) return todoTexts(page);
  }
  throw new Error(`no find answered by ${replica} in ${MAX_RELOADS} loads`);
}

// ---- the steps -----------------------------------------------------------------------------
const ports = await Promise.all([freePort(), freePort(), freePort()]);
const [gatewayPort, ...todosPorts] = ports;
const demo = new Demo(args.bin, gatewayPort, todosPorts);
process.on('exit', () => demo.proc.kill('SIGKILL')); // never leave the demo behind
const userDataDir = mkdtempSync(path.join(tmpdir(), 'plume-chromium-'));
let context;
let page1;
let page2;
let passed = 0;
let failed = 0;

async function step(name, fn, { always = false } = {}) {
  if (failed && !always) {
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
    for (const [page, label] of [[page1, 'failure-tab1'], [page2, 'failure-tab2']]) {
      if (page) await shot(page, label).catch(() => {});
    }
  }
}

let url;
let dataFile;
await step('the demo prints its ready line', async () => {
  const store = await demo.waitLine(/^todos in \S+ \(removed when the demo stops\), shared$/, DEMO_READY_TIMEOUT);
  dataFile = store.split(' ')[2];
  const line = await demo.waitLine(/^gateway ready on http:\/\/\S+$/, DEMO_READY_TIMEOUT);
  url = line.split(' ').pop();
  if (url !== `http://127.0.0.1:${gatewayPort}`) throw new Error(`unexpected url in ${line}`);
  if (!existsSync(dataFile)) throw new Error(`no SQLite file at ${dataFile}`);
  await demo.waitLine(/^log in as demo@plume\.local \/ plume-demo$/, STEP_TIMEOUT);
  for (const name of ['todos-a', 'todos-b', 'gateway']) {
    if (!demo.pids.has(name)) throw new Error(`no pid printed for ${name}`);
  }
});

await step('the page loads the Feathers client from the gateway and asks for a login', async () => {
  // Loopback only: anything else the page would fetch is refused (and fails the check below).
  const launched = await launchLoopbackChromium(userDataDir, { width: 900, height: 1000 }, STEP_TIMEOUT);
  context = launched.context;
  const outside = launched.outside;
  page1 = context.pages()[0] || (await context.newPage());
  const errors = [];
  page1.on('pageerror', (error) => errors.push(error.message));
  await page1.goto(url);
  await page1.locator('#login-view').waitFor({ state: 'visible' });
  if (!(await page1.evaluate(() => typeof feathers === 'function' && typeof io === 'function'))) {
    throw new Error('the Feathers client or socket.io client did not load');
  }
  if (outside.length) throw new Error(`the page fetched outside loopback: ${outside}`);
  if (errors.length) throw new Error(`page errors: ${errors}`);
  await shot(page1, '1-login');
});

await step('a wrong password is refused, the demo login works', async () => {
  await page1.fill('#email', 'demo@plume.local');
  await page1.fill('#password', 'wrong');
  await page1.click('#login-form button');
  await page1.locator('#login-error', { hasText: 'Invalid login' }).waitFor();
  await page1.fill('#password', 'plume-demo');
  await page1.click('#login-form button');
  await ready(page1);
  await page1.locator('#todos li').first().waitFor();
});

const answers = new Map(); // replica -> todo texts it answered with
await step('both replicas answer across reloads, each with the shared todos', async () => {
  for (let load = 0; load < MAX_RELOADS && answers.size < 2; load++) {
    if (load > 0) {
      await page1.reload();
      await ready(page1);
    }
    const replica = await page1.evaluate(() => document.body.dataset.answered);
    const texts = await todoTexts(page1);
    if (!answers.has(replica)) {
      answers.set(replica, texts);
      await shot(page1, `2-answered-by-${replica}`);
    }
  }
  const replicas = [...answers.keys()].sort();
  if (replicas.join() !== 'todos-a,todos-b') throw new Error(`replicas that answered: ${replicas}`);
  // One store: each replica lists the welcome todo of both.
  for (const [replica, texts] of answers) {
    if (!texts.includes('Hello from todos-a') || !texts.includes('Hello from todos-b')) {
      throw new Error(`${replica} answered ${texts}`);
    }
  }
  await page1.locator('#seen', { hasText: 'todos-a, todos-b' }).waitFor();
});

const text = `Written in tab 1 at ${Date.now()}`;
let creator;
await step('a todo created in one tab appears in a second tab without reload', async () => {
  page2 = await context.newPage();
  await page2.goto(url); // logged in from the stored token (reAuthenticate)
  await ready(page2);
  await page2.evaluate(() => { window.__notReloaded = true; });
  await page1.fill('#new-text', text);
  await page1.press('#new-text', 'Enter');
  const item = page2.locator('#todos li', { hasText: text });
  await item.waitFor();
  if (!(await page2.evaluate(() => window.__notReloaded === true))) throw new Error('tab 2 reloaded');
  creator = await item.locator('.tag').textContent();
  if (!['todos-a', 'todos-b'].includes(creator)) throw new Error(`stored by ${creator}`);
  await page1.locator('#todos li', { hasText: text }).waitFor();
  await shot(page1, '3-tab1-created');
  await shot(page2, '3-tab2-created');
});

await step('the replica that did not create the todo lists it (one shared store)', async () => {
  const other = creator === 'todos-a' ? 'todos-b' : 'todos-a';
  const texts = await answeredBy(page1, other);
  if (!texts.includes(text)) throw new Error(`${other} answered ${texts}`);
  await page1.locator('#answered', { hasText: other }).waitFor();
  await shot(page1, `4-listed-by-${other}`);
});

await step('toggling and deleting work whichever replica answers, and update the other tab', async () => {
  const answered = new Set();
  const noError = async () => {
    const error = await page1.locator('#app-error').textContent();
    if (error) throw new Error(`tab 1 error: ${error}`);
  };
  // Three patches: on loopback and Redis the replicas take turns, so both answer one.
  const patched = page1.locator('#events[data-started="yes"] li', { hasText: 'patched' });
  for (const done of [true, false, true]) {
    const before = await patched.count();
    const box = page1.locator('#todos li', { hasText: text }).locator('input[type=checkbox]');
    await (done ? box.check() : box.uncheck());
    await page2.locator(done ? '#todos li.done' : '#todos li:not(.done)', { hasText: text }).waitFor();
    await patched.nth(before).waitFor();
    await noError();
    answered.add(await page1.evaluate(() => document.body.dataset.answered));
  }
  if ([...answered].some((r) => !['todos-a', 'todos-b'].includes(r))) throw new Error(`answered by ${[...answered]}`);
  await shot(page2, '5-tab2-toggled');
  await page1.locator('#todos li', { hasText: text }).locator('button').click();
  await page2.locator('#todos li', { hasText: text }).waitFor({ state: 'detached' });
  await page2.locator('#events li', { hasText: 'removed' }).first().waitFor();
  await noError();
});

await step('mesh health shows todos with both replicas up', async () => {
  await page1.click('#refresh');
  await page1.locator('#health li', { hasText: '2 replica(s)' }).waitFor();
  await page1.locator('#health-status', { hasText: 'all up' }).waitFor();
  await shot(page1, '6-health');
});

const survivor = `Kept in the shared store ${Date.now()}`;
await step('with both replicas killed the page says so; r + Enter in the demo brings them back', async () => {
  await page1.fill('#new-text', survivor);
  await page1.press('#new-text', 'Enter');
  await page1.locator('#todos li', { hasText: survivor }).waitFor();
  for (const name of ['todos-a', 'todos-b']) {
    const pid = demo.pids.get(name);
    process.kill(pid, 'SIGKILL');
    await demo.waitLine(new RegExp(`^${name} \\(pid ${pid}\\) died: signal 9; restart it with: `), STEP_TIMEOUT);
  }
  await page1.evaluate(() => { window.__notReloaded = true; });
  await page1.click('#refresh');
  await page1.locator('#unavailable', { hasText: '503' }).waitFor({ state: 'visible' });
  await page1.locator('#unavailable', { hasText: 'No todos replica is running' }).waitFor();
  const stale = await todoTexts(page1);
  if (stale.length) throw new Error(`the todos of the dead replicas are still listed: ${stale}`);
  await shot(page1, '7-unavailable');
  demo.proc.stdin.write('r\n');
  for (const name of ['todos-a', 'todos-b']) {
    await demo.waitLine(new RegExp(`^gateway serves ${name} again$`), STEP_TIMEOUT);
  }
  // The page finds again by itself: no reload, no click.
  await page1.locator('#unavailable').waitFor({ state: 'hidden' });
  await page1.locator('#todos li', { hasText: /Hello from todos-[ab]/ }).first().waitFor();
  // The todo created before both replicas died is back: it was in the shared store.
  await page1.locator('#todos li', { hasText: survivor }).waitFor();
  if (!(await page1.evaluate(() => window.__notReloaded === true))) throw new Error('tab 1 reloaded');
  await shot(page1, '8-back');
});

if (context) await context.close().catch(() => {});
rmSync(userDataDir, { recursive: true, force: true });

await step('stopping the demo stops every child process', async () => {
  const { code, signal } = await demo.stop();
  if (code !== 0) throw new Error(`the demo exited with ${code ?? signal}`);
  await demo.waitLine(/^demo stopped$/, STEP_TIMEOUT);
  const left = [...demo.pids].filter(([, pid]) => alive(pid));
  if (left.length) throw new Error(`still running: ${left.map(([n, p]) => `${n} (pid ${p})`)}`);
  if (dataFile && existsSync(path.dirname(dataFile))) throw new Error(`${path.dirname(dataFile)} is left behind`);
}, { always: true });

console.log(`screenshots in ${args.artifacts}`);
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
