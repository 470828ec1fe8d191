#!/usr/bin/env bash
# One-time setup for the benchmark suite (run from anywhere):
#   * the Python side: crossws_sync itself plus the lead's `bench` extra
#     (Flask-SocketIO, python-socketio, psutil, msgpack) from PyPI;
#   * the Node.js side: `ws` and `socket.io-client` for the load generator, pinned by
#     bench/node/package-lock.json (node_modules is never committed).
# Needs: python3 + pip, Node.js >= 20 + npm, redis-server on PATH.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-python3}"

"$python" -m pip install -e "${root}[bench]"
cd "$here/node"
if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund
else
    npm install --no-audit --no-fund
fi
command -v redis-server >/dev/null || echo "warning: redis-server is not on PATH (apt-get install redis-server)" >&2
echo "bench setup done"
