// A Node Hemera 7 caller for Plume's interop tests: `node client.js NATS_URL`.
// Acts on the Plume service {topic:'plume'} and prints one JSON line per case, then exits.
'use strict'
const Hemera = require('nats-hemera')
const nats = require('nats').connect({ url: process.argv[2] })
const hemera = new Hemera(nats, { logLevel: 'silent', name: 'node-client', timeout: 2000 })

function errorOf (e) {
  const out = {}
  for (const k of Object.getOwnPropertyNames(e)) if (k !== 'stack') out[k] = e[k]
  out.name = e.name
  out.message = e.message
  return out
}

async function run (label, message, extra) {
  const started = Date.now()
  try {
    const { data, context } = await hemera.act(message)
    const line = { case: label, data, ms: Date.now() - started, traceId: context.trace$.traceId,
      duration: context.trace$.duration, meta: context.meta$ }
    if (extra) Object.assign(line, extra(context))
    console.log(JSON.stringify(line))
  } catch (e) {
    console.log(JSON.stringify({ case: label, error: errorOf(e), ms: Date.now() - started }))
  }
}

hemera.ready(async () => {
  // Served by this process: Plume's `nested` handler acts on it.
  hemera.add({ topic: 'node', cmd: 'echo' }, async function () {
    return { meta: this.meta$, traceId: this.trace$.traceId, parentSpanId: this.trace$.parentSpanId }
  })
  await new Promise((resolve) => nats.flush(resolve))
  await run('add', { topic: 'plume', cmd: 'add', a: 1, b: 2 })
  await run('typed', { topic: 'plume', cmd: 'typed', a: 1.5, b: 2 })
  await run('notfound', { topic: 'plume', cmd: 'nope' })
  await run('fail', { topic: 'plume', cmd: 'fail' })
  await run('invalid', { topic: 'plume', cmd: 'typed', a: 'x', b: 2 })
  await run('schema', { topic: 'plume', cmd: 'schema', a: 1, b: 'x' })
  await run('schemaok', { topic: 'plume', cmd: 'schema', a: 1, b: 2 })
  await run('timeout', { topic: 'plume', cmd: 'slow', timeout$: 200 })
  await run('meta', { topic: 'plume', cmd: 'meta', meta$: { k: 1 }, delegate$: { d: 2 } })
  await run('nested', { topic: 'plume', cmd: 'nested', meta$: { user: 'u1' } })
  // maxMessages$ against a streaming Plume handler: one callback per reply.
  await new Promise((resolve) => {
    const got = []
    hemera.act({ topic: 'plume', cmd: 'stream', maxMessages$: 3 }, (err, data) => {
      got.push(err ? { error: err.name } : data)
      if (got.length === 3) {
        console.log(JSON.stringify({ case: 'stream', data: got }))
        resolve()
      }
    })
  })
  await hemera.act({ topic: 'plume', cmd: 'note', n: 7, pubsub$: true })
  console.log(JSON.stringify({ case: 'pubsub', sent: true }))
  hemera.close(() => process.exit(0))
})
