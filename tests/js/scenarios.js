// Scenarios for the browser client against a live server. Each one asserts what an
// application using WebSocketConnector sees (events, callback arguments, promise results)
// and, through ctx.control, what the server saw.
'use strict';
const assert = require('node:assert/strict');
const { Recorder, waitFor, quietPeriod } = require('./harness');

const LIFECYCLE = ['open', 'close', 'error', 'message', 'ping', 'pong', 'pong-timeout', 'reconnect', 'repeat-limit'];
const QUIET = LIFECYCLE.filter((name) => name !== 'message');
// The original's exact schedule, so the scenarios can check the delays.
const FAST = { pingInterval: 60000, fastReconnectInterval: 50, fastReconnectThreshold: 3, reconnectJitter: 'original' };

function callbackResult(connector, event, data, options) {
  return new Promise((resolve) => {
    connector.emit(event, data, (err, payload) => resolve({ err, payload }), options);
  });
}

async function serverLog(ctx, type) {
  const log = await ctx.control.request('server_log');
  return type ? log.filter((entry) => entry.type === type) : log;
}

/** A connector whose server went away: it keeps reconnecting (autoReconnect), so calls queue. */
async function serverDown(ctx, options) {
  const c = ctx.make(Object.assign({}, FAST, { autoReconnect: true, fastReconnectThreshold: 100 }, options));
  const rec = new Recorder(c, QUIET);
  await waitFor(() => c.connected, 3000, 'open');
  await ctx.control.request('stop_server');
  await waitFor(() => rec.count('reconnect') >= 2, 3000, 'reconnect attempts');
  assert.equal(c.connected, false);
  return { c, rec };
}

/** Payloads of the JSON events the server received since its last connection. */
async function payloadsSinceLastConnection(ctx) {
  const log = await serverLog(ctx);
  let start = 0;
  log.forEach((entry, index) => { if (entry.type === 'connection') start = index; });
  return log.slice(start).filter((entry) => entry.type === 'message' && entry.data.startsWith('{'))
    .map((entry) => JSON.parse(entry.data).payload);
}

const scenarios = {
  async binary(ctx) {
    const c = ctx.make(FAST);
    const got = [];
    c.on('message', (data) => got.push(data));
    await waitFor(() => c.connected, 3000, 'open');
    assert.equal(c.send(new Uint8Array([0, 255, 1, 2]).buffer), true);
    await waitFor(() => got.some((d) => typeof d !== 'string'), 3000, 'binary echo');
    const echoed = got.find((d) => typeof d !== 'string');
    assert.ok(echoed instanceof ArrayBuffer, 'an ArrayBuffer, got ' + Object.prototype.toString.call(echoed));
    assert.deepEqual(Array.from(new Uint8Array(echoed)), [2, 1, 255, 0]);
    assert.deepEqual((await serverLog(ctx, 'binary')).map((e) => e.data), [[0, 255, 1, 2]]);
    assert.equal(c.send('{"event":"say","payload":"raw","callbackId":"r1"}'), true); // raw text: the server sees an event
    await waitFor(() => got.includes('{"payload":{"echo":"raw"},"callbackId":"r1"}'), 3000, 'ack of a raw frame');
    assert.throws(() => c.send(42), TypeError);
    c.manualClose();
    assert.equal(c.send('late'), false);
  },

  async ack(ctx) {
    const c = ctx.make(FAST);
    await waitFor(() => c.connected, 3000, 'open');
    const first = await callbackResult(c, 'say', { msg: 'with cb' });
    assert.equal(first.err, null);
    assert.deepEqual(first.payload, { echo: { msg: 'with cb' } });
    const viaPromise = await c.emitWithPromise('say', [1, 'two']);
    assert.deepEqual(viaPromise, { success: true, data: { echo: [1, 'two'] } });
    assert.equal(c.emit('say', { msg: 'hi' }), true);
    // The server may call back twice: only the first reply counts.
    const calls = [];
    c.emit('twice', {}, (err, payload) => calls.push(payload));
    await waitFor(() => calls.length === 1, 3000, 'first ack');
    const roundTrip = await c.emitWithPromise('say', 'after');
    assert.equal(roundTrip.success, true);
    assert.deepEqual(calls, [{ n: 1 }]);
    // Wire frames are the original's, key order included.
    const frames = (await serverLog(ctx, 'message')).map((entry) => entry.data);
    const request = frames.find((text) => text.includes('with cb'));
    assert.match(request, /^\{"event":"say","payload":\{"msg":"with cb"\},"callbackId":"[0-9a-z]+-[0-9a-z]{1,4}-1"\}$/);
    assert.ok(frames.includes('{"event":"say","payload":{"msg":"hi"}}'), 'fire-and-forget frame: ' + frames);
  },

  async ack_timeout(ctx) {
    const c = ctx.make(FAST);
    await waitFor(() => c.connected, 3000, 'open');
    const started = performance.now();
    const viaCallback = await callbackResult(c, 'slow', { n: 1 }, { callbackTimeout: 150 });
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 140 && elapsed < 1500, 'timed out after ' + elapsed + ' ms');
    assert.equal(viaCallback.payload, null);
    assert.equal(viaCallback.err.errorCode, 'CALLBACK_TIMEOUT');
    assert.match(viaCallback.err.error, /^Is callback timeout: \S+$/);
    const viaPromise = await c.emitWithPromise('slow', { n: 2 }, { callbackTimeout: 100 });
    assert.equal(viaPromise.success, false);
    assert.equal(viaPromise.errorCode, 'CALLBACK_TIMEOUT');
    assert.match(viaPromise.error, /^Is promise callback timeout: \S+$/);
    // The instance default applies when the call gives none.
    const d = ctx.make(Object.assign({}, FAST, { callbackTimeout: 120 }));
    await waitFor(() => d.connected, 3000, 'open');
    const byDefault = await d.emitWithPromise('slow', 1);
    assert.equal(byDefault.errorCode, 'CALLBACK_TIMEOUT');
    // Still connected and usable afterwards.
    assert.deepEqual(await d.emitWithPromise('say', 3), { success: true, data: { echo: 3 } });
  },

  async pending(ctx) {
    const c = ctx.make(FAST);
    await waitFor(() => c.connected, 3000, 'open');
    const order = [];
    const slow = c.emitWithPromise('delay', { ms: 300 }, { pendingTimeout: 40, onPending: () => order.push('pending') });
    const result = await slow;
    order.push('result');
    assert.deepEqual(result, { success: true, data: { delayed: 300 } });
    assert.deepEqual(order, ['pending', 'result']);
    let pendingCalls = 0;
    const quick = await callbackResult(c, 'say', 'x', { pendingTimeout: 400, onPending: () => pendingCalls++ });
    assert.deepEqual(quick.payload, { echo: 'x' });
    await quietPeriod(450);
    assert.equal(pendingCalls, 0, 'onPending fired after the ack');
    // pendingTimeout >= callbackTimeout: onPending is never called.
    const late = await c.emitWithPromise('slow', 1, { callbackTimeout: 60, pendingTimeout: 80, onPending: () => pendingCalls++ });
    assert.equal(late.errorCode, 'CALLBACK_TIMEOUT');
    assert.equal(pendingCalls, 0);
  },

  async arguments_and_not_open(ctx) {
    const c = ctx.make(Object.assign({}, FAST, { autoConnect: false }));
    assert.equal(c.connected, false);
    const notOpen = await callbackResult(c, 'say', 1);
    assert.deepEqual(notOpen.err, { error: 'WebSocket is not open', errorCode: 'WS_NOT_OPEN' });
    assert.equal(c.emit('say', 1), false);
    assert.deepEqual(await c.emitWithPromise('say', 1), { success: false, error: 'WebSocket is not open', errorCode: 'WS_NOT_OPEN' });
    assert.throws(() => c.emit('', 1), TypeError);
    assert.throws(() => c.emit('say', null), /data cannot be null or undefined/);
    assert.throws(() => c.emit('say', 1, () => {}, { callbackTimeout: 0 }), TypeError);
    assert.throws(() => c.emit('say', 1, 'not a function'), TypeError);
    assert.deepEqual(await c.emitWithPromise('', 1), { success: false, error: 'No event provided in emitWithPromise' });
    assert.deepEqual(await c.emitWithPromise('say', undefined), { success: false, error: 'Data cannot be null or undefined' });
    const invalid = await c.emitWithPromise('say', 1, { callbackTimeout: -5 });
    assert.equal(invalid.success, false);
    assert.equal(invalid.errorCode, 'INVALID_ARGUMENT');
    assert.throws(() => c.on('', () => {}), TypeError);
    assert.throws(() => c.on('open', 'x'), TypeError);
    assert.throws(() => c.setPingInterval(0), TypeError);
    assert.throws(() => new ctx.W({ url: '' }), /options\.url is required/);
    assert.throws(() => new ctx.W({}), /options\.url is required/);
    assert.throws(() => new ctx.W({ url: 'ftp://x' }), /must start with ws:\/\/ or wss:\/\//);
    assert.throws(() => new ctx.W({ url: ctx.url, pingInterval: -1 }), TypeError);
    // Then connect() opens it and the same calls work.
    c.connect();
    await waitFor(() => c.connected, 3000, 'open');
    assert.deepEqual(await c.emitWithPromise('say', 1), { success: true, data: { echo: 1 } });
  },

  async heartbeat(ctx) {
    const c = ctx.make(Object.assign({}, FAST, { pingInterval: 80, pongTimeout: 1000 }));
    const rec = new Recorder(c, QUIET);
    await waitFor(() => rec.count('pong') >= 3, 3000, 'three pongs');
    const names = rec.names();
    assert.deepEqual(names.slice(0, 7), ['open', 'ping', 'pong', 'ping', 'pong', 'ping', 'pong']);
    const latency = rec.last('pong').arg;
    assert.equal(typeof latency, 'number');
    assert.ok(latency >= 0 && latency < 1000, 'latency ' + latency);
    assert.equal(c.latency, latency);
    assert.equal(c.getPingInterval(), 80);
    // Heartbeat frames are the empty text frame.
    const frames = (await serverLog(ctx, 'message')).map((entry) => entry.data);
    assert.ok(frames.includes(''), 'no empty heartbeat frame seen by the server');
    // A longer interval applied at once: no ping within the old period.
    c.setPingInterval(5000, true);
    assert.equal(c.getPingInterval(), 5000);
    const before = rec.count('ping');
    await quietPeriod(300);
    assert.equal(rec.count('ping'), before);
    c.setPingInterval(50, true);
    await waitFor(() => rec.count('pong') > before, 3000, 'pong after re-arming');
    // Heartbeat timers stop on close: no ping/pong-timeout after the server kicks us.
    c.emit('kick', { code: 4000, reason: 'bye' });
    await waitFor(() => rec.count('close') === 1, 3000, 'close');
    const afterClose = rec.events.length;
    await quietPeriod(300);
    assert.deepEqual(rec.names().slice(afterClose), []);
  },

  async pong_timeout(ctx) {
    // The server echoes only its own heartbeat (""): "nope" is never answered.
    const c = ctx.make(Object.assign({}, FAST, { pingMsg: 'nope', pingInterval: 60, pongTimeout: 100 }));
    const rec = new Recorder(c, QUIET);
    await waitFor(() => rec.count('close') === 1, 3000, 'close after pong timeout');
    assert.deepEqual(rec.names(), ['open', 'ping', 'pong-timeout', 'close']);
    const close = rec.last('close');
    assert.equal(close.arg.code, 4002);
    assert.equal(close.arg.reason, 'pong timeout');
    // The local close comes at once, not after a close handshake.
    assert.ok(close.t - rec.last('pong-timeout').t < 50);
    const closes = await waitFor(async () => {
      const found = await serverLog(ctx, 'close');
      return found.length ? found : null;
    }, 3000, 'server close');
    assert.equal(closes[0].code, 4002);
    assert.equal(closes[0].reason, 'pong timeout');
    await quietPeriod(200);
    assert.deepEqual(rec.names(), ['open', 'ping', 'pong-timeout', 'close'], 'no spurious events after close');
    // With autoReconnect the connector comes back by itself.
    const d = ctx.make(Object.assign({}, FAST, { pingMsg: 'nope', pingInterval: 60, pongTimeout: 100, autoReconnect: true }));
    const recD = new Recorder(d, QUIET);
    await waitFor(() => recD.count('open') === 2, 3000, 'reopen after pong timeout');
    assert.deepEqual(recD.names().slice(0, 5), ['open', 'ping', 'pong-timeout', 'close', 'reconnect']);
    d.manualClose();
  },

  async server_restart(ctx) {
    // The original's recommended pattern: reconnect from the close listener unless the code says not to.
    const c = ctx.make(FAST);
    const rec = new Recorder(c, QUIET);
    c.on('close', (event) => {
      if ([4001, 4010, 4011, 4012].includes(event.code)) c.manualClose();
      else c.reconnect();
    });
    // And autoReconnect, with no listener at all.
    const d = ctx.make(Object.assign({}, FAST, { autoReconnect: true }));
    const recD = new Recorder(d, QUIET);
    await waitFor(() => c.connected && d.connected, 3000, 'both open');
    const pending = c.emitWithPromise('slow', 1, { callbackTimeout: 5000 });
    await ctx.control.request('stop_server');
    const failed = await pending;
    assert.equal(failed.errorCode, 'CONNECTION_CLOSED', JSON.stringify(failed));
    await waitFor(() => rec.count('reconnect') >= 2 && recD.count('reconnect') >= 2, 3000, 'reconnect attempts');
    assert.equal(c.reconnecting(), true);
    assert.equal(c.connected, false);
    const queuedWhileDown = c.emitWithPromise('say', 1); // waits in the offline queue
    assert.equal(c.queued, 1);
    await ctx.control.request('start_server');
    await waitFor(() => rec.count('open') === 2 && recD.count('open') === 2, 5000, 'both reopened');
    assert.equal(c.reconnecting(), false);
    assert.equal(d.reconnecting(), false);
    for (const r of [rec, recD]) {
      const attempts = r.events.filter((e) => e.name === 'reconnect').map((e) => e.arg);
      attempts.forEach((arg, index) => assert.equal(arg.repeat, index + 1));
      assert.ok(attempts.slice(0, 3).every((arg) => arg.timeout === 50), JSON.stringify(attempts));
    }
    assert.deepEqual(await queuedWhileDown, { success: true, data: { echo: 1 } });
    assert.deepEqual(await c.emitWithPromise('say', 'back'), { success: true, data: { echo: 'back' } });
    assert.deepEqual(await d.emitWithPromise('say', 'back'), { success: true, data: { echo: 'back' } });
  },

  async offline_queue(ctx) {
    const { c, rec } = await serverDown(ctx);
    assert.equal(c.emit('say', 1), false); // queued, not sent
    const viaCallback = callbackResult(c, 'say', 2);
    const viaPromise = c.emitWithPromise('say', 3);
    assert.equal(c.emit('say', 4), false);
    assert.equal(c.queued, 4);
    c.on('open', () => c.emit('say', 'after open'));
    await ctx.control.request('start_server');
    assert.deepEqual(await viaPromise, { success: true, data: { echo: 3 } });
    assert.deepEqual(await viaCallback, { err: null, payload: { echo: 2 } });
    await waitFor(() => rec.count('open') === 2, 3000, 'reopen');
    assert.equal(c.queued, 0);
    assert.equal(c.emit('say', 5), true);
    await c.emitWithPromise('say', 'sync');
    assert.deepEqual(await payloadsSinceLastConnection(ctx), [1, 2, 3, 4, 'after open', 5, 'sync']);
  },

  async offline_overflow(ctx) {
    const { c } = await serverDown(ctx, { offlineQueueSize: 2 });
    const kept = callbackResult(c, 'say', 'kept 1');
    c.emit('say', 'kept 2');
    let overflow = null;
    assert.equal(c.emit('say', 'over', (err, payload) => { overflow = { err, payload }; }), false);
    assert.equal(overflow.err.errorCode, 'OFFLINE_QUEUE_FULL', 'called before emit() returned');
    assert.equal(overflow.payload, null);
    const viaPromise = await c.emitWithPromise('say', 'over');
    assert.equal(viaPromise.success, false);
    assert.equal(viaPromise.errorCode, 'OFFLINE_QUEUE_FULL');
    const warnings = [];
    const warn = console.warn;
    console.warn = (...args) => warnings.push(args.join(' '));
    try {
      assert.equal(c.emit('say', 'over'), false);
      assert.equal(c.emit('say', 'over'), false);
    } finally {
      console.warn = warn;
    }
    assert.equal(warnings.filter((w) => w.includes('offline queue full')).length, 1, 'rate-limited: ' + warnings);
    assert.equal(c.queued, 2);
    await ctx.control.request('start_server');
    assert.deepEqual((await kept).payload, { echo: 'kept 1' });
    await c.emitWithPromise('say', 'sync');
    assert.deepEqual(await payloadsSinceLastConnection(ctx), ['kept 1', 'kept 2', 'sync']);
  },

  async offline_deadline(ctx) {
    const { c } = await serverDown(ctx, { callbackTimeout: 300 });
    const started = performance.now();
    const expired = callbackResult(c, 'say', 'expires', { callbackTimeout: 150 });
    c.emit('say', 'expires too'); // fire-and-forget: expires after the client's callbackTimeout
    const kept = c.emitWithPromise('say', 'kept', { callbackTimeout: 10000 });
    assert.equal(c.queued, 3);
    const result = await expired;
    const elapsed = performance.now() - started;
    assert.equal(result.err.errorCode, 'CALLBACK_TIMEOUT');
    assert.ok(elapsed >= 140 && elapsed < 1000, 'timed out after ' + elapsed + ' ms, the server still down');
    await waitFor(() => c.queued === 1, 3000, 'the fire-and-forget emit expiring');
    await ctx.control.request('start_server');
    assert.deepEqual(await kept, { success: true, data: { echo: 'kept' } });
    await c.emitWithPromise('say', 'sync');
    assert.deepEqual(await payloadsSinceLastConnection(ctx), ['kept', 'sync'], 'an expired call was sent');
  },

  async offline_gives_up(ctx) {
    const { c } = await serverDown(ctx);
    const viaCallback = callbackResult(c, 'say', 'queued');
    const viaPromise = c.emitWithPromise('say', 'queued');
    c.emit('say', 'queued');
    c.manualClose();
    const dropped = await viaPromise;
    assert.equal(dropped.errorCode, 'OFFLINE_QUEUE_DROPPED');
    assert.match(dropped.error, /^Not sent, the offline queue was dropped \(manual close\): \S+$/);
    assert.equal((await viaCallback).err.errorCode, 'OFFLINE_QUEUE_DROPPED');
    assert.equal(c.queued, 0);
    // After manualClose nothing is coming: WS_NOT_OPEN at once, as before the queue existed.
    assert.equal((await c.emitWithPromise('say', 'after')).errorCode, 'WS_NOT_OPEN');
    // offlineQueueSize: 0 is the old behaviour, also while reconnecting.
    const d = ctx.make(Object.assign({}, FAST, { url: ctx.deadUrl, offlineQueueSize: 0 }));
    await waitFor(() => d.reconnecting(), 3000, 'reconnecting');
    const notOpen = await callbackResult(d, 'say', 1);
    assert.deepEqual(notOpen.err, { error: 'WebSocket is not open', errorCode: 'WS_NOT_OPEN' });
    assert.equal(d.emit('say', 2), false);
    assert.equal(d.queued, 0);
    // The last attempt failing (repeatLimit) drops the queue.
    const e = ctx.make({ url: ctx.deadUrl, fastReconnectInterval: 40, repeatLimit: 1 });
    const limited = await e.emitWithPromise('say', 'never', { callbackTimeout: 5000 });
    assert.equal(limited.errorCode, 'OFFLINE_QUEUE_DROPPED');
    assert.match(limited.error, /repeat limit reached/);
    await ctx.control.request('start_server');
    c.connect();
    await waitFor(() => c.connected, 3000, 'reopen after connect()');
    await c.emitWithPromise('say', 'sync');
    assert.deepEqual(await payloadsSinceLastConnection(ctx), ['sync']);
  },

  async repeat_limit(ctx) {
    // Nothing listens on deadUrl: every attempt fails.
    const c = ctx.make({ url: ctx.deadUrl, fastReconnectInterval: 40, fastReconnectThreshold: 2, reconnectMaxInterval: 1000, repeatLimit: 4,
      reconnectJitter: 'original' });
    const rec = new Recorder(c, QUIET);
    await waitFor(() => rec.count('repeat-limit') === 1, 5000, 'repeat-limit');
    const attempts = rec.events.filter((e) => e.name === 'reconnect').map((e) => e.arg);
    assert.deepEqual(attempts.map((a) => a.repeat), [1, 2, 3, 4]);
    assert.deepEqual(attempts.slice(0, 2).map((a) => a.timeout), [40, 40]);
    assert.ok(attempts[2].timeout >= 80 && attempts[2].timeout < 120, JSON.stringify(attempts));
    assert.ok(attempts[3].timeout >= 160 && attempts[3].timeout < 200, JSON.stringify(attempts));
    assert.equal(rec.last('repeat-limit').arg, 4);
    assert.equal(rec.count('open'), 0);
    await quietPeriod(250);
    assert.equal(rec.count('reconnect'), 4, 'no attempt after repeat-limit');
    // reconnect(true) starts a new series.
    c.reconnect(true);
    assert.deepEqual(rec.last('reconnect').arg, { repeat: 1, timeout: 40 });
    c.manualClose();
  },

  async manual_close(ctx) {
    const c = ctx.make(Object.assign({}, FAST, { pingInterval: 50, autoReconnect: true }));
    const rec = new Recorder(c, QUIET);
    await waitFor(() => c.connected, 3000, 'open');
    const pendingCallback = callbackResult(c, 'slow', 1, { callbackTimeout: 5000 });
    const pendingPromise = c.emitWithPromise('slow', 2, { callbackTimeout: 5000 });
    const started = performance.now();
    c.manualClose();
    // The local close is fired at once with 4001.
    const close = rec.last('close');
    assert.ok(close, 'no local close event');
    assert.equal(close.arg.code, 4001);
    assert.equal(close.arg.reason, 'client manual close');
    assert.equal(c.connected, false);
    const viaCallback = await pendingCallback;
    const viaPromise = await pendingPromise;
    assert.ok(performance.now() - started < 200, 'pending acks were not failed at once');
    assert.equal(viaCallback.err.errorCode, 'CONNECTION_CLOSED');
    assert.match(viaCallback.err.error, /^Connection closed before the reply: \S+$/);
    assert.equal(viaPromise.success, false);
    assert.equal(viaPromise.errorCode, 'CONNECTION_CLOSED');
    const serverCloses = await waitFor(async () => {
      const closes = await serverLog(ctx, 'close');
      return closes.length ? closes : null;
    }, 3000, 'server sees the close');
    assert.equal(serverCloses[0].code, 4001);
    assert.equal(serverCloses[0].reason, 'client manual close');
    const after = rec.events.length;
    await quietPeriod(250);
    assert.deepEqual(rec.names().slice(after), [], 'no ping, reconnect or second close after manualClose');
    c.reconnect();
    assert.equal(rec.count('reconnect'), 0, 'reconnect() stays off after manualClose');
    c.manualClose();
    assert.equal(rec.count('close'), 1, 'a second manualClose fires nothing');
    // connect() works again.
    c.connect();
    await waitFor(() => rec.count('open') === 2, 3000, 'reopen after connect()');
    assert.deepEqual(await c.emitWithPromise('say', 'again'), { success: true, data: { echo: 'again' } });
    await waitFor(() => rec.count('pong') >= 1, 3000, 'heartbeat runs again');
  },

  async close_while_connecting(ctx) {
    // With the "ws" package the original crashed Node here (unhandled "error").
    const c = ctx.make(FAST);
    const rec = new Recorder(c, QUIET);
    assert.equal(c.readyState, 0);
    c.manualClose();
    assert.equal(rec.last('close').arg.code, 4001);
    const d = ctx.make(FAST);
    const recD = new Recorder(d, QUIET);
    d.reconnect();
    assert.equal(d.readyState, 3);
    await waitFor(() => recD.count('open') === 1, 3000, 'open after reconnect during CONNECTING');
    assert.deepEqual(recD.names(), ['reconnect', 'open']);
    // Connect and close in a loop: the process survives and nothing fires late.
    for (let i = 0; i < 20; i++) {
      const e = ctx.make(FAST);
      e.manualClose();
    }
    await quietPeriod(200);
    assert.deepEqual(rec.names(), ['close']);
    c.connect();
    await waitFor(() => c.connected, 3000, 'connect() after closing while connecting');
    assert.deepEqual(await c.emitWithPromise('say', 'ok'), { success: true, data: { echo: 'ok' } });
  },

  async spoofing(ctx) {
    const c = ctx.make(Object.assign({}, FAST, { autoReconnect: true }));
    const rec = new Recorder(c, QUIET);
    const seen = [];
    for (const name of ['open', 'close', 'reconnect', 'pong']) {
      c.onServerEvent(name, (payload) => seen.push([name, payload]));
    }
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'news']) {
      c.on(name, (payload) => seen.push([name, payload]));
    }
    await waitFor(() => c.connected, 3000, 'open');
    const names = ['open', 'close', 'reconnect', 'pong', 'repeat-limit', 'constructor', '__proto__', 'toString', 'hasOwnProperty', 'news'];
    for (const name of names) await ctx.control.request('broadcast', { event: name, data: { from: name } });
    await waitFor(() => seen.some((item) => item[0] === 'news'), 3000, 'news');
    assert.deepEqual(seen, names.filter((n) => n !== 'repeat-limit').map((n) => [n, { from: n }]));
    assert.deepEqual(rec.names(), ['open'], 'server events reached lifecycle listeners');
    assert.equal(c.connected, true);
    // Acks are never dispatched as events, whatever they contain.
    assert.deepEqual(await c.emitWithPromise('say', { event: 'open' }), { success: true, data: { echo: { event: 'open' } } });
    assert.deepEqual(rec.names(), ['open']);
    c.offServerEvent('open');
    await ctx.control.request('broadcast', { event: 'open', data: 2 });
    await ctx.control.request('broadcast', { event: 'news', data: 2 });
    await waitFor(() => seen.length === names.length, 3000, 'second news');
    assert.deepEqual(seen[seen.length - 1], ['news', 2]);
  },

  async listeners(ctx) {
    const c = ctx.make(Object.assign({}, FAST, { autoConnect: false }));
    const calls = [];
    const fn = (payload) => calls.push(payload);
    c.on('news', fn);
    c.once('news', fn);
    c.on('news', (payload) => calls.push('tagged:' + payload), 'grp');
    c.on('news', () => { throw new Error('listener errors are contained'); });
    c.connect();
    await waitFor(() => c.connected, 3000, 'open');
    await ctx.control.request('broadcast', { event: 'news', data: 1 });
    await waitFor(() => calls.length === 3, 3000, 'first news');
    assert.deepEqual(calls, [1, 1, 'tagged:1']);
    c.off('news', 'grp');
    await ctx.control.request('broadcast', { event: 'news', data: 2 });
    await waitFor(() => calls.length === 4, 3000, 'second news');
    assert.deepEqual(calls.slice(3), [2], 'once removed only itself, off(tag) removed the tagged one');
    c.off('news', fn);
    c.off('news');
    c.once('news', (payload) => calls.push('once:' + payload));
    await ctx.control.request('broadcast', { event: 'news', data: 3 });
    await ctx.control.request('broadcast', { event: 'news', data: 4 });
    await waitFor(() => calls.length === 5, 3000, 'third news');
    await c.emitWithPromise('say', 'sync');
    assert.deepEqual(calls.slice(4), ['once:3']);
    // Lifecycle "once" and "message" see every frame.
    const frames = [];
    c.on('message', (data) => frames.push(data));
    await ctx.control.request('broadcast', { event: 'news', data: 5 });
    await waitFor(() => frames.length === 1, 3000, 'message event');
    assert.equal(frames[0], '{"event":"news","payload":5}');
  },

  async custom_params(ctx) {
    const c = ctx.make(Object.assign({}, FAST, { url: ctx.url + '/chat', customParams: { id: 'u1', token: 't k', arr: [1, 2], nil: null, skip: undefined } }));
    await waitFor(() => c.connected, 3000, 'open');
    let tokenCalls = 0;
    const d = ctx.make(Object.assign({}, FAST, { url: ctx.url + '/?x=1', customParams: () => ({ id: 'u2', n: ++tokenCalls }), autoReconnect: true }));
    await waitFor(() => d.connected, 3000, 'open');
    d.emit('kick', { code: 4000, reason: 'again' });
    await waitFor(() => tokenCalls === 2 && d.connected, 3000, 'reconnect with fresh params');
    const connections = await serverLog(ctx, 'connection');
    assert.deepEqual(connections.map((entry) => entry.url), ['/chat?id=u1&token=t+k&arr=1%2C2&nil=null', '/?x=1&id=u2&n=1', '/?x=1&id=u2&n=2']);
    assert.deepEqual(connections[0].params, { id: 'u1', token: 't k', arr: '1,2', nil: 'null' });
    assert.equal(connections[0].path, 'chat');
  },

  async close_codes(ctx) {
    const c = ctx.make(Object.assign({}, FAST, { autoReconnect: true }));
    const rec = new Recorder(c, QUIET);
    await waitFor(() => c.connected, 3000, 'open');
    c.emit('kick', { code: 4000, reason: 'retry please' });
    await waitFor(() => rec.count('open') === 2, 3000, 'auto reconnect after 4000');
    assert.equal(rec.events.find((e) => e.name === 'close').arg.code, 4000);
    assert.equal(rec.events.find((e) => e.name === 'close').arg.reason, 'retry please');
    c.emit('kick', { code: 4011, reason: 'Auth failure' });
    await waitFor(() => rec.count('close') === 2, 3000, 'close 4011');
    assert.equal(rec.last('close').arg.code, 4011);
    await quietPeriod(200);
    assert.deepEqual(rec.names().slice(-1), ['close'], 'no reconnect after 4011');
    assert.equal(c.reconnecting(), false);
  },

  async restart_hint(ctx) {
    // A 1012 close with "retry=<s>s" in its reason: the next attempt waits the hint, not the schedule.
    const c = ctx.make(Object.assign({}, FAST, { autoReconnect: true }));
    const rec = new Recorder(c, QUIET);
    await waitFor(() => c.connected, 3000, 'open');
    c.emit('kick', { code: 1012, reason: 'service restart retry=0.400s' });
    await waitFor(() => rec.count('open') === 2, 5000, 'reopen after the hint');
    const close = rec.events.find((e) => e.name === 'close');
    assert.equal(close.arg.code, 1012);
    assert.deepEqual(rec.events.find((e) => e.name === 'reconnect').arg, { repeat: 1, timeout: 400 });
    assert.ok(rec.last('open').t - close.t >= 390, JSON.stringify(rec.events.map((e) => [e.name, e.t])));
    // Capped at reconnectMaxInterval; a 1012 without a hint uses the schedule.
    c.options.reconnectMaxInterval = 120;
    c.emit('kick', { code: 1012, reason: 'service restart retry=300.000s' });
    await waitFor(() => rec.count('open') === 3, 5000, 'reopen after the capped hint');
    assert.equal(rec.last('reconnect').arg.timeout, 120);
    c.emit('kick', { code: 1012, reason: 'service restart' });
    await waitFor(() => rec.count('open') === 4, 5000, 'reopen on the schedule');
    assert.equal(rec.last('reconnect').arg.timeout, 50);
    c.manualClose();
  },

  async full_jitter(ctx) {
    // The default: each delay uniform in [0, the schedule's delay without its random term].
    const c = ctx.make({ url: ctx.deadUrl, fastReconnectInterval: 40, fastReconnectThreshold: 2, reconnectMaxInterval: 1000,
      repeatLimit: 5 });
    assert.equal(c.options.reconnectJitter, 'full');
    const rec = new Recorder(c, QUIET);
    await waitFor(() => rec.count('repeat-limit') === 1, 5000, 'repeat-limit');
    const ceilings = [40, 40, 80, 160, 320];
    rec.events.filter((e) => e.name === 'reconnect').forEach((e, i) => {
      assert.ok(e.arg.timeout >= 0 && e.arg.timeout <= ceilings[i], JSON.stringify(e.arg));
    });
    // Spread over the whole window, not one instant: 2000 draws of attempt 6 (ceiling 640).
    const draws = Array.from({ length: 2000 }, () => c._reconnectDelay(6));
    assert.ok(draws.every((d) => d >= 0 && d <= 640 && Number.isInteger(d)));
    const tenths = new Set(draws.map((d) => Math.floor(d / 64)));
    assert.ok(tenths.size === 10, JSON.stringify([...tenths]));
    const mean = draws.reduce((a, b) => a + b, 0) / draws.length;
    assert.ok(Math.abs(mean - 320) < 30, String(mean));
    assert.throws(() => ctx.make({ url: ctx.deadUrl, reconnectJitter: 'none' }), /reconnectJitter/);
    c.manualClose();
  },

  async recovery(ctx) {
    // A server with connection state recovery: node A is stopped, a sender node (same Redis) sends
    // to the client's room and to its user meanwhile, node B starts on the same port; the client
    // resumes: "open" says recovered, every missed message arrives once, in order.
    const sockets = [];
    class Recording extends ctx.Impl {
      constructor(url, protocols) {
        super(url, protocols);
        this.record = { url, frames: [] };
        sockets.push(this.record);
      }

      send(data) {
        this.record.frames.push(data);
        super.send(data);
      }
    }
    const opts = { autoReconnect: true, fastReconnectThreshold: 100, WebSocket: Recording, customParams: { id: 'alice' } };
    const c = ctx.make(Object.assign({}, FAST, opts));
    const rec = new Recorder(c, QUIET);
    const got = [];
    const internal = [];
    const raw = [];
    c.on('chat', (payload) => got.push(['chat', payload]));
    c.on('dm', (payload) => got.push(['dm', payload]));
    c.onServerEvent('_crossws.session', (payload) => internal.push(payload));
    c.on('message', (data) => raw.push(data));
    const send = (start, count) => ctx.control.request('send_from_sender',
      { user: 'alice', ns: 'chat', room: 'lobby', start, count });
    const ofType = (type) => got.filter((entry) => entry[0] === type).map((entry) => entry[1]);

    await waitFor(() => rec.count('open') === 1, 3000, 'open');
    assert.equal(rec.last('open').arg.recovered, false);
    assert.equal(c.recovered, false);
    assert.deepEqual(await c.emitWithPromise('join', { ns: 'chat', room: 'lobby' }), { success: true, data: true });
    await waitFor(() => raw.some((text) => text.includes('"_crossws.session"')), 3000, 'session frame');
    const session = JSON.parse(raw.find((text) => text.includes('"_crossws.session"'))).payload;
    assert.equal(typeof session.sid, 'string');
    await send(0, 3);
    await waitFor(() => got.length === 6, 3000, 'live messages');
    assert.ok(raw.some((text) => text.includes('"_pos"')), 'recoverable frames carry _pos: ' + raw.join(' | '));

    await ctx.control.request('stop_server');
    await waitFor(() => rec.count('close') === 1 && rec.count('reconnect') >= 1, 3000, 'close and reconnect');
    await send(3, 4);
    assert.equal(c.emit('say', 'queued while away'), false); // waits in the offline queue
    await ctx.control.request('start_server');
    await waitFor(() => rec.count('open') === 2, 5000, 'reopen');
    assert.equal(rec.last('open').arg.recovered, true);
    assert.equal(c.recovered, true);
    await waitFor(() => got.length === 14, 3000, 'missed messages: ' + JSON.stringify(got));
    await send(7, 1);
    await waitFor(() => got.length === 16, 3000, 'live after recovery');
    await quietPeriod(200);
    assert.deepEqual(ofType('chat'), [0, 1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual(ofType('dm'), [0, 1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual(internal, [], '_crossws.* events never reach listeners');

    // The first connection: the plain URL. The resuming one: the recover parameter, and the
    // recovery request before anything else (the offline queue included).
    const first = sockets[0];
    const last = sockets[sockets.length - 1];
    assert.doesNotMatch(first.url, /_crossws_recover/);
    assert.match(last.url, /\?id=alice&_crossws_recover=1$/);
    const request = JSON.parse(last.frames[0]);
    assert.equal(request.event, '_crossws.recover');
    assert.equal(request.payload.sid, session.sid);
    const streams = Object.keys(request.payload.pos);
    assert.equal(streams.length, 2, 'a room stream and a user stream: ' + last.frames[0]);
    streams.forEach((stream) => {
      const position = request.payload.pos[stream];
      assert.ok(Number.isInteger(position[0]) && typeof position[1] === 'string', last.frames[0]);
    });
    assert.deepEqual(JSON.parse(last.frames[1]), { event: 'say', payload: 'queued while away' });
    c.manualClose();
  },

  async server_request(ctx) {
    // The server asks (to_socket_id_and_wait); the listener answers through its second argument.
    const c = ctx.make(Object.assign({}, FAST, { customParams: { id: 'js1' } }));
    const replies = [];
    const plain = [];
    c.on('confirm', (payload) => plain.push(payload)); // one argument: still called, cannot answer
    c.on('confirm', (payload, reply) => {
      replies.push(reply({ sum: payload.a + payload.b }));
      replies.push(reply('again')); // only the first reply answers
    });
    await waitFor(() => c.connected, 3000, 'open');
    const result = await ctx.control.request('ask', { id: 'js1', event: 'confirm', data: { a: 1, b: 2 }, timeout: 3 });
    assert.deepEqual(result, { success: true, data: { sum: 3 } });
    assert.deepEqual(replies, [true, false]);
    assert.deepEqual(plain, [{ a: 1, b: 2 }]);
    const frames = (await serverLog(ctx, 'message')).map((entry) => entry.data);
    assert.ok(frames.some((text) => /^\{"ackId":"[0-9a-z]+","payload":\{"sum":3\}\}$/.test(text)), frames.join(' | '));
    // No listener takes reply: nothing is answered, the server times out.
    c.off('confirm');
    c.on('confirm', (payload) => plain.push(payload));
    const timedOut = await ctx.control.request('ask', { id: 'js1', event: 'confirm', data: { a: 0, b: 0 }, timeout: 0.3 });
    assert.equal(timedOut.error_code, 'ACK_TIMEOUT');
    c.manualClose();
  },

  async connect_timeout(ctx) {
    // blackholeUrl accepts TCP but never answers the HTTP upgrade.
    const c = ctx.make({ url: ctx.blackholeUrl, connectTimeout: 150, repeatLimit: 1, fastReconnectInterval: 30 });
    const rec = new Recorder(c, QUIET);
    await waitFor(() => rec.count('close') === 1, 3000, 'close after the last connect timeout');
    assert.deepEqual(rec.names(), ['error', 'reconnect', 'error', 'repeat-limit', 'close']);
    assert.equal(rec.events[0].arg.code, 'CONNECT_TIMEOUT');
    assert.ok(rec.events[0].t >= 140 && rec.events[0].t < 1000, 'first timeout at ' + rec.events[0].t);
    assert.equal(rec.last('close').arg.code, 1006);
    assert.equal(c.readyState, 3);
  }
};

module.exports = { scenarios };
