// A long-lived socket.io client for the feathers-distributed ports (tests/tests/fd_*.rs), driven
// over stdin/stdout: one JSON command per line in, one JSON answer per line out
// ({id, value} or {id, error}). The Rust tests make every assertion; this only runs the official
// socket.io-client and records what it saw. Every wait has a deadline, so it never hangs.
import { io } from 'socket.io-client'
import { createInterface } from 'node:readline'

const TIMEOUT = 8000
const sockets = new Map()
const reply = (id, body) => process.stdout.write(JSON.stringify({ id, ...body }) + '\n')

function connect(url, headers) {
  return new Promise((resolve, reject) => {
    const s = io(url, { reconnection: false, forceNew: true, timeout: TIMEOUT, transports: ['websocket'], extraHeaders: headers ?? {} })
    s.seen = []
    s.onAny((event, ...args) => s.seen.push([event, ...args]))
    s.once('connect', () => resolve(s))
    s.once('connect_error', (e) => { s.close(); reject(e) })
  })
}

function call(s, args) {
  return new Promise((resolve) => {
    s.timeout(TIMEOUT).emit(...args, (timeoutError, ...ack) => resolve(timeoutError ? { timeout: true } : ack))
  })
}

async function waitFor(s, event, count, ms) {
  const end = Date.now() + (ms ?? TIMEOUT)
  for (;;) {
    const got = s.seen.filter(([e]) => e === event)
    if (got.length >= count || Date.now() > end) return got.map(([, ...args]) => args)
    await new Promise((r) => setTimeout(r, 10))
  }
}

async function run(cmd) {
  const s = sockets.get(cmd.name)
  switch (cmd.op) {
    case 'connect':
      sockets.set(cmd.name, await connect(cmd.url, cmd.headers))
      return true
    case 'call':
      return call(s, cmd.args)
    case 'wait':
      return waitFor(s, cmd.event, cmd.count ?? 1, cmd.ms)
    case 'seen':
      return s.seen.filter(([e]) => !cmd.prefix || e.startsWith(cmd.prefix))
    case 'clear':
      s.seen.length = 0
      return true
    case 'close':
      s.disconnect()
      sockets.delete(cmd.name)
      return true
    default:
      throw new Error(`unknown op ${cmd.op}`)
  }
}

const rl = createInterface({ input: process.stdin })
rl.on('line', (line) => {
  const cmd = JSON.parse(line)
  run(cmd).then((value) => reply(cmd.id, { value }), (e) => reply(cmd.id, { error: String(e?.message ?? e) }))
})
rl.on('close', () => {
  for (const s of sockets.values()) s.disconnect()
  setTimeout(() => process.exit(0), 100).unref()
})
