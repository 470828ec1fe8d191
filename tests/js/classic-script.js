// Loads ws-connector.js (and the .min.js) the way a <script> tag does: in a fresh global
// scope with window/location/WebSocket and no module/require. Checks the global, URL
// resolution against the page, and that the script defines nothing else.
'use strict';
const assert = require('node:assert/strict');
const fs = require('fs');
const path = require('path');
const vm = require('vm');

const STATIC_DIR = path.join(__dirname, '..', '..', 'crossws_sync', 'static');

function loadAsScript(file, protocol) {
  const opened = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      opened.push(url);
    }
    close() { this.readyState = 3; }
  }
  const sandbox = { location: { protocol, host: 'example.test:8443' }, WebSocket: FakeWebSocket, console, setTimeout, clearTimeout, URLSearchParams };
  sandbox.window = sandbox;
  sandbox.self = sandbox;
  const context = vm.createContext(sandbox);
  const before = new Set(Object.getOwnPropertyNames(context));
  vm.runInContext(fs.readFileSync(path.join(STATIC_DIR, file), 'utf8'), context, { filename: file });
  const added = Object.getOwnPropertyNames(context).filter((name) => !before.has(name));
  return { context, opened, added };
}

for (const file of ['ws-connector.js', 'ws-connector.min.js']) {
  const page = loadAsScript(file, 'https:');
  assert.deepEqual(page.added, ['WebSocketConnector'], file + ' defined ' + page.added);
  const W = page.context.WebSocketConnector;
  assert.equal(typeof W, 'function');
  assert.equal(page.context.window.WebSocketConnector, W);
  const c = new W({ url: '/ws', customParams: { id: 'u 1' } });
  assert.equal(c.readyState, 0);
  const others = [new W({ url: '//other.test/ws' }), new W({ url: 'http://plain.test/x?a=1', customParams: { b: 2 } })];
  assert.deepEqual(page.opened, ['wss://example.test:8443/ws?id=u+1', 'wss://other.test/ws', 'ws://plain.test/x?a=1&b=2']);
  const plain = loadAsScript(file, 'http:');
  others.push(new plain.context.WebSocketConnector({ url: '/ws' }));
  assert.deepEqual(plain.opened, ['ws://example.test:8443/ws']);
  c.manualClose();
  others.forEach((connector) => connector.manualClose());
}
console.log('classic script: ok');
