// A feathers-distributed replica of `todos` (a memory service) under KEY (default `todos`):
// it consumes nothing. Results carry `replica: NAME`. Prints `LISTENING <port>`, and
// `EVENTS SUBSCRIBER` whenever a gateway's events subscriber connects (events published before
// that are lost: cote's pub/sub keeps nothing), `PUBLISHED <path>` whenever it publishes.
import { feathers } from '@feathersjs/feathers'
import express, { rest, json, errorHandler } from '@feathersjs/express'
import { MemoryService } from '@feathersjs/memory'
import { BadRequest } from '@feathersjs/errors'
import distribution from '@kalisio/feathers-distributed'
import { cote, delays, say } from './fleet.mjs'

const port = Number(process.env.PORT)
const name = process.env.NAME || 'node'
const app = express(feathers())
app.use(json())
app.configure(rest())
app.configure(distribution({ cote, ...delays, key: process.env.KEY || 'todos', remoteServices: () => false }))
let next = 1
// Like the Plume demo's todos: no update.
app.use('todos', new MemoryService({ paginate: false, multi: true }), { methods: ['find', 'get', 'create', 'patch', 'remove'] })
app.service('todos').hooks({
  before: {
    create: [(ctx) => {
      if (typeof ctx.data.text !== 'string') throw new BadRequest('text is required', { field: 'text' })
      ctx.data = { id: `${name}-${next++}`, done: false, ...ctx.data }
    }]
  },
  after: {
    all: [(ctx) => {
      const mark = (r) => (r && typeof r === 'object' ? { ...r, replica: name } : r)
      ctx.result = Array.isArray(ctx.result) ? ctx.result.map(mark) : mark(ctx.result)
    }]
  }
})
app.use(errorHandler({ html: false, logger: false }))
// One todo of its own, as the Plume demo's replicas have (`<name>-1`).
await app.service('todos').create({ text: 'welcome' })
await app.listen(port)
say('LISTENING ' + port)
// The publishers are made a few component delays after configure. feathers-distributed
// installs a service's event listeners when it publishes the service (publicationDelay after
// start): `PUBLISHED <path>` says that moment has passed.
const watch = setInterval(() => {
  if (!app.serviceEventsPublisher || !app.servicePublisher) return
  clearInterval(watch)
  // cote's Publisher holds an axon pub-emitter, which holds the pub socket that accepts. A
  // subscriber may have connected before this tick (the publisher advertises itself as soon as
  // it binds): axon keeps the accepted sockets in `socks`, so those are told too.
  const pub = app.serviceEventsPublisher.sock.sock
  for (let i = 0; i < pub.socks.length; i++) say('EVENTS SUBSCRIBER')
  pub.on('connect', () => say('EVENTS SUBSCRIBER'))
  const publish = app.servicePublisher.publish.bind(app.servicePublisher)
  app.servicePublisher.publish = (topic, data) => {
    publish(topic, data)
    if (topic === 'service') say('PUBLISHED ' + data.path)
  }
}, 10)
