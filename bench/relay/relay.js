// Event relay probe of bench/run.sh: a socket.io client logged in on the gateway listens to
// `todos created`; creates are POSTed to one replica directly, one at a time; the delay is from
// just before the POST to the event on the gateway socket. Prints one JSON line.
// Usage: node relay.js GATEWAY_URL REPLICA_URL TOKEN COUNT
'use strict';
const { io } = require('socket.io-client');

const [gateway, replica, token, countText] = process.argv.slice(2);
const count = Number(countText || 100);
const warmup = 5;
const run = `${process.pid}-${Date.now()}`;
const seen = new Map(); // text -> number of events
const waiters = new Map(); // text -> resolve
const overall = setTimeout(() => fail('overall deadline (60 s)'), 60000);

function fail(why) {
  console.log(JSON.stringify({ error: why }));
  process.exit(1);
}

function median(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function main() {
  const socket = io(gateway, { transports: ['websocket'], reconnection: false });
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  await new Promise((resolve, reject) => {
    socket.emit('create', 'authentication', { strategy: 'jwt', accessToken: token }, (err, res) =>
      err ? reject(new Error(JSON.stringify(err))) : resolve(res));
  });
  socket.on('todos created', (todo) => {
    const text = todo && todo.text;
    seen.set(text, (seen.get(text) || 0) + 1);
    const done = waiters.get(text);
    if (done) { waiters.delete(text); done(performance.now()); }
  });
  const delays = [];
  let missing = 0;
  for (let i = 0; i < warmup + count; i++) {
    const text = `relay ${run} ${i}`;
    const arrived = new Promise((resolve) => {
      waiters.set(text, resolve);
      setTimeout(() => resolve(null), 2000);
    });
    const start = performance.now();
    const res = await fetch(`${replica}/todos`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ text }),
    });
    if (res.status !== 201 && res.status !== 200) fail(`create answered ${res.status}`);
    await res.arrayBuffer();
    const at = await arrived;
    waiters.delete(text);
    if (at === null) { missing++; continue; }
    if (i >= warmup) delays.push(at - start);
  }
  // Let late duplicates arrive.
  await new Promise((resolve) => setTimeout(resolve, 500));
  let duplicates = 0;
  for (const [text, n] of seen) if (text && text.startsWith(`relay ${run} `) && n > 1) duplicates += n - 1;
  delays.sort((a, b) => a - b);
  socket.close();
  clearTimeout(overall);
  console.log(JSON.stringify({
    events: delays.length, missing, duplicates,
    p50_ms: median(delays, 0.5), p90_ms: median(delays, 0.9),
  }));
  process.exit(missing > 0 || delays.length < count ? 1 : 0);
}

main().catch((e) => fail(String(e && e.message || e)));
