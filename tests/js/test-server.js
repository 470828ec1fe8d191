// A tiny stand-in for the Python adapter, built on the "ws" package: the same test
// handlers (say, twice, slow, delay, kick) and the original's wire frames. Used by
// test_browser_client.py with --server=node; prints one JSON line per server-side
// observation on stdout, and reads {"cmd": "broadcast", "event", "data"} lines on stdin.
'use strict';
const { WebSocketServer } = require('ws');
const readline = require('readline');

const port = Number(process.argv[2]);
const heartbeat = '';
const wss = new WebSocketServer({ host: '127.0.0.1', port });
const record = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

wss.on('listening', () => record({ type: 'listening', port }));
wss.on('connection', (socket, req) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  record({ type: 'connection', url: req.url, params: Object.fromEntries(url.searchParams), path: url.pathname.replace(/^\/+/, '') });
  socket.on('close', (code, reason) => record({ type: 'close', code, reason: reason.toString() }));
  socket.on('message', (raw) => {
    const text = raw.toString();
    record({ type: 'message', data: text });
    if (text === heartbeat) { socket.send(heartbeat); return; }
    let msg;
    try { msg = JSON.parse(text); } catch (err) { return; }
    if (!msg || typeof msg.event !== 'string') return;
    const callback = typeof msg.callbackId === 'string'
      ? (data) => socket.send(JSON.stringify({ payload: data, callbackId: msg.callbackId })) : null;
    const payload = msg.payload;
    if (msg.event === 'say' && callback) callback({ echo: payload });
    else if (msg.event === 'twice' && callback) { callback({ n: 1 }); callback({ n: 2 }); }
    else if (msg.event === 'delay' && callback) setTimeout(() => callback({ delayed: payload.ms }), payload.ms);
    else if (msg.event === 'kick') socket.close(payload.code, payload.reason);
  });
});

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = JSON.parse(line);
  if (cmd.cmd === 'broadcast') {
    const frame = JSON.stringify({ event: cmd.event, payload: cmd.data });
    wss.clients.forEach((client) => client.send(frame));
    record({ type: 'broadcasted', event: cmd.event });
  }
});
