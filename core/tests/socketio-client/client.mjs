// Drives Plume's socket.io server with the official socket.io-client for core/tests/socket.rs.
// Usage: node client.mjs http://127.0.0.1:PORT
// Prints one JSON line per step: {"step": name, "value": ...}, then {"step": "done"}.
// The Rust test makes every assertion; this script only records what it saw. Every wait has a
// deadline, so it never hangs.
import { io } from 'socket.io-client'

const url = process.argv[2]
const TIMEOUT = 5000
const out = (step, value) => console.log(JSON.stringify({ step, value }))
setTimeout(() => {
  out('fatal', 'global timeout')
  process.exit(2)
}, 60000).unref()

function connect(opts = {}) {
  return new Promise((resolve, reject) => {
    const s = io(url, { reconnection: false, forceNew: true, timeout: TIMEOUT, ...opts })
    s.seen = []
    s.onAny((event, ...args) => s.seen.push([event, ...args]))
    s.once('connect', () => resolve(s))
    s.once('connect_error', (e) => {
      s.close()
      reject(e)
    })
  })
}

// emit with an acknowledgement; resolves with every acknowledgement argument
function raw(s, ...args) {
  return new Promise((resolve) => {
    s.timeout(TIMEOUT).emit(...args, (timeoutError, ...ack) => {
      resolve(timeoutError ? { timeout: true } : ack)
    })
  })
}

function upgraded(s) {
  return new Promise((resolve) => {
    const engine = s.io.engine
    if (engine.transport.name === 'websocket') return resolve(true)
    const timer = setTimeout(() => resolve(false), 3000)
    engine.once('upgrade', () => {
      clearTimeout(timer)
      resolve(true)
    })
  })
}

// A round trip on each socket: any event sent to it before this point has arrived.
const flush = (sockets) => Promise.all(sockets.map((s) => raw(s, 'find', 'whoami', {})))
const events = (s) => s.seen.filter(([e]) => e.startsWith('todos '))

try {
  const a = await connect()
  const b = await connect({ transports: ['websocket'] })
  const c = await connect({ transports: ['polling'] })
  out('ids', { a: a.id, b: b.id, c: c.id })
  out('a_upgraded', await upgraded(a))
  out('transports', { b: b.io.engine.transport.name, c: c.io.engine.transport.name })

  // anonymous calls and wrong arguments
  out('whoami_anon', await raw(a, 'find', 'whoami', { q: 1, deep: { x: [1, 2] } }))
  out('too_many', await raw(a, 'find', 'todos', {}, {}))
  out('too_many_get', await raw(a, 'get', 'todos', 1, {}, {}))
  out('unknown', await raw(a, 'find', 'nope', {}))
  out('not_allowed', await raw(a, 'remove', 'limited', 1, {}))
  out('custom_not_exposed', await raw(a, 'stats', 'limited', {}, {}))
  out('bad_id', await raw(b, 'get', 'todos', { x: 1 }, {}))
  out('bad_query', await raw(c, 'find', 'todos', 'str'))
  out('no_path', await raw(a, 'find'))
  a.emit('create', 'todos', { text: 'no ack' }, {})
  // Events without an ack run concurrently with later calls: wait (with a deadline) for the
  // record to show up instead of assuming an order.
  let afterNoAck = await raw(a, 'find', 'todos', {})
  for (let i = 0; i < 100 && Array.isArray(afterNoAck[1]) && afterNoAck[1].length === 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 20))
    afterNoAck = await raw(a, 'find', 'todos', {})
  }
  out('after_no_ack', afterNoAck)
  out('get_missing', await raw(a, 'get', 'todos', 999, {}))
  out('custom', await raw(a, 'stats', 'todos', { tag: 't' }, {}))
  out('get_ok', await raw(a, 'get', 'todos', 1))
  out('pre_ws', await raw(a, 'get', 'pre', 1))
  out('pre_polling', await raw(c, 'get', 'pre', 1))
  out('pre_bad', await raw(a, 'get', 'pre', 2))

  // login over the socket
  out('login_bad', await raw(a, 'create', 'authentication', { strategy: 'local', password: 'wrong' }, {}))
  out('login', await raw(a, 'create', 'authentication', { strategy: 'local', password: 'secret' }, {}))
  out('whoami_a', await raw(a, 'find', 'whoami', {}))
  await raw(c, 'create', 'authentication', { strategy: 'local', password: 'secret' }, {})

  // handshake authentication
  const d = await connect({ extraHeaders: { Authorization: 'Bearer good' } })
  out('whoami_d', await raw(d, 'find', 'whoami', {}))
  try {
    const e = await connect({ extraHeaders: { Authorization: 'Bearer bad' } })
    e.close()
    out('refused', { connected: true })
  } catch (error) {
    out('refused', { connected: false, message: error.message, type: error.type ?? null })
  }
  const f = await connect({ extraHeaders: { Authorization: 'Basic abc' } })
  out('whoami_f', await raw(f, 'find', 'whoami', {}))

  // real-time events: a, c and d are authenticated; b and f are anonymous
  out('create', await raw(a, 'create', 'todos', { text: 'ev' }, {}))
  out('multi', await raw(b, 'create', 'todos', [{ text: 'm1' }, { text: 'm2' }], {}))
  await flush([a, b, c, d, f])
  out('events1', { a: events(a), b: events(b), c: events(c), d: events(d), f: events(f) })

  // logout: a stays connected and gets no more events
  out('logout', await raw(a, 'remove', 'authentication', null, {}))
  out('whoami_a2', await raw(a, 'find', 'whoami', {}))
  a.seen.length = 0
  c.seen.length = 0
  await raw(c, 'create', 'todos', { text: 'after logout' }, {})
  await flush([a, c])
  out('events2', { a: events(a), c: events(c), a_connected: a.connected })

  for (const s of [a, b, c, d, f]) s.disconnect()
  out('done', true)
  // No process.exit here: Node exits once the pending disconnect requests (polling) are sent.
} catch (error) {
  out('fatal', String(error?.stack ?? error))
  process.exit(1)
}
