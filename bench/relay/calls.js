// Socket call probe of bench/socket_calls.sh: one socket.io client on the gateway (websocket),
// logged in with the access token, makes COUNT `find` calls on `todos`, IN_FLIGHT at a time,
// and prints one JSON line: the calls, the milliseconds they took, the size of one answer.
// Usage: node calls.js GATEWAY_URL TOKEN COUNT [IN_FLIGHT]
'use strict';
const { io } = require('socket.io-client');

const [gateway, token, countText, inFlightText] = process.argv.slice(2);
const count = Number(countText || 1000);
const inFlight = Number(inFlightText || 1);
const overall = setTimeout(() => fail('overall deadline (300 s)'), 300000);

function fail(why) {
  console.log(JSON.stringify({ error: String(why) }));
  process.exit(1);
}

function call(socket, ...args) {
  return new Promise((resolve, reject) => {
    socket.timeout(10000).emit(...args, (timeout, error, result) => {
      if (timeout) reject(new Error('no answer within 10 s'));
      else if (error) reject(new Error(JSON.stringify(error)));
      else resolve(result);
    });
  });
}

async function main() {
  const socket = io(gateway, { transports: ['websocket'], reconnection: false });
  await new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', reject);
  });
  await call(socket, 'create', 'authentication', { strategy: 'jwt', accessToken: token });
  const bytes = JSON.stringify(await call(socket, 'find', 'todos', {})).length;
  const start = Date.now();
  let left = count;
  const worker = async () => {
    while (left > 0) {
      left -= 1;
      await call(socket, 'find', 'todos', {});
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  console.log(JSON.stringify({ calls: count, ms: Date.now() - start, answer_bytes: bytes }));
  socket.close();
  clearTimeout(overall);
}

main().catch(fail);
