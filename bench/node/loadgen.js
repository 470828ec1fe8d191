#!/usr/bin/env node
// Load generator of the crossws_sync benchmark suite (Node.js >= 20).
//
//   node loadgen.js --proto json|socketio --workload W1..W7|W4L|W6L|W10 --urls ws://127.0.0.1:P0[,ws://...]
//                   --params '{"clients":1000,...}'
//
// Talks the bench protocol (bench/README.md) to every system under test: the original's JSON
// frames over `ws` (crossws, calibration) or socket.io events over `socket.io-client` with the
// websocket transport only (flask_socketio).
//
// stdout carries JSON lines for the runner (bench/run.py):
//   {"type":"phase","phase":"measure_start"} / {"type":"phase","phase":"measure_end"}
//   {"type":"stage", ...}   (W7: then waits for one line on stdin before going on)
//   {"type":"result", ...}  (last line; includes the generator's own CPU share)
// Diagnostics go to stderr. Every loop and wait is bounded in count and time; the process
// exits by itself (hard deadline = params.deadline seconds).
'use strict';

const WebSocket = require('ws');
const { io } = require('socket.io-client');
const readline = require('readline');
const { monitorEventLoopDelay } = require('perf_hooks');
const { fork } = require('child_process');

// ---------------------------------------------------------------- arguments
function parseArgs(argv) {
  const out = {};
  for (let i = 2; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--')) throw new Error('bad argument ' + argv[i]);
    out[argv[i].slice(2)] = argv[i + 1];
  }
  return out;
}
const args = parseArgs(process.argv);
const PROTO = args.proto || 'json';
const WORKLOAD = args.workload;
const URLS = (args.urls || '').split(',').filter(Boolean);
const P = Object.assign({
  connectConcurrency: 100,
  connectTimeout: 30,      // s, for all connections of a stage
  idle: 5,                 // s without a delivery ends a broadcast measurement
  firstDelivery: 60,       // s, the same before the first delivery of a broadcast measurement
  deadline: 300,           // s, hard cap on the whole process
  requestTimeout: 10,      // s, per ack
  pad: 48,
  heartbeatInterval: 10,   // s, the original's client pingInterval (JSON protocol only)
  settle: 2,               // s, W7: idle time after each stage before measuring
  skipUtf8: true,          // ws client: skip UTF-8 validation (keeps the generator light)
  client: 'raw',           // JSON protocol: 'raw' (minimal RFC 6455 client on net.Socket) or 'ws'
  warmup: 20,              // s, multi-node: budget for proving every node-to-node route delivers
  lostAfter: 2,            // s, W4: a round trip not back by then is counted lost and resent
  checkEvery: 64,          // W5: parse every n-th ack of a client and check it echoes the call
  sources: 1,              // > 1: local addresses 127.0.0.<sourceBase>.., round robin (W7, W11 at large counts)
  sourceBase: 2,           // the first of those addresses' last byte
  part: 0,                 // W11: this process's part of the idle fleet (0 also runs the canary)
  offset: 0,               // W11: the first idle client's number (ids idle<offset+i>)
  window: 30,              // s, W11: the idle window (server CPU, the canary, at least one sweep)
  canaryRate: 10,          // W11: the canary's echo round trips per second
  slowCanary: 20,          // ms, W11: canary round trips slower than this are reported with their time
  levels: [0.5, 0.9],      // W4L / W6L: open-loop rates as fractions of the closed loop's maximum
  connections: 6000,       // W10: connections opened
  concurrency: 200,        // W10: at most this many being opened at once
  welcomeTimeout: 10,      // s, W10: a connection without its welcome by then has failed
  badTokens: 0,            // W10: every n-th client sends a wrong token (0: none), refused by the hook
  workerSplit: false,      // W1 / W5 (W9): ask every client's server for its pid (which gunicorn worker)
}, JSON.parse(args.params || '{}'));

const hardDeadline = setTimeout(() => {
  fail('hard deadline of ' + P.deadline + ' s reached');
}, P.deadline * 1000);
hardDeadline.unref();

function out(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }
function log(...a) { process.stderr.write('[loadgen] ' + a.join(' ') + '\n'); }
function fail(message) {
  out({ type: 'result', ok: false, error: String(message) });
  process.exit(2);
}
const now = () => performance.now(); // ms, monotonic
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const PAD = 'x'.repeat(P.pad);

// ---------------------------------------------------------------- clients
const BENCH_PREFIX = Buffer.from('{"event":"bench"');

// The original's JSON frames over `ws`.
class JsonClient {
  constructor(url, query) {
    this.url = url + '/?' + new URLSearchParams(query).toString();
    this.pending = new Map();
    this.counter = 0;
    this.prefix = Math.random().toString(36).slice(2, 8);
    this.onBench = null;   // (buffer) => void, raw push frames of event "bench"
    this.onEvent = null;   // (event, payload) => void, other pushes (parsed)
    this.heartbeats = 0;
    this.closed = false;
  }
  connect(timeoutMs) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, { perMessageDeflate: false, handshakeTimeout: timeoutMs, skipUTF8Validation: P.skipUtf8 });
      this.ws = ws;
      ws.on('open', () => { this._armHeartbeat(); resolve(); });
      ws.on('error', (err) => reject(err));
      ws.on('close', () => { this.closed = true; clearInterval(this.hb); });
      ws.on('message', (data, isBinary) => this._onMessage(data));
    });
  }
  _armHeartbeat() {
    // the original's client heartbeat: send pingMsg ("") every pingInterval; the server echoes it
    if (P.heartbeatInterval > 0) {
      this.hb = setInterval(() => { if (this.ws.readyState === 1) this.ws.send(''); }, P.heartbeatInterval * 1000);
      this.hb.unref();
    }
  }
  _onMessage(data) {
    if (data.length === 0) { this.heartbeats++; return; }
    if (this.onBench && data.length > 16 && data.compare(BENCH_PREFIX, 0, 16, 0, 16) === 0) {
      this.onBench(data);
      return;
    }
    let msg;
    try { msg = JSON.parse(data.toString()); } catch (e) { return; }
    if (msg.callbackId) {
      const entry = this.pending.get(msg.callbackId);
      if (entry) this._settle(msg.callbackId, entry, null, msg.payload);
      return;
    }
    if (msg.event === 'bench' && this.onBench) this.onBench(msg.payload);
    else if (msg.event && this.onEvent) this.onEvent(msg.event, msg.payload);
  }
  _settle(id, entry, error, value) {
    this.pending.delete(id);
    clearTimeout(entry.timer);
    if (error) entry.reject(error); else entry.resolve(value);
  }
  emit(event, payload) {
    this.ws.send(JSON.stringify({ event, payload }));
  }
  request(event, payload, timeoutS) {
    const callbackId = this.prefix + '-' + (++this.counter).toString(36);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(callbackId);
        reject(new Error('ack timeout for ' + event));
      }, (timeoutS || P.requestTimeout) * 1000);
      this.pending.set(callbackId, { resolve, timer });
      this.ws.send(JSON.stringify({ event, payload, callbackId }));
    });
  }
  close() { clearInterval(this.hb); try { this.ws.terminate(); } catch (e) { /* already gone */ } }
}

// The same JSON frames over a minimal RFC 6455 client on a raw TCP socket: it reads frame
// headers and counts pushed "bench" frames without allocating a message per frame, so the
// generator stays well below the cost of the servers it measures (the `ws` client above
// saturates a core near 350k frames/s). Default for the JSON protocol (params.client = "raw").
const net = require('net');
const crypto = require('crypto');
const EMPTY = Buffer.alloc(0);
const CALLBACK_KEY = Buffer.from('"callbackId":"');
let sourceCounter = 0;
// The next local address of the round robin over P.sources addresses from 127.0.0.<sourceBase> on.
function nextSource() { return '127.0.0.' + (P.sourceBase + (sourceCounter++ % P.sources)); }

class RawClient extends JsonClient {
  connect(timeoutMs) {
    const u = new URL(this.url);
    return new Promise((resolve, reject) => {
      const options = { host: u.hostname, port: Number(u.port) };
      if (P.sources > 1) {
        // W7 at large counts: one source address has ~28k ephemeral ports, TIME_WAIT ones included;
        // from 127.0.0.2 on, leaving 127.0.0.1's to everything else
        options.localAddress = nextSource();
      }
      const sock = net.connect(options);
      this.sock = sock;
      this.mask = crypto.randomBytes(4);
      this.pendingBuf = EMPTY;
      this.fragments = null;
      this.countBench = null;  // set by workloads that only count "bench" pushes (W1, W2)
      this.onAck = null;       // (callbackId, frame) => handled?  (W5's echoLoop)
      this.onClosed = null;
      this.sweep = null;
      let opened = false;
      const timer = setTimeout(() => { sock.destroy(); reject(new Error('handshake timeout')); }, timeoutMs);
      const key = crypto.randomBytes(16).toString('base64');
      let head = EMPTY;
      sock.setNoDelay(true);
      sock.on('connect', () => {
        sock.write('GET ' + u.pathname + u.search + ' HTTP/1.1\r\nHost: ' + u.host + '\r\nUpgrade: websocket\r\n'
          + 'Connection: Upgrade\r\nSec-WebSocket-Key: ' + key + '\r\nSec-WebSocket-Version: 13\r\n\r\n');
      });
      sock.on('data', (chunk) => {
        if (opened) { this._feed(chunk); return; }
        head = head.length ? Buffer.concat([head, chunk]) : chunk;
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) { if (head.length > 16384) sock.destroy(); return; }
        const status = head.subarray(0, head.indexOf('\r\n')).toString();
        if (!/^HTTP\/1\.1 101/.test(status)) {
          clearTimeout(timer);
          dropSocket(sock);
          // a refused upgrade: its status and Retry-After (W8 honours it for crossws's client)
          const err = new Error('handshake: ' + status);
          err.status = Number((/^HTTP\/1\.[01] (\d{3})/.exec(status) || [])[1]) || null;
          const ra = /\r\nretry-after:[ \t]*(\d{1,7})[ \t]*\r\n/i.exec(head.subarray(0, end + 2).toString('latin1'));
          err.retryAfter = ra ? Number(ra[1]) : null;
          reject(err);
          return;
        }
        opened = true;
        clearTimeout(timer);
        this._armHeartbeat();
        resolve();
        const rest = head.subarray(end + 4);
        head = EMPTY;
        if (rest.length) this._feed(rest);
      });
      sock.on('error', (err) => { if (!opened) { clearTimeout(timer); reject(err); } });
      sock.on('close', () => this._closed());
    });
  }
  get ws() {  // what JsonClient's heartbeat uses
    return { readyState: this.closed ? 3 : 1, send: (text) => this._send(1, Buffer.from(text)) };
  }
  _feed(chunk) {
    let buf = this.pendingBuf.length ? Buffer.concat([this.pendingBuf, chunk]) : chunk;
    let pos = 0;
    const n = buf.length;
    while (n - pos >= 2) {
      const b0 = buf[pos];
      let len = buf[pos + 1] & 0x7f;
      let hdr = 2;
      if (len === 126) { if (n - pos < 4) break; len = buf.readUInt16BE(pos + 2); hdr = 4; }
      else if (len === 127) { if (n - pos < 10) break; len = buf.readUInt32BE(pos + 6) + buf.readUInt32BE(pos + 2) * 4294967296; hdr = 10; }
      if (n - pos < hdr + len) break;
      const start = pos + hdr;
      pos = start + len;
      if (b0 === 0x81 && this.countBench !== null && len > 16 && buf.compare(BENCH_PREFIX, 0, 16, start, start + 16) === 0) {
        this.countBench();  // fast path: a pushed "bench" frame, counted without a Buffer view
        continue;
      }
      const payload = buf.subarray(start, pos);
      const opcode = b0 & 0x0f;
      const fin = (b0 & 0x80) !== 0;
      if (opcode >= 8) {
        if (opcode === 9) this._send(10, Buffer.from(payload));
        else if (opcode === 8) {
          // keep the close code and reason (W8 reads 1012's retry hint), answer like a client
          this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
          this.closeReason = payload.length > 2 ? payload.toString('utf8', 2) : '';
          this._send(8, payload.length >= 2 ? Buffer.from(payload.subarray(0, 2)) : EMPTY);
          this.closed = true;
          // the server closes the TCP connection first (RFC 6455 7.1.1), so the TIME_WAIT is
          // its own; unless it does not within 2 s
          const sock = this.sock;
          setTimeout(() => { if (!sock.destroyed) dropSocket(sock); }, 2000).unref();
          return;
        }
        continue;
      }
      if (!fin || opcode === 0) {
        if (opcode !== 0) this.fragments = [];
        if (this.fragments) this.fragments.push(Buffer.from(payload));
        if (!fin || !this.fragments) continue;
        const whole = Buffer.concat(this.fragments);
        this.fragments = null;
        this._onMessage(whole);
        continue;
      }
      this._onMessage(payload);
    }
    this.pendingBuf = pos < n ? Buffer.from(buf.subarray(pos)) : EMPTY;
  }
  // A frame buffer of `len` payload bytes with its header and mask key written: one allocation
  // and one write() per frame. Returns [frame, offset of the payload].
  _frame(opcode, len) {
    const hdr = len < 126 ? 6 : (len < 65536 ? 8 : 14);
    const frame = Buffer.allocUnsafe(hdr + len);
    frame[0] = 0x80 | opcode;
    if (len < 126) frame[1] = 0x80 | len;
    else if (len < 65536) { frame[1] = 0x80 | 126; frame.writeUInt16BE(len, 2); }
    else { frame[1] = 0x80 | 127; frame.writeUInt32BE(0, 2); frame.writeUInt32BE(len, 6); }
    this.mask.copy(frame, hdr - 4);
    return [frame, hdr];
  }
  _send(opcode, payload) {
    if (this.closed) return;
    const len = payload.length;
    const [frame, hdr] = this._frame(opcode, len);
    const m = this.mask;
    for (let i = 0; i < len; i++) frame[hdr + i] = payload[i] ^ m[i & 3];
    this.sock.write(frame);
  }
  // A text frame from an ASCII string (its length is its byte length): no intermediate Buffer.
  _sendAscii(text) {
    if (this.closed) return;
    const len = text.length;
    const [frame, hdr] = this._frame(1, len);
    frame.latin1Write(text, hdr, len);
    const m = this.mask;
    for (let i = 0; i < len; i++) frame[hdr + i] ^= m[i & 3];
    this.sock.write(frame);
  }
  // W5's closed loop: one call in flight, the next one sent from the ack's handler, with no
  // promise, Map entry or timer per call (the generator must stay lighter than the servers it
  // measures). Every P.checkEvery-th ack is parsed and must echo its call (stats.badAcks).
  // Calls onDone() once, when the loop stops (window over, socket closed).
  echoLoop(i, keepGoing, stats, onDone) {
    const head = '{"event":"echo","payload":{"i":' + i + ',"seq":';
    const middle = ',"pad":"' + PAD + '"},"callbackId":"';
    let seq = 0;
    let inFlight = null;  // {id, seq, sentAt, check}
    let done = false;
    const stop = () => { if (!done) { done = true; this.onAck = null; onDone(); } };
    const next = () => {
      if (this.closed || !keepGoing()) { stop(); return; }
      const call = { id: this.prefix + '-' + (++this.counter).toString(36), seq: seq++, sentAt: now(), check: false };
      call.check = call.seq % P.checkEvery === 0;
      inFlight = call;
      this._sendAscii(head + call.seq + middle + call.id + '"}');
    };
    this.onAck = (id, data) => {
      if (inFlight === null || id !== inFlight.id) return false;
      const call = inFlight;
      inFlight = null;
      stats.latencies.push(now() - call.sentAt);
      stats.calls++;
      if (call.check) {
        stats.checked++;
        let echoed = null;
        try { echoed = JSON.parse(data.toString()).payload; } catch (e) { /* counted below */ }
        if (!echoed || echoed.i !== i || echoed.seq !== call.seq || echoed.pad !== PAD) stats.badAcks++;
      }
      next();
      return true;
    };
    this.onClosed = stop;
    next();
  }
  emit(event, payload) { this._send(1, Buffer.from(JSON.stringify({ event, payload }))); }
  // No timer per request: a sweep every 250 ms fails the acks past their deadline, and a closed
  // socket fails its pending acks at once.
  request(event, payload, timeoutS) {
    const callbackId = this.prefix + '-' + (++this.counter).toString(36);
    return new Promise((resolve, reject) => {
      if (this.closed) { reject(new Error('socket closed')); return; }
      this.pending.set(callbackId, { resolve, reject, deadline: now() + (timeoutS || P.requestTimeout) * 1000 });
      if (!this.sweep) { this.sweep = setInterval(() => this._sweep(), 250); this.sweep.unref(); }
      this._send(1, Buffer.from(JSON.stringify({ event, payload, callbackId })));
    });
  }
  _settle(id, entry, error, value) {
    super._settle(id, entry, error, value);
    // no sweep while nothing waits: thousands of idle clients would each tick 4 times a second
    if (this.pending.size === 0 && this.sweep) { clearInterval(this.sweep); this.sweep = null; }
  }
  _sweep() {
    const t = now();
    for (const [id, entry] of this.pending) {
      if (t >= entry.deadline) this._settle(id, entry, new Error('ack timeout'));
    }
  }
  _onMessage(data) {
    if (this.onAck !== null && data.length > 16) {
      const at = data.lastIndexOf(CALLBACK_KEY);
      if (at >= 0) {
        const start = at + CALLBACK_KEY.length;
        const end = data.indexOf(0x22, start);  // the closing quote
        if (end > start && this.onAck(data.latin1Slice(start, end), data)) return;
      }
    }
    super._onMessage(data);
  }
  _closed() {
    this.closed = true;
    clearInterval(this.hb);
    clearInterval(this.sweep);
    for (const [id, entry] of this.pending) this._settle(id, entry, new Error('socket closed'));
    if (this.onClosed) this.onClosed();
  }
  close() {
    this._closed();
    try { dropSocket(this.sock); } catch (e) { /* gone */ }
  }
}

// P.resetOnClose (W8): close with a RST, so that the thousands of sockets a storm opens and
// closes leave no TIME_WAIT behind on this side (loopback's ports are shared by the machine).
function dropSocket(sock) {
  if (P.resetOnClose && sock.resetAndDestroy && !sock.destroyed && sock.readyState === 'open') sock.resetAndDestroy();
  else sock.destroy();
}

// socket.io events over socket.io-client, websocket transport only.
class SioClient {
  constructor(url, query) {
    this.url = url;
    this.query = query;
    this.onBench = null;
    this.onEvent = null;
    this.heartbeats = 0;
    this.closed = false;
  }
  connect(timeoutMs) {
    return new Promise((resolve, reject) => {
      const opts = {
        transports: ['websocket'], query: this.query, forceNew: true, reconnection: false,
        timeout: timeoutMs, localAddress: P.sources > 1 ? nextSource() : undefined,
      };
      if (this.query.token) opts.auth = { token: this.query.token };  // W10: the connect handler's auth
      const s = io(this.url, opts);
      this.s = s;
      s.on('connect', () => resolve());
      s.on('connect_error', (err) => reject(err));
      s.on('disconnect', () => { this.closed = true; });
      s.on('bench', (payload) => { if (this.onBench) this.onBench(payload); });
      s.on('relay', (payload) => { if (this.onEvent) this.onEvent('relay', payload); });
      s.on('welcome', (payload) => { if (this.onEvent) this.onEvent('welcome', payload); });
    });
  }
  emit(event, payload) { this.s.emit(event, payload); }
  request(event, payload, timeoutS) {
    return this.s.timeout((timeoutS || P.requestTimeout) * 1000).emitWithAck(event, payload);
  }
  close() { try { this.s.disconnect(); } catch (e) { /* already gone */ } }
}

const Client = PROTO === 'socketio' ? SioClient : (P.client === 'ws' ? JsonClient : RawClient);

// Open clients described by specs [{url, query}], at most P.connectConcurrency handshakes in
// flight, then wait for one echo ack from each (proves the server ran its connection handler).
// An upgrade refused with 503 (an accept-rate limit, W8's crossws_limit) is tried again after
// its Retry-After (1 s without one), within the same deadline.
let setupRefusals = 0;
async function openClients(specs, allowPartial) {
  const clients = new Array(specs.length);
  const deadline = now() + P.connectTimeout * 1000;
  let next = 0;
  let failed = 0;
  let firstError = null;
  async function worker() {
    while (next < specs.length && now() < deadline) {
      const i = next++;
      for (;;) {
        const c = new Client(specs[i].url, specs[i].query);
        try {
          await c.connect(Math.max(1000, deadline - now()));
          await c.request('echo', { ready: i }, Math.max(1, (deadline - now()) / 1000));
          clients[i] = c;
        } catch (err) {
          c.close();
          const wait = (err.retryAfter || 1) * 1000;
          if (err.status === 503 && now() + wait < deadline) {
            setupRefusals++;
            await sleep(wait);
            continue;
          }
          failed++;
          if (!firstError) firstError = err;
        }
        break;
      }
    }
  }
  const workers = [];
  for (let w = 0; w < Math.min(P.connectConcurrency, specs.length); w++) workers.push(worker());
  await Promise.all(workers);
  const opened = clients.filter(Boolean).length;
  if (allowPartial) {  // W11: what could not connect is reported, not fatal
    if (opened !== specs.length) log('opened', opened + '/' + specs.length, 'clients; first error:', firstError && (firstError.message || firstError));
    return clients.filter(Boolean);
  }
  if (opened !== specs.length) {
    throw new Error('opened ' + opened + '/' + specs.length + ' clients (' + failed + ' failed'
      + (firstError ? ': ' + (firstError.message || firstError) : '') + ')');
  }
  return clients;
}

// W9 (gunicorn): how many clients each worker process serves ("512/489"), asked with one
// trigger {action: "pid"} per client.
async function workerSplit(clients) {
  const counts = new Map();
  for (const c of clients) {
    const reply = await c.request('trigger', { action: 'pid' });
    const pid = reply && reply.pid;
    counts.set(pid, (counts.get(pid) || 0) + 1);
  }
  return Array.from(counts.values()).sort((a, b) => b - a).join('/');
}

// Multi-node workloads: prove that every node-to-node route delivers before measuring (nodes
// subscribe to Redis asynchronously after they listen). routes: [[sender, receiver, receiverId]];
// each sender relays {warm: i} to its receiver, again every second, for at most P.warmup seconds.
async function warmRoutes(routes) {
  const deadline = now() + P.warmup * 1000;
  const pending = new Set(routes.map((_, i) => i));
  const saved = routes.map(([, r]) => r.onEvent);
  routes.forEach(([, r], i) => {
    const prev = r.onEvent;
    r.onEvent = (event, payload) => {
      if (event === 'relay' && payload && payload.warm !== undefined) { pending.delete(payload.warm); return; }
      if (prev) prev(event, payload);
    };
  });
  let rounds = 0;
  while (pending.size && now() < deadline) {
    rounds++;
    for (const i of pending) routes[i][0].emit('relay', { to: routes[i][2], from: 'warm', warm: i });
    const until = Math.min(deadline, now() + 1000);
    while (pending.size && now() < until) await sleep(10);
  }
  for (let i = routes.length - 1; i >= 0; i--) routes[i][1].onEvent = saved[i];
  if (pending.size) throw new Error(pending.size + '/' + routes.length + ' node-to-node routes never delivered in '
    + P.warmup + ' s of warm-up');
  return rounds;
}

// One route from client 0 (node 0) to the first client of every node.
function nodeRoutes(clients, specs) {
  const routes = [];
  URLS.forEach((url) => {
    const i = specs.findIndex((sp) => sp.url === url);
    if (i > 0) routes.push([clients[0], clients[i], specs[i].query.id]);
  });
  return routes;
}

function percentile(sorted, q) {
  if (sorted.length === 0) return null;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[idx];
}
function latencyStats(samples) {
  const a = Float64Array.from(samples).sort();
  return { p50_ms: percentile(a, 0.5), p99_ms: percentile(a, 0.99), samples: a.length };
}

// CPU of this process over the measured window.
let cpuStart = null;
let wallStart = null;
function measureStart() {
  cpuStart = process.cpuUsage();
  wallStart = now();
  out({ type: 'phase', phase: 'measure_start' });
}
function measureEnd() {
  const cpu = process.cpuUsage(cpuStart);
  const wall = now() - wallStart;
  out({ type: 'phase', phase: 'measure_end' });
  return { generator_cpu_pct: wall > 0 ? (100 * (cpu.user + cpu.system) / 1000) / wall : null, window_s: wall / 1000 };
}

// ---------------------------------------------------------------- workloads
// W1 / W2 / W3: one trigger, count deliveries until all expected arrived, or P.idle seconds
// pass without any (P.firstDelivery before the first), or the hard deadline.
async function broadcastWorkload({ specs, trigger, expected, roomOf }) {
  const clients = await openClients(specs);
  const warmRounds = URLS.length > 1 ? await warmRoutes(nodeRoutes(clients, specs)) : 0;
  const split = P.workerSplit ? await workerSplit(clients) : null;
  let received = 0;
  let wrongRoom = 0;
  let tLast = 0;
  let done = null;
  const finished = new Promise((r) => { done = r; });
  const count = () => {
    received++;
    tLast = now();
    if (received >= expected) done();
  };
  clients.forEach((c, i) => {
    const myRoom = roomOf ? roomOf(i) : null;
    if (!roomOf && c instanceof RawClient) c.countBench = count;
    c.onBench = (data) => {
      received++;
      tLast = now();
      if (myRoom !== null) {
        const payload = Buffer.isBuffer(data) ? JSON.parse(data.toString()).payload : data;
        if (payload.room !== myRoom) wrongRoom++;
      }
      if (received >= expected) done();
    };
  });
  measureStart();
  const t0 = now();
  tLast = t0;
  const ack = clients[0].request('trigger', trigger, P.deadline).catch((err) => ({ error: String(err.message || err) }));
  // a server may queue a whole burst before its first write: wait up to P.firstDelivery s for
  // the first delivery (its stall counts in the elapsed time), then P.idle s between deliveries
  const idleCheck = setInterval(() => {
    if (now() - tLast > (received ? P.idle : P.firstDelivery) * 1000) done();
  }, 100);
  await finished;
  clearInterval(idleCheck);
  const cpu = measureEnd();
  const elapsed = (tLast - t0) / 1000;
  const ackValue = await Promise.race([ack, sleep(1000).then(() => ({ error: 'no ack yet' }))]);
  const disconnected = clients.filter((c) => c.closed).length;
  clients.forEach((c) => c.close());
  return Object.assign({
    ok: true, deliveries: received, expected, delivered_pct: 100 * received / expected,
    deliveries_per_s: elapsed > 0 ? received / elapsed : null, elapsed_s: elapsed,
    wrong_room: roomOf ? wrongRoom : null, disconnected, trigger_ack: ackValue, warmup_rounds: warmRounds,
    worker_split: split,
  }, cpu);
}

async function W1() {
  const specs = [];
  for (let i = 0; i < P.clients; i++) specs.push({ url: URLS[0], query: { id: 'u' + i } });
  return broadcastWorkload({
    specs, expected: P.clients * P.count,
    trigger: { action: 'broadcast', count: P.count, pad: P.pad },
  });
}

async function W2() {
  const specs = [];
  for (let i = 0; i < P.clients; i++) specs.push({ url: URLS[i % URLS.length], query: { id: 'u' + i } });
  return broadcastWorkload({
    specs, expected: P.clients * P.count,
    trigger: { action: 'broadcast', count: P.count, pad: P.pad },
  });
}

async function W3() {
  // client i: node i % nodes, room (i // nodes) % rooms -> every room spans every node
  const n = URLS.length;
  const roomOf = (i) => 'r' + (Math.floor(i / n) % P.rooms);
  const specs = [];
  for (let i = 0; i < P.clients; i++) specs.push({ url: URLS[i % n], query: { id: 'u' + i, room: roomOf(i) } });
  const rooms = [];
  for (let r = 0; r < P.rooms; r++) rooms.push('r' + r);
  return broadcastWorkload({
    specs, roomOf, expected: P.clients * P.count,
    trigger: { action: 'rooms', rooms, count: P.count, pad: P.pad },
  });
}

// W4: pairs (a_k on node k % n, b_k on node (k+1) % n); a_k -> server -> b_k -> server -> a_k,
// one message in flight per pair, closed loop for P.duration seconds.
async function W4() {
  const n = URLS.length;
  const specs = [];
  for (let k = 0; k < P.pairs; k++) {
    specs.push({ url: URLS[k % n], query: { id: 'a' + k } });
    specs.push({ url: URLS[(k + 1) % n], query: { id: 'b' + k } });
  }
  const clients = await openClients(specs);
  const latencies = [];
  let roundTrips = 0;
  let lost = 0;
  let running = true;
  const sentAt = new Float64Array(P.pairs);
  const seqOf = new Int32Array(P.pairs);
  const lostTimeoutMs = P.lostAfter * 1000;
  const warmRounds = await warmRoutes(Array.from({ length: P.pairs }, (_, k) => [clients[2 * k], clients[2 * k + 1], 'b' + k]));
  function send(k) {
    seqOf[k]++;
    sentAt[k] = now();
    clients[2 * k].emit('relay', { to: 'b' + k, from: 'a' + k, k, seq: seqOf[k], pad: PAD });
  }
  for (let k = 0; k < P.pairs; k++) {
    const a = clients[2 * k];
    const b = clients[2 * k + 1];
    b.onEvent = (event, payload) => {
      if (event === 'relay' && payload.warm === undefined) b.emit('relay', { to: payload.from, from: 'b' + k, k, seq: payload.seq, pad: PAD });
    };
    a.onEvent = (event, payload) => {
      if (event !== 'relay' || payload.seq !== seqOf[k]) return;
      latencies.push(now() - sentAt[k]);
      roundTrips++;
      if (running) send(k);
    };
  }
  measureStart();
  const t0 = now();
  for (let k = 0; k < P.pairs; k++) send(k);
  const watchdog = setInterval(() => {
    const t = now();
    for (let k = 0; k < P.pairs; k++) {
      if (running && t - sentAt[k] > lostTimeoutMs) { lost++; send(k); }
    }
  }, 250);
  await sleep(P.duration * 1000);
  running = false;
  const elapsed = (now() - t0) / 1000;
  clearInterval(watchdog);
  const cpu = measureEnd();
  const disconnected = clients.filter((c) => c.closed).length;
  clients.forEach((c) => c.close());
  return Object.assign({ ok: true, round_trips: roundTrips, round_trips_per_s: roundTrips / elapsed, lost, disconnected,
    warmup_rounds: warmRounds },
    latencyStats(latencies), cpu);
}

// W5: every client runs emit-with-ack ("echo") in a closed loop for P.duration seconds. An ack is
// matched to its call by callbackId; every P.checkEvery-th ack is parsed and must echo the call's
// payload (a mismatch counts in bad_acks). The raw client runs RawClient.echoLoop (no promise or
// timer per call); the others await request().
async function W5() {
  const specs = [];
  for (let i = 0; i < P.clients; i++) specs.push({ url: URLS[0], query: { id: 'u' + i } });
  const clients = await openClients(specs);
  const split = P.workerSplit ? await workerSplit(clients) : null;
  const stats = { latencies: [], calls: 0, checked: 0, badAcks: 0 };
  let errors = 0;
  let running = true;
  measureStart();
  const t0 = now();
  const endAt = t0 + P.duration * 1000;
  const keepGoing = () => running && now() < endAt;
  async function loop(c, i) {
    if (c instanceof RawClient) {
      await new Promise((resolve) => c.echoLoop(i, keepGoing, stats, resolve));
      if (c.closed && keepGoing()) errors++;  // the socket closed during the window
      return;
    }
    let seq = 0;
    while (keepGoing()) {
      const t = now();
      const check = seq % P.checkEvery === 0;
      const sent = seq++;
      try {
        const echoed = await c.request('echo', { i, seq: sent, pad: PAD });
        stats.latencies.push(now() - t);
        stats.calls++;
        if (check) {
          stats.checked++;
          if (!echoed || echoed.i !== i || echoed.seq !== sent || echoed.pad !== PAD) stats.badAcks++;
        }
      } catch (err) {
        errors++;
        if (c.closed) return;
      }
    }
  }
  const loops = clients.map((c, i) => loop(c, i));
  await sleep(P.duration * 1000);
  running = false;
  const elapsed = (now() - t0) / 1000;
  const cpu = measureEnd();
  const calls = stats.calls;
  // a raw loop stops at its next ack; give the last acks a moment, then close everything
  await Promise.race([Promise.all(loops), sleep(P.requestTimeout * 1000)]);
  const disconnected = clients.filter((c) => c.closed).length;
  clients.forEach((c) => c.close());
  return Object.assign({ ok: true, calls, calls_per_s: calls / elapsed, errors, disconnected,
    checked: stats.checked, bad_acks: stats.badAcks, worker_split: split }, latencyStats(stats.latencies), cpu);
}

// W6: the server does the work (node 0 runs RPC loops to all nodes); we trigger and read its ack.
async function W6() {
  const [c] = await openClients([{ url: URLS[0], query: { id: 'rpc-trigger' } }]);
  measureStart();
  let ack;
  try {
    ack = await c.request('trigger', { action: 'rpc', loops: P.loops, duration: P.duration, expected: URLS.length },
      P.duration + P.requestTimeout + 10);
  } catch (err) {
    measureEnd();
    c.close();
    return { ok: false, error: String(err.message || err) };
  }
  const cpu = measureEnd();
  c.close();
  if (!ack || typeof ack !== 'object') return Object.assign({ ok: false, error: 'bad ack ' + JSON.stringify(ack) }, cpu);
  return Object.assign({ ok: !ack.error }, ack, cpu);
}

// W7: idle connections in stages; after each stage, ask the server to gc, report, and wait for
// the runner (one line on stdin) before the next stage.
// Lines from the runner on stdin: {nextLine(timeoutMs) -> line or null, close()}.
function runnerLines() {
  const stdinLines = [];
  let lineWaiter = null;
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => { if (lineWaiter) { const w = lineWaiter; lineWaiter = null; w(line); } else stdinLines.push(line); });
  const nextLine = (timeoutMs) => new Promise((resolve) => {
    if (stdinLines.length) { resolve(stdinLines.shift()); return; }
    lineWaiter = resolve;
    setTimeout(() => { if (lineWaiter === resolve) { lineWaiter = null; resolve(null); } }, timeoutMs);
  });
  return { nextLine, close: () => rl.close() };
}

async function W7() {
  const rl = runnerLines();
  const nextLine = rl.nextLine;
  const [control] = await openClients([{ url: URLS[0], query: { id: 'control' } }]);
  let clients = [];
  const stages = [];
  for (const target of P.stages) {
    const specs = [];
    for (let i = clients.length; i < target; i++) specs.push({ url: URLS[0], query: { id: 'idle' + i } });
    clients = clients.concat(await openClients(specs));
    await sleep(P.settle * 1000);   // let the connections sit idle with their heartbeats armed
    await control.request('trigger', { action: 'gc' });
    const alive = clients.filter((c) => !c.closed).length;
    out({ type: 'stage', connections: target, alive });
    const reply = await nextLine(60000);
    if (reply === null) throw new Error('runner did not answer stage ' + target);
    stages.push({ connections: target, alive });
  }
  rl.close();
  const heartbeats = clients.reduce((s, c) => s + c.heartbeats, 0);
  clients.forEach((c) => c.close());
  control.close();
  return { ok: true, stages, heartbeat_echoes: heartbeats };
}

// W8: reconnect storm. URLS[0] is the victim node, the others survive. P.survivors clients on
// the survivors run a closed echo loop (one call in flight, a random think time of mean
// P.interval ms) whose latencies are recorded; P.victims clients sit on the victim. After
// P.before seconds the runner is asked to stop the victim (SIGTERM, line {"type":"kill"}) at t0;
// every victim client then reconnects to a survivor (round-robin, as a load balancer would) on
// its own client's policy (P.policy):
//   "crossws":  the crossws_sync client's defaults (crossws_sync/core/backoff.py, "full"
//               jitter; docs/operations.md "Reconnect storms"): the delay of attempt n is uniform
//               in [0, 3 s] for n <= 3, then in [0, min(2^(n-3) * 3 s, 120 s)]; a 1012 close's
//               "retry=<s>s" and a 503's Retry-After set the next delay instead (capped at 120 s);
//   "original": the original client's fixed schedule (src/WebSocketConnector.js reconnect()):
//               3 s for n <= 3, then max(min(2^(n-3) * 3 s + random * 3 s, 120 s), 3 s); no hints.
// n counts attempts since the last open (both clients reset it on open). A victim is back when
// it is open on a survivor and one echo came back. Measured: time from t0 until all are back,
// every failed attempt by kind, the survivors' latency before and during the storm (t0 until
// all back). Bounded: P.budget seconds for the storm, 10 s per attempt (connect + echo).
const MAX_DELAY_S = 120;
const FAST_N = 3;
const FAST_S = 3;
function reconnectDelayS(policy, n) {
  if (policy === 'original') {
    if (n <= FAST_N) return FAST_S;
    const d = Math.min(Math.pow(2, n - FAST_N) * FAST_S + Math.random() * FAST_S, MAX_DELAY_S);
    return Math.floor(Math.max(d, FAST_S) * 1000) / 1000;
  }
  const ceiling = n <= FAST_N ? FAST_S : Math.min(Math.pow(2, Math.min(n - FAST_N, 64)) * FAST_S, MAX_DELAY_S);
  return Math.floor(Math.random() * ceiling * 1000) / 1000;
}
const RETRY_HINT = /(?:^|\s)retry=(\d{1,7}(?:\.\d{1,3})?)s(?:\s|$)/;  // crossws_sync/wire/retry.py

async function W8() {
  const policy = P.policy || 'crossws';
  if (policy !== 'crossws' && policy !== 'original') throw new Error('unknown policy ' + policy);
  if (URLS.length < 2) throw new Error('W8 needs a victim and at least one survivor node');
  const survivorUrls = URLS.slice(1);
  const attemptTimeoutMs = (P.attemptTimeout || 10) * 1000;
  const stdin = stdinLines();

  // survivors first (their own process), then the victims (each proved by one echo)
  const child = fork(__filename, process.argv.slice(2).concat(['--role', 'survivors']),
    { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const fromChild = [];
  let childWaiter = null;
  child.on('message', (m) => { if (childWaiter) { const w = childWaiter; childWaiter = null; w(m); } else fromChild.push(m); });
  child.on('exit', () => { if (childWaiter) { const w = childWaiter; childWaiter = null; w(null); } });
  const childMessage = (timeoutMs) => new Promise((resolve) => {
    if (fromChild.length) { resolve(fromChild.shift()); return; }
    childWaiter = resolve;
    setTimeout(() => { if (childWaiter === resolve) { childWaiter = null; resolve(null); } }, timeoutMs);
  });
  const ready = await childMessage(P.connectTimeout * 1000 + 5000);
  if (!ready || ready.type !== 'ready') { child.kill(); throw new Error('survivors: ' + (ready && ready.error || 'not ready')); }
  out({ type: 'pid', name: 'gen_s', pid: child.pid });
  const vSpecs = [];
  for (let i = 0; i < P.victims; i++) vSpecs.push({ url: URLS[0], query: { id: 'v' + i } });
  const tSetup = now();
  const victimClients = await openClients(vSpecs);
  const setupS = (now() - tSetup) / 1000;  // P.connectConcurrency upgrades + echo in flight: node 0's upgrade rate

  // the victims' reconnect state machines
  const counts = { attempts: 0, back: 0, refused_503: 0, refused_conn: 0, failed_other: 0, echo_failures: 0,
    hinted_1012: 0, hinted_503: 0, relost: 0, lost: 0, close_codes: {} };
  const backAt = [];
  const events = [];   // [time, kind] of every attempt's outcome, for the timeline
  let t0 = null;
  let stopped = false;
  let rr = 0;
  let doneAll = null;
  const allBack = new Promise((r) => { doneAll = r; });
  const pendingTimers = new Set();
  const holders = vSpecs.map((spec, i) => ({ id: spec.query.id, client: victimClients[i], repeat: 0, hint: null }));

  let lostFirst = null;
  let lostLast = null;
  function lost(h, code, reason) {
    counts.lost++;
    if (counts.relost === 0) { lostLast = now() - t0; if (lostFirst === null) lostFirst = lostLast; }
    counts.close_codes[code] = (counts.close_codes[code] || 0) + 1;
    h.hint = null;
    if (policy === 'crossws' && code === 1012) {
      const m = RETRY_HINT.exec(reason || '');
      if (m) { h.hint = Math.min(Number(m[1]), 3600); counts.hinted_1012++; }
    }
    reconnect(h);
  }
  function watch(h, c, isBack) {
    let fired = false;
    c.onClosed = () => {
      if (fired || stopped || t0 === null) return;  // a loss before t0 would leave it gone: the run fails
      fired = true;
      if (isBack) { counts.relost++; counts.back--; }
      lost(h, c.closeCode || 1006, c.closeReason || '');
    };
  }
  function reconnect(h) {
    if (stopped) return;
    h.repeat++;
    let delay;
    if (h.hint !== null) { delay = Math.min(h.hint, MAX_DELAY_S); h.hint = null; }
    else delay = reconnectDelayS(policy, h.repeat);
    const timer = setTimeout(() => { pendingTimers.delete(timer); attempt(h); }, delay * 1000);
    pendingTimers.add(timer);
  }
  async function attempt(h) {
    if (stopped) return;
    counts.attempts++;
    const url = survivorUrls[rr++ % survivorUrls.length];
    const c = new RawClient(url, { id: h.id });
    try {
      await c.connect(attemptTimeoutMs);
    } catch (err) {
      c.close();
      let kind;
      if (err.status === 503) {
        kind = 'refused_503';
        if (policy === 'crossws' && err.retryAfter !== null && err.retryAfter !== undefined) { h.hint = err.retryAfter; counts.hinted_503++; }
      } else if (err.code === 'ECONNREFUSED') kind = 'refused_conn';
      else kind = 'failed_other';
      counts[kind]++;
      events.push([now(), kind]);
      reconnect(h);
      return;
    }
    h.repeat = 0;  // both clients reset their attempt count on open
    try {
      await c.request('echo', { back: h.id }, attemptTimeoutMs / 1000);
    } catch (err) {
      counts.echo_failures++;
      events.push([now(), 'echo_failures']);
      c.close();
      reconnect(h);
      return;
    }
    if (stopped) { c.close(); return; }
    h.client = c;
    counts.back++;
    backAt.push(now() - t0);
    events.push([now(), 'back']);
    watch(h, c, true);
    if (counts.back >= holders.length) doneAll();
  }
  holders.forEach((h) => watch(h, h.client, false));

  // before: the survivors alone
  child.send({ type: 'before' });
  out({ type: 'phase', phase: 'window_start', window: 'before' });
  const tBefore = now();
  await sleep(P.before * 1000);
  out({ type: 'phase', phase: 'window_end', window: 'before' });

  // the storm: the runner stops the victim node; t0 is when we asked. The generator's own event
  // loop delay is sampled meanwhile: a survivor's latency includes it (thousands of timers of
  // the original's fixed schedule fire in the same millisecond here, not on 5,000 machines)
  const loopDelay = monitorEventLoopDelay({ resolution: 5 });
  loopDelay.enable();
  measureStart();
  child.send({ type: 'storm' });
  t0 = now();
  out({ type: 'kill', node: 0 });
  const ack = await stdin.next(10000);
  const killAckMs = now() - t0;
  if (ack === null) throw new Error('runner did not confirm the kill');
  const budget = sleep(P.budget * 1000).then(() => 'budget');
  const how = await Promise.race([allBack.then(() => 'all'), budget]);
  const tEnd = now();
  const cpu = measureEnd();
  loopDelay.disable();
  stopped = true;
  for (const timer of pendingTimers) clearTimeout(timer);
  stdin.close();
  child.send({ type: 'stop' });
  const sv = await childMessage(P.requestTimeout * 1000 + 20000);
  if (!sv || sv.type !== 'samples') { child.kill(); throw new Error('survivors sent no samples'); }

  // survivors' latencies (their send times on the common clock): before = [tBefore, t0), storm = [t0, tEnd]
  const sentAt = sv.sentAt.map((t) => t - performance.timeOrigin);  // onto this process's now()
  const latency = sv.latency;
  const before = [];
  const storm = [];
  for (let j = 0; j < sentAt.length; j++) {
    if (sentAt[j] >= tBefore && sentAt[j] < t0) before.push(latency[j]);
    else if (sentAt[j] >= t0 && sentAt[j] <= tEnd) storm.push(latency[j]);
  }
  const b = latencyStats(before);
  const st = latencyStats(storm);
  // timeline: per second after t0, victims back, failed attempts, survivors' p99 (calls sent then)
  const seconds = Math.ceil((tEnd - t0) / 1000);
  const timeline = [];
  for (let sec = 0; sec < Math.min(seconds, 300); sec++) timeline.push({ t: sec, back: 0, failed: 0, calls: 0, p99_ms: null });
  for (const [t, kind] of events) {
    const row = timeline[Math.floor((t - t0) / 1000)];
    if (row) { if (kind === 'back') row.back++; else row.failed++; }
  }
  const perSecond = timeline.map(() => []);
  for (let j = 0; j < sentAt.length; j++) {
    const sec = Math.floor((sentAt[j] - t0) / 1000);
    if (sec >= 0 && sec < perSecond.length) perSecond[sec].push(latency[j]);
  }
  perSecond.forEach((samples, sec) => { timeline[sec].calls = samples.length; timeline[sec].p99_ms = latencyStats(samples).p99_ms; });
  const fullSeconds = timeline.filter((row) => row.calls >= 100 && row.p99_ms !== null);

  backAt.sort((x, y) => x - y);
  const refused = counts.refused_503 + counts.refused_conn + counts.failed_other;
  holders.forEach((h) => { if (h.client) h.client.close(); });
  const result = {
    ok: how === 'all', policy, victims: holders.length, survivors: sv.survivors,
    recovery_s: how === 'all' ? (tEnd - t0) / 1000 : null,
    first_back_s: backAt.length ? backAt[0] / 1000 : null,
    // when the victims saw their connection end (close frame or TCP close): the victim's shutdown
    lost_first_s: lostFirst === null ? null : lostFirst / 1000, lost_last_s: lostLast === null ? null : lostLast / 1000,
    back_p50_s: backAt.length ? percentile(backAt, 0.5) / 1000 : null,
    back: counts.back, attempts: counts.attempts, refused, refused_503: counts.refused_503,
    refused_conn: counts.refused_conn, failed_other: counts.failed_other, echo_failures: counts.echo_failures,
    hinted_1012: counts.hinted_1012, hinted_503: counts.hinted_503, lost: counts.lost, relost: counts.relost,
    close_codes: counts.close_codes,
    p50_before_ms: b.p50_ms, p99_before_ms: b.p99_ms, calls_before: b.samples,
    p50_storm_ms: st.p50_ms, p99_storm_ms: st.p99_ms, calls_storm: st.samples,
    p99_worst_second_ms: fullSeconds.length ? Math.max(...fullSeconds.map((row) => row.p99_ms)) : null,
    gen_loop_delay_p99_ms: loopDelay.percentile(99) / 1e6, gen_loop_delay_max_ms: loopDelay.max / 1e6,
    survivors_loop_delay_p99_ms: sv.loop_delay_p99_ms, survivors_loop_delay_max_ms: sv.loop_delay_max_ms,
    survivor_errors: sv.errors, survivor_disconnected: sv.disconnected,
    kill_ack_ms: killAckMs, setup_refusals: setupRefusals, setup_victims_s: setupS,
    setup_upgrades_per_s: holders.length / setupS, timeline,
  };
  if (how !== 'all') result.error = counts.back + '/' + holders.length + ' victims back within the budget of ' + P.budget + ' s';
  return Object.assign(result, cpu);
}

// W8's survivors, in a process of their own (forked by W8 with --role survivors): the storm's
// thousands of connects and timers in the main generator must not delay their calls. Each runs
// a closed loop: one echo, its ack, a random pause of 0 to 2 x P.interval ms. Send times are
// reported on the common clock (performance.timeOrigin + now()). IPC from the parent: "before"
// (a no-op marker), "storm" (restart the event-loop delay histogram), "stop" (send the samples, exit).
async function survivorsRole() {
  const survivorUrls = URLS.slice(1);
  const specs = [];
  for (let k = 0; k < P.survivors; k++) specs.push({ url: survivorUrls[k % survivorUrls.length], query: { id: 's' + k } });
  let survivors;
  try {
    survivors = await openClients(specs);
  } catch (err) {
    process.send({ type: 'error', error: String(err.message || err) }, () => process.exit(2));
    return;
  }
  const sentAt = [];
  const latency = [];
  let errors = 0;
  let running = true;
  const inFlight = new Set();
  const loopDelay = monitorEventLoopDelay({ resolution: 5 });
  loopDelay.enable();
  survivors.forEach((c, k) => {
    const go = () => {
      if (!running || c.closed) return;
      const t = now();
      const p = c.request('echo', { s: k, pad: PAD }, P.requestTimeout).then(() => {
        sentAt.push(performance.timeOrigin + t);
        latency.push(now() - t);
      }, () => { errors++; });
      inFlight.add(p);
      p.then(() => { inFlight.delete(p); if (running && !c.closed) setTimeout(go, P.interval * 2 * Math.random()); });
    };
    setTimeout(go, P.interval * Math.random());
  });
  process.on('disconnect', () => process.exit(0));
  process.on('message', async (m) => {
    if (m.type === 'storm') loopDelay.reset();
    if (m.type !== 'stop') return;
    running = false;
    loopDelay.disable();
    await Promise.race([Promise.all(inFlight), sleep(P.requestTimeout * 1000)]);
    const disconnected = survivors.filter((c) => c.closed).length;
    survivors.forEach((c) => c.close());
    process.send({ type: 'samples', survivors: survivors.length, sentAt, latency, errors, disconnected,
      loop_delay_p99_ms: loopDelay.percentile(99) / 1e6, loop_delay_max_ms: loopDelay.max / 1e6 },
    () => process.exit(0));
  });
  process.send({ type: 'ready' });
}

// Lines from the runner on stdin (W7's stages, W8's kill confirmation).
function stdinLines() {
  const lines = [];
  let waiter = null;
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', (line) => { if (waiter) { const w = waiter; waiter = null; w(line); } else lines.push(line); });
  return {
    next(timeoutMs) {
      return new Promise((resolve) => {
        if (lines.length) { resolve(lines.shift()); return; }
        waiter = resolve;
        setTimeout(() => { if (waiter === resolve) { waiter = null; resolve(null); } }, timeoutMs);
      });
    },
    close() { rl.close(); },
  };
}

// W4L: latency under load. The same pairs as W4; first the closed loop (one message in flight
// per pair) for P.duration seconds gives the maximum rate, then an open loop at each of
// P.levels (fractions of that maximum) for P.duration seconds: round trips started on
// schedule (every due one released each millisecond, pairs in turn, several in flight per pair
// when replies are late), each one's latency from its send. A round trip not back within
// P.lostAfter seconds after its level's window is counted lost. The CPU window (runner) is
// the last level's.
async function W4L() {
  const n = URLS.length;
  const specs = [];
  for (let k = 0; k < P.pairs; k++) {
    specs.push({ url: URLS[k % n], query: { id: 'a' + k } });
    specs.push({ url: URLS[(k + 1) % n], query: { id: 'b' + k } });
  }
  const clients = await openClients(specs);
  const warmRounds = await warmRoutes(Array.from({ length: P.pairs }, (_, k) => [clients[2 * k], clients[2 * k + 1], 'b' + k]));
  for (let k = 0; k < P.pairs; k++) {
    const b = clients[2 * k + 1];
    b.onEvent = (event, payload) => {
      if (event === 'relay' && payload.warm === undefined) b.emit('relay', { to: payload.from, from: 'b' + k, k, seq: payload.seq, pad: PAD });
    };
  }
  const result = { ok: true, warmup_rounds: warmRounds, levels: [] };
  // closed loop: the maximum
  {
    const latencies = [];
    let roundTrips = 0;
    let running = true;
    const sentAt = new Float64Array(P.pairs);
    const seqOf = new Int32Array(P.pairs);
    const send = (k) => {
      seqOf[k]++;
      sentAt[k] = now();
      clients[2 * k].emit('relay', { to: 'b' + k, from: 'a' + k, k, seq: seqOf[k], pad: PAD });
    };
    for (let k = 0; k < P.pairs; k++) {
      clients[2 * k].onEvent = (event, payload) => {
        if (event !== 'relay' || payload.seq !== seqOf[k]) return;
        if (running) { latencies.push(now() - sentAt[k]); roundTrips++; send(k); }
      };
    }
    const t0 = now();
    for (let k = 0; k < P.pairs; k++) send(k);
    await sleep(P.duration * 1000);
    running = false;
    const elapsed = (now() - t0) / 1000;
    const stats = latencyStats(latencies);
    result.max_per_s = roundTrips / elapsed;
    result.p50_ms_max = stats.p50_ms;
    result.p99_ms_max = stats.p99_ms;
    await sleep(1000);  // let the last closed-loop round trips drain
  }
  // open loop at each level
  let seq = 1e6;
  const sentAt = new Map();
  let latencies = [];
  for (let k = 0; k < P.pairs; k++) {
    clients[2 * k].onEvent = (event, payload) => {
      if (event !== 'relay') return;
      const t = sentAt.get(payload.seq);
      if (t === undefined) return;
      sentAt.delete(payload.seq);
      latencies.push(now() - t);
    };
  }
  for (let li = 0; li < P.levels.length; li++) {
    const level = P.levels[li];
    const rate = level * result.max_per_s;
    latencies = [];
    sentAt.clear();
    const last = li === P.levels.length - 1;
    if (last) measureStart();
    const t0 = now();
    const end = t0 + P.duration * 1000;
    let released = 0;
    let behind = 0;
    await new Promise((resolve) => {
      const timer = setInterval(() => {
        const t = now();
        if (t >= end) { clearInterval(timer); resolve(); return; }
        const due = Math.floor((t - t0) * rate / 1000) + 1;
        while (released < due) {
          behind = Math.max(behind, t - (t0 + released * 1000 / rate));
          const k = released % P.pairs;
          released++;
          seq++;
          sentAt.set(seq, now());
          clients[2 * k].emit('relay', { to: 'b' + k, from: 'a' + k, k, seq, pad: PAD });
        }
      }, 1);
    });
    const drainUntil = now() + P.lostAfter * 1000;
    while (sentAt.size && now() < drainUntil) await sleep(10);
    const cpu = last ? measureEnd() : null;
    const stats = latencyStats(latencies);
    const tag = 'at' + Math.round(level * 100);
    result['offered_per_s_' + tag] = released / P.duration;
    result['per_s_' + tag] = latencies.length / P.duration;
    result['p50_ms_' + tag] = stats.p50_ms;
    result['p99_ms_' + tag] = stats.p99_ms;
    result['lost_' + tag] = sentAt.size;
    result['behind_ms_' + tag] = behind;
    result.levels.push({ level, rate, released, received: latencies.length, lost: sentAt.size, behind_ms: behind,
      p50_ms: stats.p50_ms, p99_ms: stats.p99_ms });
    if (cpu) Object.assign(result, cpu);
    await sleep(500);
  }
  result.lost = result.levels.reduce((a, l) => a + l.lost, 0);
  result.disconnected = clients.filter((c) => c.closed).length;
  clients.forEach((c) => c.close());
  return result;
}

// W6L: W6's RPC loops inside node 0, first closed (the maximum, P.loops loops), then an open
// loop at each of P.levels of that maximum (the server releases calls on schedule; its
// run_rpc_rate / rpcRate). The CPU window (runner) is the last level's.
async function W6L() {
  const [c] = await openClients([{ url: URLS[0], query: { id: 'rpc-trigger' } }]);
  const call = (extra) => c.request('trigger', Object.assign({ action: 'rpc', loops: P.loops, duration: P.duration,
    expected: URLS.length }, extra), P.duration + P.requestTimeout + 40);
  const result = { ok: true, levels: [] };
  try {
    const closed = await call({});
    if (!closed || closed.error) throw new Error('closed loop: ' + JSON.stringify(closed));
    result.max_per_s = closed.calls_per_s;
    result.p50_ms_max = closed.p50_ms;
    result.p99_ms_max = closed.p99_ms;
    result.failures = closed.failures;
    for (let li = 0; li < P.levels.length; li++) {
      const level = P.levels[li];
      const last = li === P.levels.length - 1;
      await sleep(500);
      if (last) measureStart();
      const r = await call({ rate: level * result.max_per_s });
      if (last) Object.assign(result, measureEnd());
      if (!r || r.error) throw new Error('open loop at ' + level + ': ' + JSON.stringify(r));
      const tag = 'at' + Math.round(level * 100);
      result['offered_per_s_' + tag] = r.offered_per_s;
      result['per_s_' + tag] = r.calls_per_s;
      result['p50_ms_' + tag] = r.p50_ms;
      result['p99_ms_' + tag] = r.p99_ms;
      result['behind_ms_' + tag] = r.behind_ms_max;
      result.failures += r.failures + (r.unstarted || 0);
      result.levels.push(Object.assign({ level }, r));
    }
  } catch (err) {
    c.close();
    return Object.assign(result, { ok: false, error: String(err.message || err) });
  }
  c.close();
  return result;
}

// W10: accept rate. P.connections clients, at most P.concurrency opening at once; each carries
// ?id=u<i>&token=<HMAC of the id> (bench/servers/common.py's bench_token), which the server's
// auth hook checks at the upgrade; the server maps the user and pushes one "welcome". A
// client's time runs from just before its TCP connect to the arrival of its welcome; the rate
// is the welcomed connections over the time from the first attempt to the last welcome. All
// stay open until the end. Failures: refused upgrades, errors, no welcome in P.welcomeTimeout s.
const crypto2 = require('crypto');
const TOKEN_SECRET = 'crossws-bench-secret';
const tokenOf = (id) => crypto2.createHmac('sha256', TOKEN_SECRET).update(id).digest('hex').slice(0, 32);

async function W10() {
  const specs = [];
  for (let i = 0; i < P.connections; i++) {
    const id = 'u' + i;
    specs.push({ url: URLS[i % URLS.length], query: { id, token: P.badTokens && i % P.badTokens === 0 ? 'x' : tokenOf(id) } });
  }
  const clients = [];
  const latencies = [];
  let next = 0;
  let failures = 0;
  let refused = 0;
  let wrongWelcome = 0;
  let firstError = null;
  let tLast = 0;
  const deadline = now() + P.connectTimeout * 1000;
  async function worker() {
    while (next < specs.length && now() < deadline) {
      const i = next++;
      const c = new Client(specs[i].url, specs[i].query);
      const t0 = now();
      let gotWelcome;
      const welcome = new Promise((resolve) => { gotWelcome = resolve; });
      c.onEvent = (event, payload) => { if (event === 'welcome') gotWelcome(payload); };
      let timer = null;
      try {
        await c.connect(Math.max(1000, deadline - now()));
        const payload = await Promise.race([welcome, new Promise((resolve, reject) => {
          timer = setTimeout(() => reject(new Error('no welcome in ' + P.welcomeTimeout + ' s')), P.welcomeTimeout * 1000);
        })]);
        clearTimeout(timer);
        const t = now();
        latencies.push(t - t0);
        if (t > tLast) tLast = t;
        if (!payload || payload.id !== specs[i].query.id) wrongWelcome++;
        clients.push(c);
      } catch (err) {
        clearTimeout(timer);
        failures++;
        if (/40[13]|unauthorized/i.test(String(err.message || err))) refused++;
        if (!firstError) firstError = err;
        c.close();
      }
    }
  }
  measureStart();
  const t0 = now();
  const workers = [];
  for (let w = 0; w < Math.min(P.concurrency, specs.length); w++) workers.push(worker());
  await Promise.all(workers);
  const cpu = measureEnd();
  const elapsed = ((tLast || now()) - t0) / 1000;
  const disconnected = clients.filter((c) => c.closed).length;
  clients.forEach((c) => c.close());
  return Object.assign({
    ok: true, connections: latencies.length, attempted: next, failures, refused, wrong_welcome: wrongWelcome,
    disconnected, connections_per_s: elapsed > 0 ? latencies.length / elapsed : null, elapsed_s: elapsed,
    first_error: firstError ? String(firstError.message || firstError) : null,
  }, latencyStats(latencies), cpu);
}

// W11: an idle fleet at the largest count the machine allows (bench/README.md, issue 20, C100k).
// The runner may split the fleet over several generator processes (a process's RLIMIT_NOFILE):
// this one is params.part of params.parts and holds params.connections idle clients (ids
// idle<offset+i>, the original's heartbeat armed); part 0 also holds the canary, which runs echo
// round trips at params.canaryRate per second through the idle window and then triggers the
// broadcast to all. Each step waits for one line from the runner on stdin:
//   part 0 first: canary connects, server gc     -> stage "base" (the runner reads RSS(0))
//   "connect": open the idle clients              -> stage "connected" {opened, seconds}
//   "idle" (part 0): settle, server gc            -> stage "idle_start" (RSS), measure_start,
//       canary for params.window s, measure_end, the server's stats -> stage "idle_end"
//   "arm": count pushed "bench" frames            -> stage "armed" {alive}
//   "broadcast" (part 0): one trigger             -> (every part) stage "delivered" {received,
//       expected, t_last (epoch ms); part 0: t0, the trigger's ack}, then the result line.
const epochMs = () => performance.timeOrigin + now();

async function W11() {
  const rl = runnerLines();
  const step = async (expected) => {
    const line = await rl.nextLine(P.deadline * 1000);
    if (line === null || line.trim() !== expected) throw new Error('runner sent ' + JSON.stringify(line) + ', expected ' + expected);
  };
  const main = P.part === 0;
  let canary = null;
  if (main) {
    [canary] = await openClients([{ url: URLS[0], query: { id: 'canary' } }]);
    await canary.request('trigger', { action: 'gc' });
    out({ type: 'stage', phase: 'base' });
  }
  await step('connect');
  const specs = [];
  for (let i = 0; i < P.connections; i++) specs.push({ url: URLS[0], query: { id: 'idle' + (P.offset + i) } });
  const t0 = now();
  const idle = await openClients(specs, true);
  out({ type: 'stage', phase: 'connected', opened: idle.length, seconds: (now() - t0) / 1000 });
  let canaryStats = null;
  let serverStats = null;
  if (main) {
    await step('idle');
    await sleep(P.settle * 1000);
    await canary.request('trigger', { action: 'gc' }, 60);
    out({ type: 'stage', phase: 'idle_start' });
    measureStart();
    const latencies = [];
    const slow = [];  // [sent at (epoch ms), round trip ms] of the round trips over P.slowCanary ms
    let failed = 0;
    const inFlight = new Set();
    const endAt = now() + P.window * 1000;
    let seq = 0;
    while (now() < endAt) {
      const sent = now();
      const sentEpoch = epochMs();
      const call = canary.request('echo', { canary: seq++, pad: PAD }, P.requestTimeout)
        .then(() => {
          const ms = now() - sent;
          latencies.push(ms);
          if (ms > P.slowCanary && slow.length < 1000) slow.push([sentEpoch, ms]);
        }, () => { failed++; });
      inFlight.add(call);
      call.then(() => inFlight.delete(call));
      await sleep(1000 / P.canaryRate);
    }
    const cpu = measureEnd();
    await Promise.race([Promise.all([...inFlight]), sleep(P.requestTimeout * 1000)]);
    canaryStats = Object.assign({ canary_failed: failed + inFlight.size, max_ms: latencies.length ? Math.max(...latencies) : null, slow },
      latencyStats(latencies));
    try {
      serverStats = await canary.request('trigger', { action: 'stats' }, 30);
    } catch (err) {
      serverStats = { error: String(err.message || err) };
    }
    out(Object.assign({ type: 'stage', phase: 'idle_end', canary: canaryStats, server: serverStats }, cpu));
  }
  await step('arm');
  const fleet = main ? idle.concat([canary]) : idle;
  const alive = fleet.filter((c) => !c.closed);
  let received = 0;
  let tLast = 0;
  let done = null;
  const finished = new Promise((r) => { done = r; });
  const count = () => {
    received++;
    tLast = epochMs();
    if (received >= alive.length) done();
  };
  if (alive.length === 0) done();
  alive.forEach((c) => { if (c instanceof RawClient) c.countBench = count; c.onBench = count; });
  out({ type: 'stage', phase: 'armed', alive: alive.length });
  let trigger = null;
  let tSent = null;
  if (main) {
    await step('broadcast');
    tSent = epochMs();
    trigger = canary.request('trigger', { action: 'broadcast', count: 1, pad: P.pad }, P.deadline)
      .catch((err) => ({ error: String(err.message || err) }));
  }
  // done when every live client has its frame, or P.idle s pass without one (P.firstDelivery s
  // before the first: the other parts start waiting when armed, before the trigger)
  const waitStart = now();
  const idleCheck = setInterval(() => {
    if (received ? epochMs() - tLast > P.idle * 1000 : now() - waitStart > P.firstDelivery * 1000) done();
  }, 100);
  await finished;
  clearInterval(idleCheck);
  const ack = trigger ? await Promise.race([trigger, sleep(1000).then(() => ({ error: 'no ack yet' }))]) : null;
  const heartbeats = fleet.reduce((s, c) => s + c.heartbeats, 0);
  out({ type: 'stage', phase: 'delivered', received, expected: alive.length, t_last: received ? tLast : null,
    t0: tSent, trigger_ack: ack, heartbeat_echoes: heartbeats });
  rl.close();
  fleet.forEach((c) => c.close());
  return { ok: true, part: P.part, opened: idle.length, received };
}

const WORKLOADS = { W1, W2, W3, W4, W5, W6, W7, W8, W4L, W6L, W10, W11 };

(async () => {
  if (args.role === 'survivors') { await survivorsRole(); return; }
  if (!WORKLOADS[WORKLOAD]) fail('unknown workload ' + WORKLOAD);
  if (URLS.length === 0) fail('no --urls');
  try {
    const result = await WORKLOADS[WORKLOAD]();
    out(Object.assign({ type: 'result', workload: WORKLOAD, proto: PROTO }, result));
    process.exit(0);
  } catch (err) {
    log(err && err.stack ? err.stack : err);
    fail(err && err.message ? err.message : err);
  }
})();
