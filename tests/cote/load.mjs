// Load through a gateway while a replica dies:
//   node load.mjs http://127.0.0.1:PORT SURVIVOR [create|find]
// Creates todos (or finds one, `$limit=1`: each replica answers with its own) with 4 concurrent
// loops. Prints `BOTH` once two replicas have answered, then, after a `killed` line on stdin,
// `RECOVERED <failed calls since>` once 20 calls in a row were answered by SURVIVOR. Bounded:
// 3000 calls and 60 s, then it exits 1.
import readline from 'node:readline'

const [base, survivor, method = 'create'] = process.argv.slice(2)
const seen = new Set()
let killed = false
let failures = 0
let streak = 0
let calls = 0
let saidBoth = false
const stopAt = Date.now() + 60000
readline.createInterface({ input: process.stdin }).on('line', (l) => { if (l.trim() === 'killed') killed = true })

async function loop () {
  while (calls < 3000 && Date.now() < stopAt) {
    calls++
    let ok = false
    let replica
    let why
    try {
      if (method === 'find') {
        const res = await fetch(base + '/todos?$limit=1')
        const body = await res.json()
        const list = Array.isArray(body) ? body : body.data
        ok = res.status === 200 && Array.isArray(list) && list.length === 1
        replica = ok ? list[0].replica : undefined
        why = JSON.stringify(body).slice(0, 200)
      } else {
        const res = await fetch(base + '/todos', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ text: 'load' }) })
        const body = await res.json()
        ok = res.status === 201
        replica = body.replica
        why = JSON.stringify(body).slice(0, 200)
      }
    } catch (e) { why = e.message }
    if (ok) seen.add(replica)
    if (!saidBoth && seen.size >= 2) { saidBoth = true; console.log('BOTH') }
    if (killed) {
      if (!ok && failures++ < 5) console.error('load.mjs: a call failed: ' + why)
      streak = ok && replica === survivor ? streak + 1 : 0
      if (streak >= 20) { console.log('RECOVERED ' + failures); process.exit(0) }
    }
  }
}
await Promise.all([loop(), loop(), loop(), loop()])
console.log('GAVE UP calls=' + calls + ' failures=' + failures + ' seen=' + [...seen])
process.exit(1)
