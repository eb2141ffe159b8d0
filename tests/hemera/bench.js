// nats-hemera's own figures for pattern/benches/pattern.rs: `node bench.js NATS_URL`.
// Acts {topic:'math',cmd:'add'} on the Node responder (server.js): 1 in flight (p50 of 2000
// acts after 200 warm-up acts), then 64 in flight (20000 acts, at most 20 s). One JSON line.
'use strict'
const Hemera = require('nats-hemera')
const nats = require('nats').connect({ url: process.argv[2] })
const hemera = new Hemera(nats, { logLevel: 'silent', timeout: 5000 })
const msg = { topic: 'math', cmd: 'add', a: 1, b: 2 }

function inFlight64 (total, limitMs) {
  return new Promise((resolve, reject) => {
    let started = 0
    let done = 0
    const t0 = Date.now()
    const next = () => {
      if (started >= total || Date.now() - t0 > limitMs) {
        if (done === started) resolve({ done, ms: Date.now() - t0 })
        return
      }
      started++
      hemera.act(msg).then(() => { done++; next() }, reject)
    }
    for (let i = 0; i < 64; i++) next()
  })
}

hemera.ready(async () => {
  for (let i = 0; i < 200; i++) await hemera.act(msg)
  const lat = []
  for (let i = 0; i < 2000; i++) {
    const t0 = process.hrtime.bigint()
    await hemera.act(msg)
    lat.push(Number(process.hrtime.bigint() - t0) / 1e3)
  }
  lat.sort((a, b) => a - b)
  const { done, ms } = await inFlight64(20000, 20000)
  console.log(JSON.stringify({ p50_us: lat[lat.length >> 1], p99_us: lat[Math.floor(lat.length * 0.99)],
    acts_per_s_64: Math.round(done / (ms / 1000)) }))
  hemera.close(() => process.exit(0))
})
