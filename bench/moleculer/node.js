// The Moleculer anchor of bench/run.sh (docs/benchmarks.md, "Anchors"): one process of a
// moleculer-web gateway in front of `todos` replicas, the shape of Plume's demo topology.
//
//   node node.js gateway --transporter T --node-id ID --port HTTP_PORT
//   node node.js todos   --transporter T --node-id ID --data FILE
//
// T is `nats://127.0.0.1:PORT` (NATS transporter) or `tcp:PORT:URLS` (the TCP transporter on
// PORT, UDP discovery off, peers from URLS = `127.0.0.1:P/NODE,...`: no datagram is ever sent).
// `todos` answers `GET /todos` with the JSON array in FILE (what a Plume replica answers), and
// `POST /todos` by storing the body with an id, as the demo's memory store does. Prints
// `moleculer ready` once the broker has started (the gateway: once `todos` is reachable).
"use strict";

const fs = require("fs");
const { ServiceBroker } = require("moleculer");
const ApiGateway = require("moleculer-web");

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= process.argv.length) {
    if (fallback !== undefined) return fallback;
    console.error(`missing --${name}`);
    process.exit(2);
  }
  return process.argv[i + 1];
}

function transporter(spec) {
  if (spec.startsWith("nats://")) return spec;
  const m = /^tcp:(\d+):(.+)$/.exec(spec);
  if (!m) {
    console.error(`bad --transporter ${spec}`);
    process.exit(2);
  }
  return {
    type: "TCP",
    options: { port: Number(m[1]), udpDiscovery: false, urls: m[2].split(",") },
  };
}

const role = process.argv[2];
const broker = new ServiceBroker({
  nodeID: arg("node-id"),
  transporter: transporter(arg("transporter")),
  logger: false,
  requestTimeout: 10_000,
});

if (role === "todos") {
  const list = JSON.parse(fs.readFileSync(arg("data"), "utf8"));
  const store = [];
  broker.createService({
    name: "todos",
    actions: {
      list() {
        return list;
      },
      create(ctx) {
        const todo = { ...ctx.params, id: store.length };
        store.push(todo);
        return todo;
      },
    },
  });
} else if (role === "gateway") {
  broker.createService({
    name: "api",
    mixins: [ApiGateway],
    settings: {
      ip: "127.0.0.1",
      port: Number(arg("port")),
      logRequest: null,
      logResponse: null,
      routes: [
        {
          path: "/",
          aliases: { "GET todos": "todos.list", "POST todos": "todos.create" },
          bodyParsers: { json: true },
          mappingPolicy: "restrict",
        },
      ],
    },
  });
} else {
  console.error("usage: node.js gateway|todos --transporter T --node-id ID ...");
  process.exit(2);
}

broker
  .start()
  .then(() => (role === "gateway" ? broker.waitForServices(["todos"], 30_000) : null))
  .then(() => console.log("moleculer ready"))
  .catch((err) => {
    console.error(err);
    process.exit(1);
  });
