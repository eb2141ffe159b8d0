// The reference of bench/sql.sh: a Node Feathers 5 app (Koa, as `npm create feathers` makes it)
// with one `people` service on @feathersjs/knex, over the SQLite file or PostgreSQL database that
// the Plume server of the same run uses. Paginated as a generated app is: default 10, max 50.
//
//   node server.mjs --client better-sqlite3 --url /tmp/people.db --port 4040
//   node server.mjs --client pg --url postgres://plume@127.0.0.1:5432/postgres --port 4040
//
// Prints `knex ready on http://127.0.0.1:PORT` once it listens.
import { feathers } from '@feathersjs/feathers'
import { koa, rest, bodyParser, errorHandler } from '@feathersjs/koa'
import { KnexService } from '@feathersjs/knex'
import knex from 'knex'

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), [])
)
const client = args.client ?? 'better-sqlite3'
const port = Number(args.port ?? 4040)
const connection = client === 'pg' ? args.url : { filename: args.url }

const db = knex({ client, connection, useNullAsDefault: true, pool: client === 'pg' ? { min: 2, max: 10 } : undefined })
if (client === 'better-sqlite3') {
  // The same settings as Plume's SQLite pool: WAL, a busy timeout.
  await db.raw('PRAGMA journal_mode = WAL')
  await db.raw('PRAGMA busy_timeout = 5000')
}

const app = koa(feathers())
app.use(errorHandler())
app.use(bodyParser())
app.configure(rest())
app.use('people', new KnexService({ Model: db, name: 'people', id: 'id', paginate: { default: 10, max: 50 } }))

await app.listen(port, '127.0.0.1')
console.log(`knex ready on http://127.0.0.1:${port}`)
