#!/usr/bin/env node
// Calibration (Node flavour): a bare `ws` server with no framework, speaking the bench
// protocol (the original's JSON frames) for the single-node workloads W1, W5 and W7.
//
//   node calibration_server.js --port P
//
// * echo with callbackId -> ack with the same payload;
// * trigger {action:"broadcast", count, pad} -> count pushes of "bench" to every client
//   (each frame's JSON encoded once), then the ack; sent in slices of 20 broadcasts with
//   setImmediate between them so the event loop keeps serving, and waits for the socket
//   buffers to drain past 4 MiB instead of queueing everything in memory;
// * trigger {action:"gc"} -> global.gc() when started with --expose-gc, then the ack;
// * an empty text frame (the original's heartbeat) is echoed.
'use strict';

const { WebSocketServer } = require('ws');

const argv = process.argv;
const port = Number(argv[argv.indexOf('--port') + 1]);
const host = argv.includes('--host') ? argv[argv.indexOf('--host') + 1] : '127.0.0.1';
const wss = new WebSocketServer({ host, port, perMessageDeflate: false, backlog: 4096, maxPayload: 1 << 20 });

function buffered() {
  let max = 0;
  for (const c of wss.clients) if (c.bufferedAmount > max) max = c.bufferedAmount;
  return max;
}

function broadcast(count, pad, done) {
  let seq = 0;
  function slice() {
    if (buffered() > (4 << 20)) { setTimeout(slice, 1); return; }
    const end = Math.min(count, seq + 20);
    for (; seq < end; seq++) {
      const data = Buffer.from(JSON.stringify({ event: 'bench', payload: { seq, pad } }));
      for (const c of wss.clients) if (c.readyState === 1) c.send(data, { binary: false });
    }
    if (seq < count) setImmediate(slice); else done();
  }
  slice();
}

wss.on('connection', (ws) => {
  ws.on('message', (data) => {
    if (data.length === 0) { ws.send(''); return; }
    let msg;
    try { msg = JSON.parse(data.toString()); } catch (e) { return; }
    const { event, payload, callbackId } = msg;
    const ack = (reply) => { if (callbackId !== undefined) ws.send(JSON.stringify({ payload: reply, callbackId })); };
    if (event === 'echo') { ack(payload); return; }
    if (event !== 'trigger' || !payload) return;
    if (payload.action === 'broadcast') {
      const count = Number(payload.count);
      broadcast(count, 'x'.repeat(Number(payload.pad || 48)), () => ack({ sent: count }));
    } else if (payload.action === 'gc') {
      if (global.gc) global.gc();
      ack({ gc: !!global.gc });
    } else {
      ack({ error: 'unsupported action ' + payload.action });
    }
  });
});
wss.on('error', (err) => { process.stderr.write(String(err) + '\n'); process.exit(1); });
process.on('SIGTERM', () => process.exit(0));
