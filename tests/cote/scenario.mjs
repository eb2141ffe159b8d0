// The checks a client of a gateway makes on its `todos`, over REST and socket.io:
//   node scenario.mjs http://127.0.0.1:PORT
// CRUD, query syntax, errors (class and code), and every event reaching this socket.io client
// exactly once. Env EXPECT_REPLICAS=a,b: creates must be answered by each of these replicas
// (then, each replica having its own store, only creates and their events are checked).
// Env HEALTHCHECK=KEY: a Node gateway's healthcheck of that key must find `todos` healthy.
// Prints `SCENARIO OK` and exits 0, or throws (exit 1) naming what failed.
import assert from 'node:assert/strict'
import { feathers } from '@feathersjs/feathers'
import socketioClient from '@feathersjs/socketio-client'
import { io } from 'socket.io-client'

const base = process.argv[2]
const expectReplicas = (process.env.EXPECT_REPLICAS || '').split(',').filter(Boolean)

async function http (method, path, body) {
  const res = await fetch(base + path, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : null }
}
const list = (r) => (Array.isArray(r) ? r : r.data)

const socket = io(base, { transports: ['websocket'] })
const client = feathers().configure(socketioClient(socket, { timeout: 10000 }))
const todos = client.service('todos')
const seen = { created: [], patched: [], updated: [], removed: [] }
for (const e of Object.keys(seen)) todos.on(e, (d) => seen[e].push(d))
await new Promise((resolve, reject) => { socket.on('connect', resolve); socket.on('connect_error', reject) })

const tag = 'scenario-' + process.pid

// Readiness: a gateway's events subscriber connects to a replica's events publisher a hello
// after it mounts the service, and cote keeps no event for later. Probe creates (not counted
// below) until an event came back from every expected replica: at most 40, 300 ms each.
{
  const from = new Set()
  const want = expectReplicas.length ? expectReplicas : [undefined]
  const probe = 'probe-' + process.pid
  todos.on('created', (d) => { if (typeof d.text === 'string' && d.text.startsWith(probe)) from.add(expectReplicas.length ? d.replica : undefined) })
  for (let i = 0; i < 40 && !want.every((r) => from.has(r)); i++) {
    await http('POST', '/todos', { text: `${probe}-${i}` })
    await new Promise((resolve) => setTimeout(resolve, 300))
  }
  assert.ok(want.every((r) => from.has(r)), 'no event came back from ' + want.filter((r) => !from.has(r)))
}
// With several replicas, each has its own store: only creates (and their events) are checked.
const full = expectReplicas.length <= 1
const want = []
let id
if (full) {
  // REST: create, get, find with query syntax, patch, update, remove.
  const made = await http('POST', '/todos', { text: tag + '-a' })
  assert.equal(made.status, 201, JSON.stringify(made))
  assert.equal(made.body.text, tag + '-a')
  id = made.body.id
  assert.ok(id, 'an id')
  const got = await http('GET', '/todos/' + encodeURIComponent(id))
  assert.equal(got.status, 200, JSON.stringify(got))
  assert.equal(got.body.text, tag + '-a')
  await http('POST', '/todos', { text: tag + '-b', done: true })
  const found = await http('GET', `/todos?text=${tag}-b`)
  assert.equal(found.status, 200, JSON.stringify(found))
  assert.deepEqual(list(found.body).map((t) => t.text), [tag + '-b'])
  const sorted = await http('GET', '/todos?$sort[text]=-1&$limit=1&text[$in][]=' + tag + '-a&text[$in][]=' + tag + '-b')
  assert.equal(sorted.status, 200, JSON.stringify(sorted))
  assert.deepEqual(list(sorted.body).map((t) => t.text), [tag + '-b'])
  const patched = await http('PATCH', '/todos/' + encodeURIComponent(id), { done: true })
  assert.equal(patched.status, 200, JSON.stringify(patched))
  assert.equal(patched.body.done, true)
  // The todos of the demo (and of replica.mjs) offer no update: 405 MethodNotAllowed.
  const updated = await http('PUT', '/todos/' + encodeURIComponent(id), { text: tag + '-c', done: false })
  assert.equal(updated.status, 405, JSON.stringify(updated))
  assert.equal(updated.body.name, 'MethodNotAllowed')

  // Errors keep their class and code.
  const missing = await http('GET', '/todos/no-such-todo')
  assert.equal(missing.status, 404, JSON.stringify(missing))
  assert.equal(missing.body.name, 'NotFound')
  assert.equal(missing.body.className, 'not-found')
  const bad = await http('POST', '/todos', { nope: 1 })
  assert.equal(bad.status, 400, JSON.stringify(bad))
  assert.equal(bad.body.name, 'BadRequest')

  // socket.io: a call and an error.
  const viaSocket = await todos.create({ text: tag + '-s' })
  assert.equal(viaSocket.text, tag + '-s')
  await assert.rejects(todos.get('no-such-todo'), (e) => e.name === 'NotFound' && e.code === 404)

  const removed = await http('DELETE', '/todos/' + encodeURIComponent(id))
  assert.equal(removed.status, 200, JSON.stringify(removed))
  assert.equal((await http('GET', '/todos/' + encodeURIComponent(id))).status, 404)
  want.push(tag + '-a', tag + '-b', tag + '-s')
}

// Sharing: creates spread over the expected replicas (a gateway's requester may connect to a
// replica's responder a hello interval after the first: at most 40 creates, 4 at least).
const replicas = new Set()
let creates = 0
while (creates < 4 || (creates < 40 && !expectReplicas.every((r) => replicas.has(r)))) {
  const r = await http('POST', '/todos', { text: `${tag}-r${creates++}` })
  assert.equal(r.status, 201, JSON.stringify(r))
  replicas.add(r.body.replica)
}
for (const r of expectReplicas) assert.ok(replicas.has(r), `replica ${r} answered none of ${[...replicas]}`)

// Events: a last marker event; ordered delivery means every earlier event is in by then.
const marker = tag + '-marker'
const markerSeen = new Promise((resolve, reject) => {
  const t = setTimeout(() => reject(new Error('marker event never arrived: ' + JSON.stringify(seen))), 10000)
  todos.on('created', (d) => { if (d.text === marker) { clearTimeout(t); resolve() } })
})
await http('POST', '/todos', { text: marker })
await markerSeen
const mine = (e) => seen[e].filter((d) => typeof d.text === 'string' && d.text.startsWith(tag))
const texts = mine('created').map((d) => d.text).sort()
want.push(marker)
for (let i = 0; i < creates; i++) want.push(`${tag}-r${i}`)
assert.deepEqual(texts, want.sort(), 'each created event exactly once')
if (full) {
  assert.equal(mine('patched').length, 1, 'one patched event: ' + JSON.stringify(seen.patched))
  assert.equal(mine('updated').length, 0, 'no updated event')
  assert.equal(seen.removed.filter((d) => d.id === id).length, 1, 'one removed event')
}
// A feathers-distributed gateway's healthcheck asks each replica's responder (`healthcheck`).
if (process.env.HEALTHCHECK) {
  const health = await http('GET', '/distribution/healthcheck/' + process.env.HEALTHCHECK)
  assert.equal(health.status, 200, JSON.stringify(health))
  assert.deepEqual(health.body, { todos: true })
}
socket.close()
console.log('SCENARIO OK')
