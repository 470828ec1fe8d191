// Helpers for the browser-client scenarios: load a build of the connector, pick a
// WebSocket implementation, record events, wait with deadlines, and talk to the
// pytest driver over stdin/stdout (one JSON object per line).
'use strict';
const path = require('path');
const readline = require('readline');
const { pathToFileURL } = require('url');

const STATIC_DIR = path.join(__dirname, '..', '..', 'crossws_sync', 'static');

/** Load one build ('js' | 'min' | 'mjs') of WebSocketConnector. */
async function loadConnector(build) {
  if (build === 'js') return require(path.join(STATIC_DIR, 'ws-connector.js'));
  if (build === 'min') return require(path.join(STATIC_DIR, 'ws-connector.min.js'));
  if (build === 'mjs') {
    const mod = await import(pathToFileURL(path.join(STATIC_DIR, 'ws-connector.mjs')).href);
    if (mod.default !== mod.WebSocketConnector) throw new Error('mjs default export differs from the named export');
    return mod.WebSocketConnector;
  }
  throw new Error('unknown build ' + build);
}

/** The WebSocket implementation: 'native' (Node's WHATWG WebSocket) or 'ws' (the npm package). */
function loadImpl(impl) {
  if (impl === 'native') {
    if (typeof globalThis.WebSocket !== 'function') {
      throw new Error('no global WebSocket: run node with --experimental-websocket (Node 20) or Node >= 22');
    }
    return globalThis.WebSocket;
  }
  if (impl === 'ws') return require('ws');
  throw new Error('unknown impl ' + impl);
}

/** Control channel to the pytest driver: request(cmd, args) -> Promise<reply>. */
class Control {
  constructor() {
    this.nextId = 1;
    this.waiting = new Map();
    this.rl = readline.createInterface({ input: process.stdin });
    this.rl.on('line', (line) => {
      const reply = JSON.parse(line);
      const resolve = this.waiting.get(reply.id);
      if (resolve) {
        this.waiting.delete(reply.id);
        resolve(reply);
      }
    });
  }

  request(cmd, args = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error('control command ' + cmd + ' got no reply'));
      }, 10000);
      this.waiting.set(id, (reply) => {
        clearTimeout(timer);
        if (reply.error) reject(new Error('control ' + cmd + ': ' + reply.error));
        else resolve(reply.result);
      });
      process.stdout.write('CONTROL ' + JSON.stringify({ id, cmd, args }) + '\n');
    });
  }

  close() {
    this.rl.close();
  }
}

/** Records every lifecycle event of a connector as {name, arg, t}. */
class Recorder {
  constructor(connector, names) {
    this.events = [];
    this.start = performance.now();
    for (const name of names) {
      connector.on(name, (arg) => this.events.push({ name, arg, t: performance.now() - this.start }));
    }
  }

  names() {
    return this.events.map((e) => e.name);
  }

  count(name) {
    return this.events.filter((e) => e.name === name).length;
  }

  last(name) {
    const found = this.events.filter((e) => e.name === name);
    return found.length ? found[found.length - 1] : undefined;
  }

  clear() {
    this.events.length = 0;
  }
}

/** Poll condition() (may be async) every 5 ms until truthy; reject after timeoutMs. */
async function waitFor(condition, timeoutMs = 3000, what = String(condition)) {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (performance.now() > deadline) throw new Error('timed out after ' + timeoutMs + ' ms waiting for ' + what);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Resolve after ms: only for checking that something does NOT happen within a bounded window. */
function quietPeriod(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

module.exports = { loadConnector, loadImpl, Control, Recorder, waitFor, quietPeriod, STATIC_DIR };
