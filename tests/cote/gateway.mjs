// A feathers-distributed gateway (REST and socket.io on PORT) that mounts every remote
// service and publishes no service of its own. Prints `SERVICE <path>` when it mounts one,
// `REMOVED <path>` when it drops one, and `LISTENING <port>`.
import { feathers } from '@feathersjs/feathers'
import express, { rest, json, errorHandler } from '@feathersjs/express'
import socketio from '@feathersjs/socketio'
import distribution from '@kalisio/feathers-distributed'
import { cote, delays, say } from './fleet.mjs'

const port = Number(process.env.PORT)
const app = express(feathers())
app.use(json())
app.configure(rest())
app.configure(socketio())
app.configure(distribution({ cote, ...delays, key: process.env.KEY || 'gateway', services: () => false }))
app.on('connection', (connection) => app.channel('everybody').join(connection))
app.publish(() => app.channel('everybody'))
app.on('service', (d) => say('SERVICE ' + d.path))
app.on('service-removed', (d) => say('REMOVED ' + d.path))
app.use(errorHandler({ html: false, logger: false }))
await app.listen(port)
say('LISTENING ' + port)
