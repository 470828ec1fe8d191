#!/usr/bin/env node
// One original Node.js node (websocket-cross-server-adapter v1.0.7) driven over stdin/stdout by
// tests/test_bus_node_interop.py. The original's source is not vendored: ORIGINAL_ADAPTER_DIR
// points at a checkout; its dependencies (ioredis, notepack.io, ws, debug) come from NODE_PATH.
//
//   node original_node.js <serverName> <redisPort> <msgpack:0|1|default>
//
// stdin, one JSON command per line:
//   {"op":"emit","target":[...],"expected":n,"payload":...}     -> emitCrossServerWithPromise
//   {"op":"emitcb","target":[...],"expected":n,"payload":...}   -> emitCrossServer with a callback
//   {"op":"publish","channel":"c","message":{...}}              -> publishRedisMessage
// stdout, one JSON line per event: {"ready":true}, {"got":data}, {"custom":[channel, message]},
// {"result":...} (promise), {"callback":...} (each callback call).
'use strict';

const path = require('path');
const readline = require('readline');

const { WebSocketCrossServerAdapter } = require(path.resolve(process.env.ORIGINAL_ADAPTER_DIR, 'index.js'));

const [serverName, redisPort, msgpack] = process.argv.slice(2);
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

const options = {
  serverName,
  redisConfig: [{ host: '127.0.0.1', port: Number(redisPort) }],
  customChannels: ['interop:custom'],
};
if (msgpack !== 'default') options.enableRedisDataCompression = msgpack === '1';
const adapter = new WebSocketCrossServerAdapter(options);

adapter.onCrossServerEvent('ask', (data, callback) => {
  out({ got: data });
  if (callback) callback({ from: serverName, echo: data.payload });
});
adapter.setCustomChannelHandler((channel, message) => out({ custom: [channel, message] }));

readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  const cmd = JSON.parse(line);
  const options = { targetServer: cmd.target || [], expectedResponses: cmd.expected || 1, timeout: 3000 };
  if (cmd.op === 'emit') {
    out({ result: await adapter.emitCrossServerWithPromise('ask', cmd.payload, options) });
  } else if (cmd.op === 'emitcb') {
    adapter.emitCrossServer('ask', cmd.payload, (result) => out({ callback: result }), options);
  } else if (cmd.op === 'publish') {
    out({ published: adapter.publishRedisMessage(cmd.channel, cmd.message) });
  }
});

// ioredis connects asynchronously; report readiness once both connections are healthy.
const started = Date.now();
const poll = setInterval(() => {
  if (adapter.getHealthyRedisInstancesCount('publisher') === 1 && adapter.getHealthyRedisInstancesCount('subscriber') === 1) {
    clearInterval(poll);
    setTimeout(() => out({ ready: true }), 200); // let SUBSCRIBE complete after 'connect'
  } else if (Date.now() - started > 10000) {
    clearInterval(poll);
    out({ ready: false });
  }
}, 20);
