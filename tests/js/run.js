// Run one scenario: node [--experimental-websocket] run.js SCENARIO BUILD IMPL URL DEAD_URL BLACKHOLE_URL
// Prints "RESULT {...}" last and exits 0 on success, 1 on failure.
'use strict';
const { loadConnector, loadImpl, Control } = require('./harness');
const { scenarios } = require('./scenarios');

async function main() {
  const [name, build, impl, url, deadUrl, blackholeUrl] = process.argv.slice(2);
  const scenario = scenarios[name];
  if (!scenario) throw new Error('unknown scenario ' + name + '; known: ' + Object.keys(scenarios).join(', '));
  const W = await loadConnector(build);
  const Impl = loadImpl(impl);
  const control = new Control();
  const made = [];
  const ctx = {
    W, Impl, url, deadUrl, blackholeUrl, control,
    make(options) {
      const connector = new W(Object.assign({ url, WebSocket: Impl }, options));
      made.push(connector);
      return connector;
    }
  };
  try {
    await scenario(ctx);
  } finally {
    made.forEach((connector) => connector.manualClose());
    control.close();
  }
}

const watchdog = setTimeout(() => {
  process.stdout.write('RESULT ' + JSON.stringify({ ok: false, error: 'scenario watchdog: 20 s' }) + '\n');
  process.exit(1);
}, 20000);

main().then(() => {
  clearTimeout(watchdog);
  process.stdout.write('RESULT ' + JSON.stringify({ ok: true }) + '\n');
  // Give the sockets closed by manualClose() a moment to send their close frames.
  setTimeout(() => process.exit(0), 50);
}, (err) => {
  clearTimeout(watchdog);
  process.stdout.write('RESULT ' + JSON.stringify({ ok: false, error: String(err && err.stack || err) }) + '\n');
  setTimeout(() => process.exit(1), 50);
});
