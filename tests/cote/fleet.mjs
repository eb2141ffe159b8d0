// Shared settings of the Node apps in Plume's cote interop tests: cote on the loopback
// broadcast address with short timers, feathers-distributed with short delays.
export const cote = {
  broadcast: '127.255.255.255',
  helloInterval: 500,
  checkInterval: 1000,
  nodeTimeout: 1500,
  masterTimeout: 3000,
  basePort: Number(process.env.BASE_PORT || 10000),
  highestPort: Number(process.env.HIGHEST_PORT || 20000)
}

// feathers-distributed publishes its services once, publicationDelay after it sees a new
// services subscriber; that subscriber connects when it hears the publisher's next hello. A delay
// over the hello interval lets the connection come first (a shorter one loses the publication).
export const delays = { publicationDelay: 1000, componentDelay: 50, timeout: Number(process.env.FD_TIMEOUT || 5000) }

// One line per fact on stdout: the test waits on these.
export function say (line) {
  process.stdout.write(line + '\n')
}
