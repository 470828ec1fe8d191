"""Helpers of the fault, abuse and soak tests: node processes, a TCP balancer, figures for the report."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence

import gevent
import psutil
from gevent.server import StreamServer

from rawclient import RawClient
from support import repo_root, wait_for

NODE_SCRIPT = os.path.join(repo_root(), "tests", "fault_node.py")


def record(name: str, **figures: Any) -> Dict[str, Any]:
    """Print measured figures; append them as a JSON line to ``$CROSSWS_FAULT_REPORT`` when set.

    ``docs/reliability.md`` is filled from these lines.
    """
    line = dict(test=name, **figures)
    text = json.dumps(line, sort_keys=True, default=str)
    print("FIGURES " + text)
    path = os.environ.get("CROSSWS_FAULT_REPORT")
    if path:
        with open(path, "a") as handle:
            handle.write(text + "\n")
    return line


class NodeProcess:
    """``tests/fault_node.py`` in a real process (stdout and stderr go to a log file)."""

    def __init__(self, name: str, *, redis_urls: Sequence[str] = (), heartbeat: float = 0.5,
                 extra: Sequence[str] = ()) -> None:
        self.name = name
        handle, self.log_path = tempfile.mkstemp(prefix="crossws-node-%s-" % name, suffix=".log")
        self._log = os.fdopen(handle, "w")
        args = [sys.executable, NODE_SCRIPT, "--name", name, "--port", "0", "--heartbeat", str(heartbeat)]
        for url in redis_urls:
            args += ["--redis", url]
        args += list(extra)
        self.proc = subprocess.Popen(args, cwd=repo_root(), stdout=self._log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.port = 0

    def wait_ready(self, timeout: float = 20.0) -> "NodeProcess":
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError("node %s exited early:\n%s" % (self.name, self.log_tail()))
            for line in self.log().splitlines():
                if line.startswith("READY "):
                    self.port = int(line.split()[1])
                    return True
            return False

        wait_for(ready, timeout=timeout, interval=0.05, message="node %s to listen" % self.name)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        with open(self.log_path, errors="replace") as handle:
            return handle.read()

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def rss(self) -> int:
        return psutil.Process(self.proc.pid).memory_info().rss

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait_exit(self, timeout: float) -> Optional[int]:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._log.close()
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


def start_nodes(specs: Sequence[Dict[str, Any]]) -> List[NodeProcess]:
    """Start several node processes at once and wait until all listen."""
    nodes = [NodeProcess(**spec) for spec in specs]
    for node in nodes:
        node.wait_ready()
    return nodes


def ask(client: RawClient, event: str, payload: Any = None, timeout: float = 5.0, callback_id: str = "q") -> Any:
    """Send a request on a raw client and return the ack's payload (pushed events are skipped)."""
    client.send_json({"event": event, "payload": {} if payload is None else payload, "callbackId": callback_id})
    deadline = time.monotonic() + timeout
    while True:
        message = client.recv_json(timeout=max(0.05, deadline - time.monotonic()))
        if message.get("callbackId") == callback_id:
            return message.get("payload")


def _pump(source: Any, target: Any) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                return
            target.sendall(data)
    except OSError:
        return


def splice(client: Any, upstream: Any) -> None:
    """Copy bytes both ways until either side closes, then close both (a TCP proxy's core)."""
    pumps = [gevent.spawn(_pump, client, upstream), gevent.spawn(_pump, upstream, client)]
    gevent.joinall(pumps, count=1)
    for sock in (client, upstream):
        try:
            sock.close()
        except OSError:
            pass
    gevent.killall(pumps, block=False)


class TcpBalancer:
    """A round-robin TCP load balancer in front of node ports (what clients connect to).

    A backend that refuses the connection is skipped; when a backend closes (or dies), the
    client side is closed too, as a real L4 balancer does.
    """

    def __init__(self, backends: Sequence[int]) -> None:
        self.backends = list(backends)
        self._next = 0
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.port = self.server.server_port
        self.routed: Dict[int, int] = {}

    def _handle(self, client: socket.socket, address: Any) -> None:
        upstream = None
        for _ in range(len(self.backends)):
            port = self.backends[self._next % len(self.backends)]
            self._next += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=1.0)
                upstream.settimeout(None)
                self.routed[port] = self.routed.get(port, 0) + 1
                break
            except OSError:
                continue
        if upstream is None:
            client.close()
            return
        splice(client, upstream)

    def close(self) -> None:
        self.server.stop(timeout=1)


class Canary:
    """A client that keeps asking ``echo`` on a node and records each round trip (seconds)."""

    def __init__(self, port: int, interval: float = 0.02) -> None:
        self.client = RawClient(port, "/?id=canary")
        self.interval = interval
        self.rtts: List[float] = []
        self.failures: List[str] = []
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        seq = 0
        while True:
            seq += 1
            started = time.monotonic()
            try:
                reply = ask(self.client, "echo", seq, timeout=5.0, callback_id="c%d" % seq)
            except Exception as exc:  # recorded: the test asserts there are none
                self.failures.append("%s: %s" % (type(exc).__name__, exc))
                return
            if reply != seq:
                self.failures.append("wrong echo %r for %r" % (reply, seq))
            self.rtts.append(time.monotonic() - started)
            gevent.sleep(self.interval)

    def stop(self) -> Dict[str, float]:
        self._greenlet.kill()
        self.client.abort()
        return latency_summary(self.rtts)


def latency_summary(rtts: Sequence[float]) -> Dict[str, float]:
    """Count, median, p99 and max of round trips, in milliseconds."""
    if not rtts:
        return {"count": 0}
    ordered = sorted(rtts)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"count": len(ordered), "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": round(ordered[-1] * 1000, 2)}


def mib(value: int) -> float:
    return round(value / (1 << 20), 1)
