// A Node Hemera 7 service for Plume's interop tests: `node server.js NATS_URL [NAME]`.
// Adds {topic:'math'} actions (and {topic:'share',cmd:'who'}), prints READY once subscribed,
// and serves until killed.
'use strict'
const Hemera = require('nats-hemera')
const HemeraJoi = require('hemera-joi')
const nats = require('nats').connect({ url: process.argv[2] })
const name = process.argv[3] || 'node-server'
const hemera = new Hemera(nats, { logLevel: 'silent', name, timeout: 2000 })
hemera.use(HemeraJoi)

hemera.ready(async () => {
  const Joi = hemera.joi
  hemera.add({ topic: 'math', cmd: 'add' }, async (req) => req.a + req.b)
  hemera.add({ topic: 'math', cmd: 'fail' }, async () => {
    throw Object.assign(new Error('Uups'), { code: 444, extra: 'x' })
  })
  hemera.add({ topic: 'math', cmd: 'slow' }, () => new Promise((resolve) => setTimeout(() => resolve('late'), 1500)))
  hemera.add({ topic: 'math', cmd: 'meta' }, async function () {
    return { meta: this.meta$, delegate: this.delegate$ }
  })
  hemera.add({ topic: 'math', cmd: 'joi', a: Joi.number().required() }, async (req) => req.a * 2)
  hemera.add({ topic: 'math', cmd: 'stream' }, function (req, reply) {
    for (let i = 0; i < req.n; i++) this.reply.next(i)
  })
  // Acts back on Plume from inside a handler: the nested act must carry meta$ and the trace.
  hemera.add({ topic: 'math', cmd: 'nested' }, async function () {
    const { data } = await this.act({ topic: 'plume', cmd: 'trace' })
    return { inner: data, trace: this.trace$, meta: this.meta$ }
  })
  hemera.add({ topic: 'share', cmd: 'who' }, async () => name)
  await new Promise((resolve) => nats.flush(resolve))
  process.stdout.write('READY\n')
})
