#!/usr/bin/env node
// The Node.js original (websocket-cross-server-adapter) under the bench protocol, for
// side-by-side figures. Its source is not vendored: point ORIGINAL_ADAPTER_DIR at a checkout of
// github.com/LiuYiSong/websocket-cross-server-adapter (v1.0.7); its dependencies (ws, ioredis,
// notepack.io, debug) come from bench/node/node_modules through NODE_PATH (set by bench/run.py).
//
//   node original_server.js --port P [--node-index I --nodes N --redis-port R]
//
// Same handlers as bench/servers/crossws_server.py: connection (setUserSocket, joinRoom),
// echo (ack), relay (toSocketId), trigger broadcast / rooms / rpc (W6) / gc / stats (W11).
'use strict';

const path = require('path');

const dir = process.env.ORIGINAL_ADAPTER_DIR;
if (!dir) {
  process.stderr.write('ORIGINAL_ADAPTER_DIR is not set (a checkout of websocket-cross-server-adapter)\n');
  process.exit(1);
}
const { WebSocketCrossServerAdapter } = require(path.resolve(dir, 'index.js'));

const argv = process.argv;
const opt = (name, dflt) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : dflt);
const port = Number(opt('--port'));
const nodeIndex = Number(opt('--node-index', 0));
const redisPort = Number(opt('--redis-port', 0));
const NS = 'bench';

const options = { wsOptions: { host: '127.0.0.1', port } };
if (redisPort) {
  options.serverName = 'n' + nodeIndex;
  options.redisConfig = [{ host: '127.0.0.1', port: redisPort }];
}
const adapter = new WebSocketCrossServerAdapter(options);

adapter.onWebSocketEvent('connection', (socket, req) => {
  const params = adapter.parseWsRequestParams(req).params;
  if (params.id) {
    adapter.setUserSocket(params.id, socket);
    if (params.room) adapter.joinRoom(NS, params.room, params.id);
  }
});

adapter.onWebSocketEvent('echo', (socket, payload, callback) => { if (callback) callback(payload); });
adapter.onWebSocketEvent('relay', (socket, payload) => { adapter.toSocketId(payload.to, 'relay', payload); });

function percentiles(samples) {
  const a = Float64Array.from(samples).sort();
  const at = (q) => (a.length ? a[Math.min(a.length - 1, Math.max(0, Math.ceil(q * a.length) - 1))] : null);
  return { p50_ms: at(0.5), p99_ms: at(0.99) };
}

async function rpcLoops(loops, durationS, expected) {
  const latencies = [];
  let failures = 0;
  const t0 = performance.now();
  const end = t0 + durationS * 1000;
  async function loop() {
    while (performance.now() < end) {
      const t = performance.now();
      const r = await adapter.emitCrossServerWithPromise('bench_rpc', { pad: 'x'.repeat(48) },
        { expectedResponses: expected, timeout: 5000 });
      if (r.success) latencies.push(performance.now() - t); else failures++;
    }
  }
  await Promise.all(Array.from({ length: loops }, loop));
  const elapsed = (performance.now() - t0) / 1000;
  return Object.assign({ calls: latencies.length, calls_per_s: latencies.length / elapsed, failures, elapsed_s: elapsed },
    percentiles(latencies));
}

// W11: the original's liveness sweep is one synchronous wss.clients.forEach in a setInterval
// (serverPingInterval, 20 s); time the forEach calls whose callback is that sweep (the only one
// that reads isAlive), without touching the original's code.
const sweep = { sweeps: 0, last_sweep_seconds: null, last_sweep_cpu_seconds: null, last_sweep_clients: null,
  sweep_windows: [] };  // [start, end] epoch ms of the latest sweeps
{
  const clients = adapter.wss.clients;
  const forEach = clients.forEach;
  clients.forEach = function timedForEach(fn, thisArg) {
    if (!String(fn).includes('isAlive')) return forEach.call(this, fn, thisArg);
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const window = [performance.timeOrigin + t0, null];
    const n = this.size;
    forEach.call(this, fn, thisArg);
    sweep.last_sweep_seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    sweep.last_sweep_cpu_seconds = (cpu.user + cpu.system) / 1e6;  // synchronous: the pongs come after
    sweep.last_sweep_clients = n;
    window[1] = performance.timeOrigin + performance.now();
    sweep.sweep_windows.push(window);
    if (sweep.sweep_windows.length > 32) sweep.sweep_windows.shift();
    sweep.sweeps++;
    return undefined;
  };
}

adapter.onWebSocketEvent('trigger', (socket, payload, callback) => {
  const ack = (reply) => { if (callback) callback(reply); };
  const pad = 'x'.repeat(Number(payload.pad || 48));
  if (payload.action === 'broadcast') {
    const count = Number(payload.count);
    for (let seq = 0; seq < count; seq++) adapter.broadcast('bench', { seq, pad });
    ack({ sent: count });
  } else if (payload.action === 'rooms') {
    const count = Number(payload.count);
    for (let seq = 0; seq < count; seq++) {
      for (const room of payload.rooms) adapter.broadcastToRoom(NS, room, 'bench', { seq, room, pad });
    }
    ack({ sent: count * payload.rooms.length });
  } else if (payload.action === 'rpc') {
    rpcLoops(Number(payload.loops), Number(payload.duration), Number(payload.expected || 3)).then(ack);
  } else if (payload.action === 'stats') {
    ack(Object.assign({ clients: adapter.wss.clients.size }, sweep));
  } else if (payload.action === 'gc') {
    if (global.gc) global.gc();
    ack({ gc: !!global.gc });
  } else {
    ack({ error: 'unsupported action ' + payload.action });
  }
});

if (redisPort) {
  adapter.onCrossServerEvent('bench_rpc', (data, callback) => { if (callback) callback({ ok: true }); });
}
process.on('SIGTERM', () => process.exit(0));
