// Start Plume's adapter-test-server, wait for its readiness line, run the suite (run.js) against
// it with mocha, stop the server by PID, and print one summary line:
//   adapter-tests (STORE): N passed, N failed
// Exits non-zero unless exactly EXPECT tests passed with none failed and none pending (skipped).
//
// Usage: node with-server.js --bin SERVER --store memory|sqlite|postgres --expect N
//          [--database-url URL]
'use strict';

const { spawn } = require('child_process');
const path = require('path');
const readline = require('readline');
const Mocha = require('mocha');

function args() {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    out[argv[i].replace(/^--/, '')] = argv[i + 1];
  }
  for (const key of ['bin', 'store', 'expect']) {
    if (!out[key]) throw new Error(`--${key} is required`);
  }
  return out;
}

function startServer(opts) {
  const serverArgs = ['--store', opts.store, '--port', '0'];
  if (opts['database-url']) serverArgs.push('--database-url', opts['database-url']);
  const child = spawn(opts.bin, serverArgs, { stdio: ['pipe', 'pipe', 'inherit'] });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error('the server printed no readiness line within 30 s'));
    }, 30000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`the server exited (${code}) before it was ready`));
    });
    readline.createInterface({ input: child.stdout }).on('line', (line) => {
      const match = line.match(/listening on (http:\/\/\S+)/);
      if (match) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        resolve({ child, url: match[1] });
      }
    });
  });
}

async function main() {
  const opts = args();
  const { child, url } = await startServer(opts);
  const stopped = new Promise((resolve) => child.once('exit', resolve));
  process.env.PLUME_URL = url;
  process.env.PLUME_STORE = opts.store;
  const mocha = new Mocha({ timeout: 20000, reporter: 'spec' });
  mocha.addFile(path.join(__dirname, 'run.js'));
  const stats = await new Promise((resolve) => {
    const runner = mocha.run(() => resolve(runner.stats));
  });
  // Stop by PID; closing stdin also stops it.
  process.kill(child.pid, 'SIGTERM');
  child.stdin.end();
  await stopped;
  const expect = Number(opts.expect);
  console.log(
    `adapter-tests (${opts.store}): ${stats.passes} passed, ${stats.failures} failed, ${stats.pending} skipped`
  );
  const ok =
    stats.failures === 0 && stats.pending === 0 && stats.passes === expect && !process.exitCode;
  if (!ok) {
    console.error(`adapter-tests (${opts.store}): expected ${expect} passed, 0 failed, 0 skipped`);
    process.exit(1);
  }
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
