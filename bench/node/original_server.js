#!/usr/bin/env node
// The Node.js original (websocket-cross-server-adapter) under the bench protocol, for
// side-by-side figures. Its source is not vendored: point ORIGINAL_ADAPTER_DIR at a checkout of
// github.com/LiuYiSong/websocket-cross-server-adapter (v1.0.7); its dependencies (ws, ioredis,
// notepack.io, debug) come from bench/node/node_modules through NODE_PATH (set by bench/run.py).
//
//   node original_server.js --port P [--node-index I --nodes N --redis-port R]
//
// Same handlers as bench/servers/crossws_server.py: connection (setUserSocket, joinRoom),
// echo (ack), relay (toSocketId), trigger broadcast / rooms / rpc (W6; with `rate`: open loop,
// W6L) / gc / stats (W11).
//
// --auth (W10): authentication at the upgrade, the pattern the original's README recommends
// (ws's noServer mode: our own http server's 'upgrade' checks the query's token, answers 401 or
// hands the socket to adapter.wss.handleUpgrade); the connection handler maps the user
// (setUserSocket) and pushes one 'welcome' (toSocketId).
'use strict';

const path = require('path');
const http = require('http');
const crypto = require('crypto');

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
const auth = argv.includes('--auth');
const TOKEN_SECRET = 'crossws-bench-secret';  // bench/servers/common.py's TOKEN_SECRET
const tokenOf = (id) => crypto.createHmac('sha256', TOKEN_SECRET).update(id).digest('hex').slice(0, 32);

const options = { wsOptions: auth ? { noServer: true } : { host: '127.0.0.1', port } };
if (redisPort) {
  options.serverName = 'n' + nodeIndex;
  options.redisConfig = [{ host: '127.0.0.1', port: redisPort }];
}
const adapter = new WebSocketCrossServerAdapter(options);

if (auth) {
  const server = http.createServer((req, res) => { res.writeHead(426); res.end(); });
  server.on('upgrade', (req, socket, head) => {
    const params = adapter.parseWsRequestParams(req).params;
    const id = typeof params.id === 'string' ? params.id : '';
    const token = typeof params.token === 'string' ? params.token : '';
    const expected = id ? tokenOf(id) : '';
    if (!id || token.length !== expected.length || !crypto.timingSafeEqual(Buffer.from(token), Buffer.from(expected))) {
      socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    req.userId = id;
    adapter.wss.handleUpgrade(req, socket, head, (ws) => adapter.wss.emit('connection', ws, req));
  });
  server.listen(port, '127.0.0.1');
}

adapter.onWebSocketEvent('connection', (socket, req) => {
  if (auth) {
    socket.playerId = req.userId;
    adapter.setUserSocket(req.userId, socket);
    adapter.toSocketId(req.userId, 'welcome', { id: req.userId });
    return;
  }
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

// W6L: open loop, `rate` calls/s for `durationS` s; every due call released each millisecond,
// latency from its release (bench/servers/common.py's run_rpc_rate).
function rpcRate(rate, durationS, expected) {
  return new Promise((resolve) => {
    const latencies = [];
    let failures = 0;
    let released = 0;
    let inFlight = 0;
    let behind = 0;
    const t0 = performance.now();
    const end = t0 + durationS * 1000;
    let ticking = true;
    const finish = () => {
      if (ticking || inFlight > 0) return;
      resolve(Object.assign({ calls: latencies.length, calls_per_s: latencies.length / durationS,
        offered_per_s: released / durationS, failures, unstarted: 0, behind_ms_max: behind,
        elapsed_s: (performance.now() - t0) / 1000 }, percentiles(latencies)));
    };
    const fire = () => {
      const t = performance.now();
      inFlight++;
      adapter.emitCrossServerWithPromise('bench_rpc', { pad: 'x'.repeat(48) }, { expectedResponses: expected, timeout: 5000 })
        .then((r) => { if (r.success) latencies.push(performance.now() - t); else failures++; },
              () => { failures++; })
        .then(() => { inFlight--; finish(); });
    };
    const timer = setInterval(() => {
      const t = performance.now();
      if (t >= end) { clearInterval(timer); ticking = false; finish(); return; }
      const due = Math.floor((t - t0) * rate / 1000) + 1;
      while (released < due) {
        behind = Math.max(behind, t - (t0 + released * 1000 / rate));
        released++;
        fire();
      }
    }, 1);
  });
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
  } else if (payload.action === 'rpc' && payload.rate) {
    rpcRate(Number(payload.rate), Number(payload.duration), Number(payload.expected || 3)).then(ack);
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
