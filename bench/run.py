#!/usr/bin/env python3
"""Run the crossws_sync benchmark suite and print a side-by-side table.

    python bench/run.py [--quick] [--systems crossws,flask_socketio,calibration]
                        [--workloads W1,W5,W7] [--runs 3] [--json bench/results/latest.json]
    python bench/run.py --markdown-from bench/results/latest.json   # Markdown table for the README

One-time setup: ``bench/setup.sh`` (Python extra ``bench`` and ``npm ci`` in ``bench/node``).
This script installs nothing. For every (system, workload, run) it starts a fresh
redis-server (multi-node workloads) and fresh server processes on free 127.0.0.1 ports, runs
the Node.js load generator (``bench/node/loadgen.js``), samples the CPU of the generator,
every server process and redis-server with psutil over the measured window, then stops
everything it started. It prints medians of the runs and writes all runs as JSON.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import queue
import resource
import shutil
import signal
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, IO, List, Optional, Sequence, Set, Tuple

import psutil

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
NODE_DIR = os.path.join(BENCH_DIR, "node")
SERVERS_DIR = os.path.join(BENCH_DIR, "servers")
RESULTS_DIR = os.path.join(BENCH_DIR, "results")

# --------------------------------------------------------------------------- configuration

#: Workloads: number of nodes, load-generator parameters (full and --quick), metrics shown.
WORKLOADS: Dict[str, Dict[str, Any]] = {
    "W1": {"title": "1 node, 1,000 clients, 2,000 broadcasts", "nodes": 1,
           "params": {"clients": 1000, "count": 2000}, "quick": {"clients": 20, "count": 50, "idle": 2},
           "metrics": ["deliveries_per_s", "delivered_pct"]},
    "W2": {"title": "3 nodes, 900 clients, 500 cluster broadcasts", "nodes": 3,
           "params": {"clients": 900, "count": 500}, "quick": {"clients": 30, "count": 20, "idle": 2},
           "metrics": ["deliveries_per_s", "delivered_pct"]},
    "W3": {"title": "3 nodes, 30 rooms x 30 clients, 100 broadcasts per room", "nodes": 3,
           "params": {"clients": 900, "rooms": 30, "count": 100},
           "quick": {"clients": 36, "rooms": 6, "count": 5, "idle": 2},
           "metrics": ["deliveries_per_s", "delivered_pct", "wrong_room"]},
    "W4": {"title": "3 nodes, 200 pairs, to_socket_id ping-pong, 10 s", "nodes": 3,
           "params": {"pairs": 200, "duration": 10}, "quick": {"pairs": 6, "duration": 1},
           "metrics": ["round_trips_per_s", "p50_ms", "p99_ms", "lost"]},
    "W5": {"title": "1 node, 100 clients, emit-with-ack loop, 10 s", "nodes": 1,
           "params": {"clients": 100, "duration": 10}, "quick": {"clients": 5, "duration": 1},
           "metrics": ["calls_per_s", "p50_ms", "p99_ms", "bad_acks"]},
    "W6": {"title": "3 nodes, 32 loops of server->server RPC (3 responses), 10 s", "nodes": 3,
           "params": {"loops": 32, "duration": 10}, "quick": {"loops": 4, "duration": 1},
           "metrics": ["calls_per_s", "p50_ms", "p99_ms", "failures"]},
    "W7": {"title": "1 node, idle connections 0 / 1,000 / 5,000", "nodes": 1,
           "params": {"stages": [0, 1000, 5000], "settle": 2}, "quick": {"stages": [0, 20, 50], "settle": 0.5},
           "metrics": ["rss_mb_0", "kb_per_conn_first", "kb_per_conn_last"]},
    # W8: node 0 (the victim) is stopped with SIGTERM at t0; its clients reconnect to nodes 1
    # and 2 on their own client's policy (crossws: full jitter + the 1012 / Retry-After hints;
    # the original: its fixed schedule). retry_window, accept_rate and accept_burst are server
    # options of the crossws systems (restart_retry_window; max_accept_rate / accept_burst of
    # crossws_limit); interval is the survivors' mean think time in ms.
    "W8": {"title": "3 nodes, 5,000 clients of node 0 reconnect to nodes 1-2 after its SIGTERM", "nodes": 3,
           "params": {"victims": 5000, "survivors": 400, "interval": 100, "before": 5, "budget": 180,
                      "connectTimeout": 150, "deadline": 420, "resetOnClose": True, "retry_window": 10, "accept_rate": 100, "accept_burst": 100},
           "quick": {"victims": 300, "survivors": 20, "before": 1, "budget": 60, "retry_window": 2,
                     "accept_rate": 60, "accept_burst": 20},
           "metrics": ["recovery_s", "back_p50_s", "attempts", "refused", "refused_503", "p50_before_ms",
                       "p99_before_ms", "p50_storm_ms", "p99_storm_ms", "p99_worst_second_ms",
                       "gen_loop_delay_max_ms", "survivors_loop_delay_max_ms", "survivor_cpu_before_pct",
                       "survivor_cpu_storm_pct"]},
    # Issue 20 (W8 is the reconnect storm of another issue).
    "W4L": {"title": "W4 closed loop (the maximum), then open loops at 50 % and 90 % of it, 5 s each", "nodes": 3,
            "params": {"pairs": 200, "duration": 5, "levels": [0.5, 0.9]},
            "quick": {"pairs": 6, "duration": 1, "levels": [0.5, 0.9]},
            "metrics": ["max_per_s", "p99_ms_max", "per_s_at50", "p50_ms_at50", "p99_ms_at50", "per_s_at90",
                        "p50_ms_at90", "p99_ms_at90", "lost"]},
    "W6L": {"title": "W6 closed loop (the maximum), then open loops at 50 % and 90 % of it, 5 s each", "nodes": 3,
            "params": {"loops": 32, "duration": 5, "levels": [0.5, 0.9]},
            "quick": {"loops": 4, "duration": 1, "levels": [0.5, 0.9]},
            "metrics": ["max_per_s", "p99_ms_max", "per_s_at50", "p50_ms_at50", "p99_ms_at50", "per_s_at90",
                        "p50_ms_at90", "p99_ms_at90", "failures"]},
    "W9a": {"title": "W1 under gunicorn (workers are cluster nodes on one Redis)", "nodes": 1, "gen": "W1",
            "params": {"clients": 1000, "count": 2000, "workerSplit": True},
            "quick": {"clients": 20, "count": 50, "idle": 2, "workerSplit": True},
            "metrics": ["deliveries_per_s", "delivered_pct", "server_cpu_us_per_op", "worker_split"]},
    "W9b": {"title": "W5 under gunicorn", "nodes": 1, "gen": "W5",
            "params": {"clients": 100, "duration": 10, "workerSplit": True},
            "quick": {"clients": 6, "duration": 1, "workerSplit": True},
            "metrics": ["calls_per_s", "p99_ms", "bad_acks", "server_cpu_us_per_op", "worker_split"]},
    "W10": {"title": "1 node, 6,000 connections (200 opening at once), token checked at the upgrade, user mapped, "
                     "one welcome pushed", "nodes": 1, "server_args": ["--auth"],
            "params": {"connections": 6000, "concurrency": 200},
            "quick": {"connections": 60, "concurrency": 20, "badTokens": 10},
            "metrics": ["connections_per_s", "p50_ms", "p99_ms", "failures", "refused", "server_cpu_us_per_op"]},
    "W11": {"title": "1 node, 100,000 idle connections (default heartbeats; capped by RLIMIT_NOFILE): RSS, idle "
                     "CPU, one liveness sweep, a canary's echo p50/p99; then one broadcast to all", "nodes": 1,
            "params": {"connections": 100000, "window": 30, "canaryRate": 10, "settle": 2},
            "quick": {"connections": 300, "window": 2, "canaryRate": 10, "settle": 0.5},
            "metrics": ["connected", "rss_mb", "kb_per_conn", "idle_cpu_pct", "sweep_ms", "sweep_cpu_ms", "canary_p50_ms",
                        "canary_p99_ms", "bcast_deliveries_per_s", "bcast_time_to_last_ms", "bcast_delivered_pct"]},
}

#: Workload names that stand for several (``--workloads W9`` = W1 and W5 under gunicorn).
WORKLOAD_GROUPS = {"W9": ["W9a", "W9b"]}

#: What one operation is, per workload, for the servers' CPU per operation (server_cpu_us_per_op).
OPERATIONS = {"W1": "deliveries", "W2": "deliveries", "W3": "deliveries", "W4": "round_trips", "W5": "calls",
              "W9a": "deliveries", "W9b": "calls", "W10": "connections"}

#: Primary metric of each workload (for ratios) and whether higher is better.
PRIMARY = {"W1": ("deliveries_per_s", True), "W2": ("deliveries_per_s", True), "W3": ("deliveries_per_s", True),
           "W4": ("round_trips_per_s", True), "W5": ("calls_per_s", True), "W6": ("calls_per_s", True),
           "W7": ("kb_per_conn_last", False), "W8": ("recovery_s", False), "W4L": ("p99_ms_at90", False), "W6L": ("p99_ms_at90", False),
           "W9a": ("deliveries_per_s", True), "W9b": ("calls_per_s", True), "W10": ("connections_per_s", True),
           "W11": ("kb_per_conn", False)}


def crossws_storm_args(params: Dict[str, Any]) -> List[str]:
    """W8's server options of the crossws systems: restarts close with 1012 and a retry hint."""
    return ["--shutdown-code", "1012", "--restart-retry-window", str(params.get("retry_window", 10))]


def crossws_limit_args(params: Dict[str, Any]) -> List[str]:
    """The same plus the accept-rate limit (503 + Retry-After beyond it)."""
    return crossws_storm_args(params) + ["--max-accept-rate", str(params.get("accept_rate", 100)),
                                         "--accept-burst", str(params.get("accept_burst", 100))]

#: Systems under test: how to start one node, which protocol the generator speaks, which workloads apply.
SYSTEMS: Dict[str, Dict[str, Any]] = {
    "calibration": {"cmd": [sys.executable, os.path.join(SERVERS_DIR, "calibration_server.py")],
                    "proto": "json", "workloads": {"W1", "W5", "W7"},
                    "about": "bare gevent server, no WebSocket library, pre-encoded frames, raw non-blocking send()"},
    "calibration_sendall": {"cmd": [sys.executable, os.path.join(SERVERS_DIR, "calibration_server.py"),
                                    "--mode", "sendall"],
                            "proto": "json", "workloads": {"W1", "W5", "W7"},
                            "about": "bare gevent server, gevent sendall() per frame"},
    "calibration_node": {"cmd": ["node", "--expose-gc", os.path.join(NODE_DIR, "calibration_server.js")],
                         "proto": "json", "workloads": {"W1", "W5", "W7"},
                         "about": "bare Node.js ws server"},
    "flask_socketio": {"cmd": [sys.executable, os.path.join(SERVERS_DIR, "flask_socketio_server.py")],
                       "proto": "socketio", "workloads": {"W1", "W2", "W3", "W4", "W5", "W7", "W10", "W11"},
                       "about": "Flask-SocketIO, async_mode=gevent, gevent-websocket, Redis message queue"},
    "original": {"cmd": ["node", "--expose-gc", os.path.join(NODE_DIR, "original_server.js")],
                 "proto": "json", "workloads": {"W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W4L", "W6L", "W10", "W11"},
                 "reconnect": "original",
                 "about": "the Node.js original, websocket-cross-server-adapter 1.0.7 (needs --original-dir)"},
    "crossws": {"cmd": [sys.executable, os.path.join(SERVERS_DIR, "crossws_server.py")],
                "proto": "json", "workloads": {"W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8", "W4L", "W6L", "W10", "W11"},
                "reconnect": "crossws", "args": {"W8": crossws_storm_args},
                "about": "crossws_sync WebSocketCrossServerAdapter"},
    "crossws_limit": {"cmd": [sys.executable, os.path.join(SERVERS_DIR, "crossws_server.py")],
                      "proto": "json", "workloads": {"W8"},
                      "reconnect": "crossws", "args": {"W8": crossws_limit_args},
                      "about": "crossws_sync with the accept-rate limit (max_accept_rate, accept_burst: W8 params)"},
    "crossws_recovery": {"cmd": [sys.executable, os.path.join(SERVERS_DIR, "crossws_server.py"), "--recovery"],
                         "proto": "json", "workloads": {"W3", "W4"},
                         "about": "crossws_sync with connection_state_recovery on (history streams in Redis)"},
    "crossws_base": {"cmd": [sys.executable, os.path.join(SERVERS_DIR, "crossws_server.py")],
                     "proto": "json", "workloads": {"W1", "W2", "W3", "W4", "W5", "W6", "W7", "W4L", "W6L", "W10", "W11"},
                     "about": "crossws_sync at the --baseline commit (before/after in one run)"},
    # W9: gunicorn's master plus N GeventWebSocketWorker workers, every worker a cluster node on one Redis
    "crossws_gunicorn1": {"cmd": [sys.executable, os.path.join(SERVERS_DIR, "crossws_gunicorn.py"), "--workers", "1"],
                          "proto": "json", "workloads": {"W9a", "W9b", "W10"}, "redis": True, "workers": 1,
                          "about": "crossws_sync under gunicorn -w 1 (GeventWebSocketWorker), on Redis"},
    "crossws_gunicorn2": {"cmd": [sys.executable, os.path.join(SERVERS_DIR, "crossws_gunicorn.py"), "--workers", "2"],
                          "proto": "json", "workloads": {"W9a", "W9b"}, "redis": True, "workers": 2,
                          "about": "crossws_sync under gunicorn -w 2: two cluster nodes on one Redis"},
}
DEFAULT_SYSTEMS = ["calibration", "flask_socketio", "crossws"]  # + "original", "calibration_node" on request

#: Copy of crossws_sync/ taken when the suite starts, first on the servers' PYTHONPATH: every run
#: measures the same code even when the work tree changes meanwhile (see snapshot_library).
LIBRARY_SNAPSHOT: Optional[str] = None

#: crossws_sync/ as of the --baseline git revision, for the "crossws_base" system.
BASELINE_SNAPSHOT: Optional[str] = None

#: Attach ``py-spy record`` to every Python server node (--profile); raw stacks land in the run's log dir.
PROFILE = False
#: set from --redis-topology
REDIS_TOPOLOGY = "single"

#: Checkout of websocket-cross-server-adapter for the "original" system (--original-dir or env).
ORIGINAL_DIR: Optional[str] = os.environ.get("ORIGINAL_ADAPTER_DIR")

SERVER_START_TIMEOUT = 30.0
GENERATOR_SLACK = 60.0  # s allowed past the generator's own deadline before we kill it


# --------------------------------------------------------------------------- processes

def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 unless configured otherwise)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses right now, below the ephemeral range when it can:
    W8's storms leave tens of thousands of client ports (and their TIME_WAIT) there, and a port
    taken by bind(0) could collide with a client's port before the server binds it."""
    high = ephemeral_low() - 1
    for _ in range(200):
        port = random.randint(10000, high) if high > 10000 else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Optional[str], lines: int = 3) -> str:
    """The last ``lines`` non-empty lines of a log file, joined with `` | ``."""
    if not path:
        return ""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return " | ".join([line.strip() for line in text.splitlines() if line.strip()][-lines:])


def wait_port(port: int, proc: subprocess.Popen, timeout: float, log: Optional[str] = None) -> None:
    """Wait until ``port`` accepts TCP connections; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("server exited with %s before listening: %s" % (proc.returncode, log_tail(log)))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on port %d after %.0f s" % (port, timeout))


class Processes:
    """Every process this run started, so that all of them (and only them) are stopped."""

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.procs: List[Tuple[str, subprocess.Popen]] = []

    def start(self, name: str, cmd: List[str], **kwargs: Any) -> subprocess.Popen:
        log = open(os.path.join(self.log_dir, name + ".log"), "wb")
        kwargs.setdefault("stdout", log)
        proc = subprocess.Popen(cmd, stderr=log, cwd=ROOT, start_new_session=True, **kwargs)
        log.close()
        self.procs.append((name, proc))
        return proc

    def stop_all(self, timeout: float = 10.0) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + timeout
        for _name, proc in reversed(self.procs):
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs = []


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        try:
            for candidate in (port, port + 10000):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of ports for a Redis Cluster node")


def start_redis(procs: Processes, work_dir: str, name: str = "redis", extra: Sequence[str] = ()) -> int:
    port = cluster_port() if extra else free_port()
    directory = os.path.join(work_dir, name)
    os.makedirs(directory, exist_ok=True)
    proc = procs.start(name, ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", directory, "--protected-mode", "no"] + list(extra),
                       stdout=subprocess.DEVNULL)
    wait_port(port, proc, 10.0)
    return port


#: ``--redis-topology``: what the nodes of multi-node workloads share.
REDIS_TOPOLOGIES = ("single", "independent3", "cluster3")


def start_topology(topology: str, procs: Processes, work_dir: str, pids: Dict[str, int]) -> List[str]:
    """Start the Redis side of a run; return the server arguments that point the nodes at it."""
    if topology == "single":
        port = start_redis(procs, work_dir)
        pids["redis"] = procs.procs[-1][1].pid
        return ["--redis-port", str(port)]
    if topology == "independent3":  # the original's scheme: each message on one of them
        ports = []
        for index in range(3):
            ports.append(start_redis(procs, work_dir, "redis%d" % index))
            pids["redis%d" % index] = procs.procs[-1][1].pid
        return ["--redis-urls", ",".join("redis://127.0.0.1:%d" % p for p in ports)]
    ports = []  # cluster3: three primaries, no replicas (sharded pub/sub)
    for index in range(3):
        ports.append(start_redis(procs, work_dir, "redis%d" % index,
                                 ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]))
        pids["redis%d" % index] = procs.procs[-1][1].pid
    subprocess.run(["redis-cli", "--cluster", "create"] + ["127.0.0.1:%d" % p for p in ports] + ["--cluster-yes"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = subprocess.run(["redis-cli", "-p", str(ports[0]), "cluster", "info"], capture_output=True, text=True)
        if "cluster_state:ok" in info.stdout:
            break
        time.sleep(0.2)
    return ["--redis-urls", "redis+cluster://" + ",".join("127.0.0.1:%d" % p for p in ports)]


# --------------------------------------------------------------------------- CPU sampling

class CpuWindow:
    """CPU seconds of named processes (and of the whole machine) between two snapshots."""

    def __init__(self, procs: Dict[str, int]) -> None:
        self.handles = {}
        for name, pid in procs.items():
            try:
                self.handles[name] = psutil.Process(pid)
            except psutil.NoSuchProcess:
                pass
        self.start: Dict[str, float] = {}
        #: CPU seconds of processes that exited during the window (their rusage when reaped)
        self.final: Dict[str, float] = {}
        self.t0 = 0.0
        self.sys0: Any = None

    @staticmethod
    def _cpu(handle: psutil.Process) -> Optional[float]:
        try:
            t = handle.cpu_times()
            return t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None

    def begin(self) -> None:
        self.t0 = time.monotonic()
        self.sys0 = psutil.cpu_times()
        self.start = {name: self._cpu(h) for name, h in self.handles.items()}

    def end(self) -> Dict[str, Any]:
        wall = time.monotonic() - self.t0
        sys1 = psutil.cpu_times()
        shares: Dict[str, Optional[float]] = {}
        for name, handle in self.handles.items():
            now, before = self.final.get(name, self._cpu(handle)), self.start.get(name)
            shares[name] = None if now is None or before is None or wall <= 0 else 100.0 * (now - before) / wall
        # Interrupt time (loopback TCP runs in softirq) is busy time but not charged to any process,
        # so "other" (processes that are not ours) is computed from process time only.
        proc_time = lambda t: t.user + t.system + t.nice  # noqa: E731
        busy = lambda t: proc_time(t) + getattr(t, "irq", 0) + getattr(t, "softirq", 0)  # noqa: E731
        machine = 100.0 * (busy(sys1) - busy(self.sys0)) / wall if wall > 0 else None
        processes = 100.0 * (proc_time(sys1) - proc_time(self.sys0)) / wall if wall > 0 else None
        ours = sum(v for v in shares.values() if v)
        # every server-side process (nodes, gunicorn master and workers, Redis), in CPU seconds
        server_s = sum(v for name, v in shares.items() if v and name != "gen") * wall / 100.0
        return {"cpu_pct": shares, "machine_cpu_pct": machine,
                "other_cpu_pct": None if processes is None else max(0.0, processes - ours), "window_s": wall,
                "server_cpu_s": server_s}


# --------------------------------------------------------------------------- one run

def line_reader(stream: IO[bytes], sink: "queue.Queue[Optional[bytes]]") -> None:
    for line in iter(stream.readline, b""):
        sink.put(line)
    sink.put(None)


def run_once(system: str, workload: str, params: Dict[str, Any], log_dir: str) -> Dict[str, Any]:
    """Start a fresh cluster of ``system``, run ``workload`` once, stop everything; return the run."""
    spec, wl = SYSTEMS[system], WORKLOADS[workload]
    procs = Processes(log_dir)
    work_dir = tempfile.mkdtemp(prefix="crossws-bench-")
    try:
        ports, pids = [], {}
        clustered = wl["nodes"] > 1 or bool(spec.get("redis"))
        redis_args = start_topology(REDIS_TOPOLOGY, procs, work_dir, pids) if clustered else []
        library = BASELINE_SNAPSHOT if system == "crossws_base" else LIBRARY_SNAPSHOT
        python_path = [p for p in (library, ROOT, os.environ.get("PYTHONPATH")) if p]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(python_path),
                   PYTHONUNBUFFERED="1", NODE_PATH=os.path.join(NODE_DIR, "node_modules"))
        if ORIGINAL_DIR:
            env["ORIGINAL_ADAPTER_DIR"] = ORIGINAL_DIR
        extra_args = spec.get("args", {}).get(workload, lambda _params: [])(params)
        for index in range(wl["nodes"]):
            port = free_port()
            cmd = spec["cmd"] + ["--port", str(port)] + extra_args + list(wl.get("server_args", []))
            if clustered:
                cmd += ["--node-index", str(index), "--nodes", str(wl["nodes"])] + redis_args
            proc = procs.start("%s-n%d" % (system, index), cmd, env=env)
            ports.append(port)
            pids["n%d" % index] = proc.pid
        for (name, proc), port in zip([p for p in procs.procs if not p[0].startswith("redis")], ports):
            wait_port(port, proc, SERVER_START_TIMEOUT, os.path.join(log_dir, name + ".log"))
        if spec.get("workers"):
            pids.update(gunicorn_workers(pids["n0"], spec["workers"]))
        if clustered:
            time.sleep(0.5)  # let the nodes finish subscribing to Redis before the load starts
        profilers = []
        if PROFILE and spec["cmd"][0] == sys.executable:
            # the nodes, or gunicorn's workers (its master only forks and watches them)
            targets = ["w%d" % i for i in range(spec["workers"])] if spec.get("workers") else \
                ["n%d" % i for i in range(wl["nodes"])]
            for target in targets:
                out_file = os.path.join(log_dir, "profile-%s.txt" % target)
                profilers.append(procs.start("py-spy-%s" % target, [
                    "py-spy", "record", "--pid", str(pids[target]), "--format", "raw", "--nonblocking",
                    "--rate", "200", "--output", out_file], stdout=subprocess.DEVNULL))

        if workload == "W11":
            fleet = drive_w11(spec, params, log_dir, procs, pids, ports)
            stop_profilers(profilers)
            dead = [name for name, p in procs.procs if not name.startswith(("generator", "py-spy")) and p.poll() is not None]
            if dead:
                fleet["ok"] = False
                fleet["error"] = ("%s process exited during the run: %s (%s)" % (
                    fleet.get("error") or "", ", ".join(dead), log_tail(os.path.join(log_dir, dead[0] + ".log")))).strip()
            fleet.update(system=system, workload=workload)
            return fleet
        deadline = float(params.get("deadline", 300))
        gen_params = dict(params, policy=spec.get("reconnect", "crossws")) if workload == "W8" else params
        gen_cmd = ["node", os.path.join(NODE_DIR, "loadgen.js"), "--proto", spec["proto"],
                   "--workload", wl.get("gen", workload),
                   "--urls", ",".join("ws://127.0.0.1:%d" % p for p in ports), "--params", json.dumps(gen_params)]
        gen = procs.start("generator", gen_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        pids["gen"] = gen.pid
        lines: "queue.Queue[Optional[bytes]]" = queue.Queue()
        threading.Thread(target=line_reader, args=(gen.stdout, lines), daemon=True).start()

        cpu = CpuWindow(pids)
        server_proc = psutil.Process(pids["n0"])
        run: Dict[str, Any] = {"system": system, "workload": workload, "stages": []}
        result: Optional[Dict[str, Any]] = None
        windows: Dict[str, CpuWindow] = {}  # named CPU windows besides the measured one (W8: "before")
        stopped_on_purpose = set()  # W8's victim node
        hard_deadline = time.monotonic() + deadline + GENERATOR_SLACK
        while time.monotonic() < hard_deadline:
            try:
                raw = lines.get(timeout=max(0.1, hard_deadline - time.monotonic()))
            except queue.Empty:
                break
            if raw is None:
                break
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            kind = msg.get("type")
            if kind == "phase" and msg.get("phase") == "measure_start":
                cpu.begin()
            elif kind == "phase" and msg.get("phase") == "measure_end":
                run.update(cpu.end())
            elif kind == "phase" and msg.get("phase") == "window_start":
                windows[msg["window"]] = CpuWindow(pids)
                windows[msg["window"]].begin()
            elif kind == "phase" and msg.get("phase") == "window_end" and msg.get("window") in windows:
                run["window_" + msg["window"]] = windows[msg["window"]].end()
            elif kind == "pid":  # a helper process of the generator (W8's survivors): measured too
                pids[msg["name"]] = int(msg["pid"])
                try:
                    cpu.handles[msg["name"]] = psutil.Process(int(msg["pid"]))
                except psutil.NoSuchProcess:
                    pass
            elif kind == "kill":
                # W8: stop a node the way its system stops (crossws: graceful, closes with its
                # shutdown code; the original exits on SIGTERM), then tell the generator
                name = "%s-n%d" % (system, int(msg.get("node", 0)))
                victim = next(p for n, p in procs.procs if n == name)
                victim.terminate()
                stopped_on_purpose.add(name)
                threading.Thread(target=reap_with_cpu, args=(victim, "n%d" % int(msg.get("node", 0)), cpu),
                                 daemon=True).start()
                run["killed"] = name
                assert gen.stdin is not None
                gen.stdin.write(b"killed\n")
                gen.stdin.flush()
            elif kind == "stage":
                rss = server_proc.memory_info().rss
                run["stages"].append({"connections": msg["connections"], "alive": msg.get("alive"), "rss": rss})
                assert gen.stdin is not None
                gen.stdin.write(b"next\n")
                gen.stdin.flush()
            elif kind == "result":
                result = msg
                break
        stop_profilers(profilers)
        if result is None:
            raise RuntimeError("load generator gave no result (see %s)" % os.path.join(log_dir, "generator.log"))
        dead = [name for name, p in procs.procs if name != "generator" and not name.startswith("py-spy")
                and name not in stopped_on_purpose and p.poll() is not None]
        if dead:
            result.setdefault("error", "")
            result["error"] = (result["error"] + " process exited during the run: %s (%s)" % (
                ", ".join(dead), log_tail(os.path.join(log_dir, dead[0] + ".log")))).strip()
            result["ok"] = False
        run.update({k: v for k, v in result.items() if k not in ("type", "stages", "workload")})
        if workload == "W7":
            derive_memory(run)
        if workload == "W8":
            derive_storm(run)
        ops = run.get(OPERATIONS.get(workload, ""))
        if ops and run.get("server_cpu_s") is not None:
            run["server_cpu_us_per_op"] = 1e6 * run["server_cpu_s"] / ops
        return run
    finally:
        procs.stop_all()
        shutil.rmtree(work_dir, ignore_errors=True)


def gunicorn_workers(master_pid: int, count: int, timeout: float = 30.0) -> Dict[str, int]:
    """The pids of gunicorn's ``count`` workers (children of ``master_pid``) as ``{"w0": pid, ...}``,
    once all of them exist and have had a moment to start serving."""
    master = psutil.Process(master_pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = sorted(child.pid for child in master.children())
        if len(children) >= count:
            time.sleep(1.0)  # every worker imports the app and starts its adapter
            return {"w%d" % i: pid for i, pid in enumerate(children[:count])}
        time.sleep(0.1)
    raise RuntimeError("gunicorn started %d of %d workers in %.0f s" % (len(master.children()), count, timeout))


def stop_profilers(profilers: "List[subprocess.Popen[bytes]]") -> None:
    """SIGINT makes py-spy write its file; wait for it (bounded)."""
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)
    for profiler in profilers:
        try:
            profiler.wait(20)
        except subprocess.TimeoutExpired:
            pass


def tagged_reader(part: int, stream: IO[bytes], sink: "queue.Queue[Tuple[int, Optional[bytes]]]") -> None:
    for line in iter(stream.readline, b""):
        sink.put((part, line))
    sink.put((part, None))


def drive_w11(spec: Dict[str, Any], params: Dict[str, Any], log_dir: str, procs: Processes, pids: Dict[str, int],
              ports: List[int]) -> Dict[str, Any]:
    """W11: start the generator processes (``params["generators"]`` of them, the idle fleet split
    between them), step them through base -> connect -> idle window -> arm -> broadcast (one line
    on stdin per step, see W11 in loadgen.js), read the server's RSS at the base and after the
    fleet connected, its CPU over the idle window, and combine the parts' figures."""
    parts = int(params["generators"])
    total = int(params["connections"])
    share = -(-total // parts)
    lines: "queue.Queue[Tuple[int, Optional[bytes]]]" = queue.Queue()
    gens: "List[subprocess.Popen[bytes]]" = []
    for part in range(parts):
        mine = dict(params, part=part, offset=part * share, connections=max(0, min(share, total - part * share)))
        cmd = ["node", os.path.join(NODE_DIR, "loadgen.js"), "--proto", spec["proto"], "--workload", "W11",
               "--urls", ",".join("ws://127.0.0.1:%d" % p for p in ports), "--params", json.dumps(mine)]
        gen = procs.start("generator" if part == 0 else "generator%d" % part, cmd, stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE)
        pids["gen" if part == 0 else "gen%d" % part] = gen.pid
        threading.Thread(target=tagged_reader, args=(part, gen.stdout, lines), daemon=True).start()
        gens.append(gen)

    def tell(part: int, word: str) -> None:
        stdin = gens[part].stdin
        assert stdin is not None
        try:
            stdin.write(word.encode() + b"\n")
            stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    cpu = CpuWindow(pids)
    server = psutil.Process(pids["n0"])
    run: Dict[str, Any] = {"connections": total}
    stages: Dict[str, Dict[int, Dict[str, Any]]] = {}
    results: Dict[int, Dict[str, Any]] = {}
    ended: Set[int] = set()
    hard_deadline = time.monotonic() + float(params.get("deadline", 300)) + GENERATOR_SLACK
    while time.monotonic() < hard_deadline and len(ended) < parts:
        try:
            part, raw = lines.get(timeout=max(0.1, hard_deadline - time.monotonic()))
        except queue.Empty:
            break
        if raw is None:
            ended.add(part)
            continue
        try:
            msg = json.loads(raw)
        except ValueError:
            continue
        kind = msg.get("type")
        if kind == "phase" and msg.get("phase") == "measure_start":
            cpu.begin()
        elif kind == "phase" and msg.get("phase") == "measure_end":
            run.update(cpu.end())
        elif kind == "result":
            results[part] = msg
        elif kind == "stage":
            phase = msg["phase"]
            stages.setdefault(phase, {})[part] = msg
            if phase == "base":
                run["rss_base"] = server.memory_info().rss
                for other in range(parts):
                    tell(other, "connect")
            elif phase == "connected" and len(stages[phase]) == parts:
                tell(0, "idle")
            elif phase == "idle_start":
                run["rss"] = server.memory_info().rss
            elif phase == "idle_end":
                for other in range(parts):
                    tell(other, "arm")
            elif phase == "armed" and len(stages[phase]) == parts:
                tell(0, "broadcast")
    derive_w11(run, stages, results, parts)
    return run


def derive_w11(run: Dict[str, Any], stages: Dict[str, Dict[int, Dict[str, Any]]],
               results: Dict[int, Dict[str, Any]], parts: int) -> None:
    """W11's figures from the parts' stage lines (see drive_w11)."""
    errors = [str(r.get("error")) for r in results.values() if not r.get("ok")]
    missing = [p for p in range(parts) if p not in results]
    if missing:
        errors.append("no result from generator part(s) %s" % missing)
    run["ok"] = not errors
    if errors:
        run["error"] = "; ".join(errors)
    connected = stages.get("connected", {})
    if len(connected) == parts:
        run["connected"] = sum(m["opened"] for m in connected.values())
        run["connected_pct"] = 100.0 * run["connected"] / run["connections"] if run["connections"] else None
        run["connect_s"] = max(m["seconds"] for m in connected.values())
        if run["connected"] < run["connections"]:
            run["ok"] = False
            run["error"] = ((run.get("error") or "") + " only %d of %d connected" % (
                run["connected"], run["connections"])).strip()
    if "rss" in run and "rss_base" in run:
        run["rss_mb"] = run["rss"] / 2 ** 20
        run["rss_mb_0"] = run["rss_base"] / 2 ** 20
        if run.get("connected"):
            run["kb_per_conn"] = (run["rss"] - run["rss_base"]) / 1024.0 / run["connected"]
    run["idle_cpu_pct"] = (run.get("cpu_pct") or {}).get("n0")
    idle_end = stages.get("idle_end", {}).get(0)
    if idle_end:
        canary = idle_end.get("canary") or {}
        run["canary_p50_ms"], run["canary_p99_ms"] = canary.get("p50_ms"), canary.get("p99_ms")
        run["canary_samples"], run["canary_failed"] = canary.get("samples"), canary.get("canary_failed")
        run["canary_max_ms"] = canary.get("max_ms")
        slow = canary.get("slow") or []
        run["canary_slow"] = len(slow)  # round trips over the generator's slowCanary ms (20)
        server = idle_end.get("server") or {}
        run["server_stats"] = server
        if isinstance(server.get("last_sweep_seconds"), (int, float)) and server.get("sweeps"):
            run["sweep_ms"] = 1000.0 * server["last_sweep_seconds"]
            run["sweep_clients"] = server.get("last_sweep_clients")
            if isinstance(server.get("last_sweep_cpu_seconds"), (int, float)):
                run["sweep_cpu_ms"] = 1000.0 * server["last_sweep_cpu_seconds"]
            run["sweeps"] = server["sweeps"]
        for kind in ("sweep", "gc"):  # how many slow round trips overlapped a sweep, a full collection
            windows = server.get(kind + "_windows")
            if isinstance(windows, list):
                run["canary_slow_in_" + kind] = sum(1 for sent, ms in slow if any(
                    sent <= end and sent + ms >= start for start, end in windows))
                if kind == "gc":
                    run["full_gcs"] = len(windows)  # the bench's own gc.collect() calls included
                    run["full_gc_max_ms"] = max((end - start for start, end in windows), default=None)
    armed = stages.get("armed", {})
    if len(armed) == parts:
        run["alive_after_idle"] = sum(m["alive"] for m in armed.values()) - 1  # the canary
    delivered = stages.get("delivered", {})
    if len(delivered) == parts and delivered[0].get("t0") is not None:
        received = sum(m["received"] for m in delivered.values())
        expected = sum(m["expected"] for m in delivered.values())
        lasts = [m["t_last"] for m in delivered.values() if m.get("t_last") is not None]
        run["bcast_received"], run["bcast_expected"] = received, expected
        run["bcast_delivered_pct"] = 100.0 * received / expected if expected else None
        run["heartbeat_echoes"] = sum(m.get("heartbeat_echoes") or 0 for m in delivered.values())
        run["trigger_ack"] = delivered[0].get("trigger_ack")
        if lasts:
            elapsed_ms = max(lasts) - delivered[0]["t0"]
            run["bcast_time_to_last_ms"] = elapsed_ms
            run["bcast_deliveries_per_s"] = received / (elapsed_ms / 1000.0) if elapsed_ms > 0 else None


def derive_memory(run: Dict[str, Any]) -> None:
    """W7: RSS at each stage and KB per connection relative to stage 0."""
    stages = run["stages"]
    if not stages:
        return
    base = stages[0]["rss"]
    run["rss_mb_0"] = base / 2 ** 20
    for stage in stages:
        stage["rss_mb"] = stage["rss"] / 2 ** 20
        n = stage["connections"] - stages[0]["connections"]
        stage["kb_per_conn"] = (stage["rss"] - base) / 1024.0 / n if n > 0 else None
    with_conns = [s for s in stages if s["kb_per_conn"] is not None]
    if with_conns:
        run["kb_per_conn_first"] = with_conns[0]["kb_per_conn"]
        run["kb_per_conn_last"] = with_conns[-1]["kb_per_conn"]
        run["connections_first"] = with_conns[0]["connections"]
        run["connections_last"] = with_conns[-1]["connections"]


def reap_with_cpu(proc: subprocess.Popen, name: str, cpu: CpuWindow) -> None:
    """Wait for a stopped process with wait4() and hand its total CPU time to ``cpu``: once it
    exited psutil cannot read it, and its shutdown work would count as other processes' CPU."""
    try:
        _pid, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # reaped by Popen meanwhile
        return
    cpu.final[name] = usage.ru_utime + usage.ru_stime
    proc.returncode = os.waitstatus_to_exitcode(status)


def derive_storm(run: Dict[str, Any]) -> None:
    """W8: the survivor nodes' CPU (n1 + n2, % of one core) before the storm and during it."""
    for key, shares in (("survivor_cpu_before_pct", (run.get("window_before") or {}).get("cpu_pct")),
                        ("survivor_cpu_storm_pct", run.get("cpu_pct"))):
        values = [v for name, v in (shares or {}).items() if name in ("n1", "n2") and v is not None]
        run[key] = sum(values) if len(values) == 2 else None
    before = run.get("window_before") or {}
    run["other_cpu_before_pct"] = before.get("other_cpu_pct")


# --------------------------------------------------------------------------- aggregation

def median_of(runs: List[Dict[str, Any]], key: str) -> Optional[float]:
    values = [r[key] for r in runs if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    return statistics.median(values) if values else None


def aggregate(runs: List[Dict[str, Any]], workload: str) -> Dict[str, Any]:
    ok_runs = [r for r in runs if r.get("ok")]
    summary: Dict[str, Any] = {"runs": len(runs), "ok_runs": len(ok_runs)}
    errors = sorted({str(r.get("error")) for r in runs if not r.get("ok")})
    if errors:
        summary["errors"] = errors
    if not ok_runs:
        return summary
    keys = set()
    for r in ok_runs:
        keys.update(k for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
    for key in sorted(keys):
        summary[key] = median_of(ok_runs, key)
    splits = [r["worker_split"] for r in ok_runs if isinstance(r.get("worker_split"), str)]
    if splits:
        summary["worker_split"] = ", ".join(splits)
    cpu_names = sorted({name for r in ok_runs for name in (r.get("cpu_pct") or {})})
    summary["cpu_pct"] = {name: median_of([r.get("cpu_pct") or {} for r in ok_runs], name) for name in cpu_names}
    if workload == "W7":
        summary["stages"] = [
            {"connections": s["connections"], "rss_mb": median_of([r["stages"][i] for r in ok_runs
                                                                   if len(r["stages"]) > i], "rss_mb"),
             "kb_per_conn": median_of([r["stages"][i] for r in ok_runs if len(r["stages"]) > i], "kb_per_conn")}
            for i, s in enumerate(ok_runs[0]["stages"])]
    return summary


# --------------------------------------------------------------------------- table

def fmt(value: Any, key: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if key.endswith("_pct") or "_ms" in key or key.startswith("kb_") or key.startswith("rss_"):
            return "%.1f" % value
        if (key.endswith("_s") and not key.endswith("per_s")) or key.endswith("_us_per_op"):
            return "%.2f" % value
        return "{:,.0f}".format(value)
    if isinstance(value, int):
        return "{:,}".format(value)
    return str(value)


def cpu_cell(summary: Dict[str, Any]) -> str:
    cpu = summary.get("cpu_pct") or {}
    if not cpu:
        return "-"
    order = sorted(cpu, key=lambda n: (n != "gen", n))
    return " ".join("%s %.0f" % (name, cpu[name]) for name in order if cpu[name] is not None)


def limit_cell(summary: Dict[str, Any]) -> str:
    """What held the figure back: a process at >= 90 % of a core, else the whole machine when all
    cores were >= 90 % busy (ours plus other work), else nothing saturated (latency-bound)."""
    cpu = {k: v for k, v in (summary.get("cpu_pct") or {}).items() if v is not None}
    if not cpu:
        return "-"
    name = max(cpu, key=lambda n: cpu[n])
    if cpu[name] >= 90:
        return "%s %.0f%%" % (name, cpu[name])
    machine = summary.get("machine_cpu_pct")
    cores = psutil.cpu_count() or 1
    if machine is not None and machine >= 90 * cores:
        return "all %d cores (%.0f%%; top %s %.0f%%)" % (cores, machine, name, cpu[name])
    return "none saturated (top %s %.0f%%)" % (name, cpu[name])


#: Systems crossws is compared with in the ratio columns (when they ran).
RATIO_BASES = ("calibration", "flask_socketio", "original")


def render_table(results: Dict[str, Dict[str, Dict[str, Any]]], systems: List[str], workloads: List[str],
                 markdown: bool = False) -> str:
    """The side-by-side table: one column per system, then crossws's ratios; plain text or Markdown."""
    rows: List[List[str]] = [["workload", "metric"] + systems]
    ratio_bases = [s for s in RATIO_BASES if s in systems] if "crossws" in systems else []
    rows[0] += ["crossws/%s" % s for s in ratio_bases]
    for workload in workloads:
        metrics = WORKLOADS[workload]["metrics"]
        first = True
        for metric in metrics + ["cpu % (median)", "limit", "other cpu %"]:
            row = [workload if first else "", metric]
            first = False
            for system in systems:
                summary = results.get(system, {}).get(workload)
                if summary is None:
                    row.append("n/a")
                elif not summary.get("ok_runs"):
                    row.append("error" if metric == metrics[0] else "")
                elif metric == "cpu % (median)":
                    row.append(cpu_cell(summary))
                elif metric == "limit":
                    row.append(limit_cell(summary))
                elif metric == "other cpu %":
                    row.append(fmt(summary.get("other_cpu_pct"), "_pct"))
                else:
                    row.append(fmt(summary.get(metric), metric))
            for base in ratio_bases:
                cell = ""
                if metric == PRIMARY[workload][0]:
                    ours = (results.get("crossws", {}).get(workload) or {}).get(metric)
                    theirs = (results.get(base, {}).get(workload) or {}).get(metric)
                    if ours and theirs:
                        cell = "%.2fx" % (ours / theirs)
                row.append(cell)
            rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    if markdown:
        lines.append("| " + " | ".join(rows[0]) + " |")
        lines.append("|" + "|".join("---" if j < 2 else "---:" for j in range(len(rows[0]))) + "|")
        lines.extend("| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows[1:])
        return "\n".join(lines)
    for i, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    errors = []
    for system in systems:
        for workload in workloads:
            summary = results.get(system, {}).get(workload)
            if summary and summary.get("errors"):
                errors.append("%s %s: %s" % (system, workload, "; ".join(summary["errors"])))
    if errors:
        lines.append("")
        lines.append("errors:")
        lines.extend("  " + e for e in errors)
    return "\n".join(lines)


# --------------------------------------------------------------------------- targets (issue 8)

def _value(results: Dict[str, Dict[str, Dict[str, Any]]], system: str, workload: str, key: str) -> Optional[float]:
    summary = results.get(system, {}).get(workload) or {}
    value = summary.get(key)
    return value if isinstance(value, (int, float)) else None


def check_targets(results: Dict[str, Dict[str, Dict[str, Any]]]) -> List[Dict[str, Any]]:
    """Compare crossws with the other systems of the same run against the issue's targets.

    Returns:
        One entry per target: ``{"workload", "target", "measured", "status"}`` where status is
        ``"pass"``, ``"FAIL"`` or ``"n/a"`` (a system or figure is missing from this run).
    """
    checks: List[Dict[str, Any]] = []

    def ratio(workload: str, key: str, other: str, minimum: float) -> None:
        ours, theirs = _value(results, "crossws", workload, key), _value(results, other, workload, key)
        measured = ours / theirs if ours and theirs else None
        checks.append({"workload": workload, "target": "%s >= %.1f x %s" % (key, minimum, other),
                       "measured": None if measured is None else "%.2fx" % measured,
                       "status": "n/a" if measured is None else ("pass" if measured >= minimum else "FAIL")})

    def absolute(workload: str, key: str, text: str, ok: Callable[[float], bool], unit: str = "") -> None:
        value = _value(results, "crossws", workload, key)
        checks.append({"workload": workload, "target": text,
                       "measured": None if value is None else "%.4g%s" % (value, unit),
                       "status": "n/a" if value is None else ("pass" if ok(value) else "FAIL")})

    ratio("W1", "deliveries_per_s", "calibration", 0.9)
    ratio("W1", "deliveries_per_s", "flask_socketio", 4)
    absolute("W1", "delivered_pct", "100 % delivered", lambda v: v >= 100.0, " %")
    for workload in ("W2", "W3"):
        ratio(workload, "deliveries_per_s", "flask_socketio", 3)
        absolute(workload, "delivered_pct", "100 % delivered", lambda v: v >= 100.0, " %")
    absolute("W3", "wrong_room", "no wrong-room receipt", lambda v: v == 0)
    ratio("W4", "round_trips_per_s", "flask_socketio", 8)
    ours_p99, their_p50 = _value(results, "crossws", "W4", "p99_ms"), _value(results, "flask_socketio", "W4", "p50_ms")
    checks.append({"workload": "W4", "target": "p99 < flask_socketio p50",
                   "measured": None if ours_p99 is None or their_p50 is None else "%.1f ms vs %.1f ms" % (ours_p99, their_p50),
                   "status": "n/a" if ours_p99 is None or their_p50 is None else ("pass" if ours_p99 < their_p50 else "FAIL")})
    ratio("W5", "calls_per_s", "calibration", 0.8)
    ratio("W5", "calls_per_s", "flask_socketio", 10)
    absolute("W5", "bad_acks", "every checked ack echoes its call", lambda v: v == 0)
    ratio("W6", "calls_per_s", "original", 1.5)
    absolute("W7", "kb_per_conn_last", "<= 8 KB per idle connection (last stage; issue 20)", lambda v: v <= 8.0, " KB")
    # Issue 20
    ratio("W10", "connections_per_s", "original", 1.0)
    absolute("W10", "failures", "every connection welcomed", lambda v: v == 0)
    for workload in ("W9a", "W9b"):
        one = _value(results, "crossws_gunicorn1", workload, "server_cpu_us_per_op")
        two = _value(results, "crossws_gunicorn2", workload, "server_cpu_us_per_op")
        measured = two / one if one and two else None
        checks.append({"workload": workload, "target": "CPU per op: -w 2 <= 1.2 x -w 1",
                       "measured": None if measured is None else "%.2fx (%.2f / %.2f us)" % (measured, two, one),
                       "status": "n/a" if measured is None else ("pass" if measured <= 1.2 else "FAIL")})
    return checks


def render_targets(checks: List[Dict[str, Any]], workloads: List[str]) -> str:
    rows = [c for c in checks if c["workload"] in workloads]
    if not rows:
        return ""
    width = max(len(c["target"]) for c in rows)
    lines = ["targets (crossws, ratios within this run):"]
    for c in rows:
        lines.append("  %s  %s  %-12s %s" % (c["workload"], c["target"].ljust(width), c["measured"] or "-", c["status"]))
    return "\n".join(lines)


# --------------------------------------------------------------------------- metadata

def versions() -> Dict[str, Optional[str]]:
    out: Dict[str, Optional[str]] = {"python": platform.python_version()}
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return out
    for dist in ("gevent", "gevent-websocket", "greenlet", "redis", "hiredis", "ujson", "orjson", "Flask",
                 "Flask-SocketIO", "python-socketio", "python-engineio", "psutil"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    for name, cmd in (("node", ["node", "--version"]), ("redis-server", ["redis-server", "--version"])):
        try:
            out[name] = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            out[name] = None
    for pkg in ("ws", "socket.io-client"):
        try:
            with open(os.path.join(NODE_DIR, "node_modules", pkg, "package.json")) as fh:
                out[pkg] = json.load(fh)["version"]
        except (OSError, ValueError, KeyError):
            out[pkg] = None
    out["crossws_sync commit"] = git_state()
    return out


# --------------------------------------------------------------------------- main

def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny loads, 1 run: a smoke test, not a measurement")
    parser.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS),
                        help="comma-separated, from: %s" % ", ".join(SYSTEMS))
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help="comma-separated, from %s; W9 = W9a,W9b (W8: the reconnect storm)" % ", ".join(WORKLOADS))
    parser.add_argument("--runs", type=int, default=None, help="runs per (system, workload); default 3, 1 with --quick")
    parser.add_argument("--json", default=os.path.join(RESULTS_DIR, "latest.json"), help="where to write all runs")
    parser.add_argument("--original-dir", default=ORIGINAL_DIR,
                        help="checkout of websocket-cross-server-adapter, for --systems original "
                             "(default: $ORIGINAL_ADAPTER_DIR)")
    parser.add_argument("--baseline", default=None, metavar="GIT_REV",
                        help="also run crossws_sync as of this git revision, as system crossws_base "
                             "(added to --systems when missing): before and after a change in one run")
    parser.add_argument("--redis-topology", choices=REDIS_TOPOLOGIES, default="single",
                        help="what multi-node workloads share: one Redis (default), three independent Redis "
                             "nodes (crossws only), or a 3-shard Redis Cluster (crossws only)")
    parser.add_argument("--profile", action="store_true",
                        help="attach py-spy (pip install py-spy) to Python server nodes; raw stacks in bench/results/logs/")
    parser.add_argument("--max-other", type=float, default=None,
                        help="repeat a run when other processes used more than this %% CPU during it "
                             "(default 30, 0 = never; off with --quick)")
    parser.add_argument("--retries", type=int, default=2, help="at most this many repeats per run (default 2)")
    parser.add_argument("--set", action="append", default=[], metavar="W1.clients=100",
                        help="override one load-generator parameter (repeatable)")
    parser.add_argument("--w7-stages", default=None, metavar="0,1000,5000,20000",
                        help="W7's connection counts (default 0,1000,5000); past 5,000 the generator connects from "
                             "several 127.0.0.x addresses and the bench processes raise RLIMIT_NOFILE")
    args = parser.parse_args(argv)
    args.systems = [s for s in args.systems.split(",") if s]
    requested = [w.upper() for w in args.workloads.split(",") if w]
    args.workloads = []
    for w in requested:
        for name in WORKLOAD_GROUPS.get(w, [w]):
            name = next((k for k in WORKLOADS if k.upper() == name.upper()), name)
            if name not in args.workloads:
                args.workloads.append(name)
    for s in args.systems:
        if s not in SYSTEMS:
            parser.error("unknown system %r (choose from %s)" % (s, ", ".join(SYSTEMS)))
    for w in args.workloads:
        if w not in WORKLOADS:
            parser.error("unknown workload %r" % w)
    if args.redis_topology != "single" and any(not s.startswith("crossws") for s in args.systems):
        parser.error("--redis-topology %s: only the crossws systems take several Redis nodes" % args.redis_topology)
    if args.baseline and "crossws_base" not in args.systems:
        args.systems.append("crossws_base")
    if "crossws_base" in args.systems and not args.baseline:
        parser.error("--systems crossws_base needs --baseline GIT_REV")
    if "original" in args.systems and not (args.original_dir and
                                            os.path.isfile(os.path.join(args.original_dir, "index.js"))):
        parser.error("--systems original needs --original-dir (a checkout of websocket-cross-server-adapter)")
    if args.w7_stages:
        try:
            stages = [int(n) for n in args.w7_stages.split(",")]
        except ValueError:
            parser.error("--w7-stages takes comma-separated connection counts")
        if stages != sorted(stages) or stages[0] != 0 or len(stages) < 2:
            parser.error("--w7-stages: increasing counts starting at 0 (0,1000,5000)")
        args.set.append("W7.stages=%s" % json.dumps(stages))
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.max_other is None:
        args.max_other = 0.0 if args.quick else 30.0
    if not 0 <= args.retries <= 5:
        parser.error("--retries must be within 0..5")
    if not 1 <= args.runs <= 20:
        parser.error("--runs must be within 1..20")
    return args


def workload_params(workload: str, quick: bool, overrides: List[str]) -> Dict[str, Any]:
    params = dict(WORKLOADS[workload]["params"])
    if quick:
        params.update(WORKLOADS[workload]["quick"])
        params.setdefault("deadline", 60)
    for item in overrides:
        key, _, value = item.partition("=")
        wl, _, name = key.partition(".")
        if wl.upper() == workload and name:
            params[name] = json.loads(value)
    if workload == "W7":
        largest = max(params["stages"])
        if largest > 5000:
            # One source address has ~28k ephemeral ports, and the previous run's connections hold
            # theirs in TIME_WAIT for a minute: spread over addresses from 127.0.0.2 on.
            params.setdefault("sources", max(2, -(-2 * largest // PORTS_PER_SOURCE)))
        if largest > 5000:  # connection budgets grow with the count (~1,000 upgrades/s is plenty)
            params.setdefault("connectTimeout", max(30, largest // 300))
            params.setdefault("deadline", max(300, largest // 100 + 120))


    if workload == "W11":
        plan_w11(params)
    return params


#: Descriptors a W11 process needs besides its connections: the interpreter's own files, the
#: listening socket, epoll, pipes, logs, the canary, and one more per handshake in flight (the
#: crossws upgrade duplicates the socket; the generator keeps 100 in flight: up to 200). With 100
#: the server ran out (EMFILE in accept) at 19,855 of 19,900, with 200 at 19,560 of 19,800 once;
#: most of that was the accepted descriptor waiting for the cyclic GC, fixed since (server/wsgi.py).
W11_FD_MARGIN = 300


def plan_w11(params: Dict[str, Any]) -> None:
    """Fit W11 to this machine: cap the connection count to what the server process's
    RLIMIT_NOFILE allows (``main`` raised it as far as allowed; the server holds every connection
    in one process), record the cap in the params, split the idle fleet over as many generator
    processes as their own limit needs, and size the source addresses and budgets."""
    requested = int(params["connections"])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    usable = max(1, soft - W11_FD_MARGIN)
    if requested > usable and "capped_by" not in params:
        params["connections_requested"] = requested
        params["capped_by"] = "RLIMIT_NOFILE %d (hard %d): one server process holds every connection" % (soft, hard)
        sys.stderr.write("W11: %d connections need %d descriptors in the server process; RLIMIT_NOFILE is %d here "
                         "(hard limit %d, cannot be raised further): capped at %d connections\n"
                         % (requested, requested + W11_FD_MARGIN, soft, hard, usable))
        params["connections"] = usable
    count = int(params["connections"])
    params.setdefault("generators", -(-count // usable))
    if count > 5000:  # several source addresses, away from W7's (127.0.0.2..): see the W7 note above
        params.setdefault("sources", max(2, -(-2 * count // PORTS_PER_SOURCE)))
        params.setdefault("sourceBase", 40)
    params.setdefault("connectTimeout", max(60, count // 200))
    params.setdefault("deadline", params["connectTimeout"] + params.get("window", 30) + params.get("settle", 2) + 240)


#: Connections W7's generator opens from one 127.0.0.x address before taking the next one.
PORTS_PER_SOURCE = 25000


def raise_nofile(wanted: int) -> None:
    """Raise this process's RLIMIT_NOFILE (children inherit it) to hold ``wanted`` descriptors:
    the soft limit up to the hard one, and the hard one too when allowed (root)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted <= soft:
        return
    if wanted > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return
        except (ValueError, OSError):
            sys.stderr.write("RLIMIT_NOFILE: %d wanted, hard limit %d: W7's largest stages may fail, "
                             "W11 is capped\n" % (wanted, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


def report_from_json(path: str) -> int:
    """Print the Markdown table and targets of a JSON written by an earlier run (for bench/README.md)."""
    with open(path) as fh:
        data = json.load(fh)
    summary = data["summary"]
    systems = list(summary)
    workloads = [w for w in WORKLOADS if any(w in summary[s] for s in systems)]
    print("Run of %s, medians of %d run(s), %s, %s cores.\n" % (data["started"], data["runs_per_cell"],
                                                             data["machine"]["node"], data["machine"]["cpus"]))
    print(render_table(summary, systems, workloads, markdown=True))
    checks = [c for c in data.get("targets") or [] if c["workload"] in workloads]
    if checks:
        print("\n| workload | target | measured | status |\n|---|---|---|---|")
        for c in checks:
            if c["workload"] in workloads:
                print("| %s | %s | %s | %s |" % (c["workload"], c["target"], c["measured"] or "-", c["status"]))
    print("\nVersions: " + ", ".join("%s %s" % (k, v) for k, v in data["versions"].items() if v))
    return 0


def snapshot_library(dest_root: str) -> str:
    """Copy the crossws_sync package as it is on disk now; return the directory to put on PYTHONPATH."""
    shutil.copytree(os.path.join(ROOT, "crossws_sync"), os.path.join(dest_root, "crossws_sync"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest_root


def snapshot_revision(revision: str, dest_root: str) -> str:
    """Extract crossws_sync/ as of git ``revision`` into ``dest_root``; return it for PYTHONPATH."""
    archive = subprocess.run(["git", "archive", "--format=tar", revision, "crossws_sync"], cwd=ROOT,
                             capture_output=True, timeout=60)
    if archive.returncode != 0:
        sys.exit("--baseline %s: %s" % (revision, archive.stderr.decode(errors="replace").strip()))
    subprocess.run(["tar", "-x", "-C", dest_root], input=archive.stdout, check=True, timeout=60)
    return dest_root


def git_state() -> Optional[str]:
    """``<short commit>`` plus ``+dirty`` when crossws_sync/ has uncommitted changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "crossws_sync"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def raise_nofile_limit() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit, for this process and the ones it starts."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


def check_setup() -> None:
    if not os.path.isdir(os.path.join(NODE_DIR, "node_modules", "ws")):
        sys.exit("bench/node/node_modules is missing: run bench/setup.sh first")
    for tool in ("node", "redis-server"):
        if not shutil.which(tool):
            sys.exit("%s is not on PATH" % tool)


def measure(system: str, workload: str, params: Dict[str, Any], index: int, args: argparse.Namespace,
            log_root: str) -> Dict[str, Any]:
    """One run of a cell; repeated (at most ``args.retries`` times) while other work on the machine
    took more than ``args.max_other`` % CPU during the measured window."""
    primary = PRIMARY[workload][0]
    for attempt in range(1 + max(0, args.retries)):
        log_dir = os.path.join(log_root, "%s-%s-%d" % (system, workload, index))
        os.makedirs(log_dir, exist_ok=True)
        t0 = time.monotonic()
        try:
            run = run_once(system, workload, params, log_dir)
        except Exception as exc:  # a failed run is reported, not fatal to the suite
            run = {"system": system, "workload": workload, "ok": False, "error": str(exc)}
        run.update(run=index, attempt=attempt, params=params)
        other = run.get("other_cpu_pct")
        noisy = bool(run.get("ok")) and args.max_other > 0 and other is not None and other > args.max_other
        print("%-16s %s run %d/%d: %s %s (%.1f s, other cpu %s%%)%s%s" % (
            system, workload, index + 1, args.runs, primary, fmt(run.get(primary), primary),
            time.monotonic() - t0, fmt(other, "_pct"), "" if run.get("ok") else "  ERROR " + str(run.get("error")),
            "  noisy, again" if noisy and attempt < args.retries else ""), file=sys.stderr, flush=True)
        if not noisy:
            break
    return run


def main(argv: Optional[List[str]] = None) -> int:
    global ORIGINAL_DIR, PROFILE, REDIS_TOPOLOGY
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--markdown-from"] and len(argv) == 2:
        return report_from_json(argv[1])
    args = parse_args(argv)
    raise_nofile_limit()  # W7 and W8 hold thousands of sockets; the children inherit it
    PROFILE = args.profile
    REDIS_TOPOLOGY = args.redis_topology
    if PROFILE and not shutil.which("py-spy"):
        sys.exit("--profile needs py-spy on PATH (pip install py-spy)")
    ORIGINAL_DIR = os.path.abspath(args.original_dir) if args.original_dir else None
    global LIBRARY_SNAPSHOT
    check_setup()
    if "W7" in args.workloads:
        raise_nofile(max(workload_params("W7", args.quick, args.set)["stages"]) + 2000)
    if "W11" in args.workloads:
        wanted = dict(WORKLOADS["W11"]["params"], **(WORKLOADS["W11"]["quick"] if args.quick else {}))
        for item in args.set:
            key, _, value = item.partition("=")
            if key.upper() == "W11.CONNECTIONS":
                wanted["connections"] = json.loads(value)
        raise_nofile(int(wanted["connections"]) + W11_FD_MARGIN)
    started = datetime.datetime.now(datetime.timezone.utc)
    run_versions = versions()  # before the runs: the commit that the snapshot below was taken from
    snapshot_root = tempfile.mkdtemp(prefix="crossws-bench-lib-")
    LIBRARY_SNAPSHOT = snapshot_library(snapshot_root)
    global BASELINE_SNAPSHOT
    if args.baseline:
        BASELINE_SNAPSHOT = snapshot_revision(args.baseline, tempfile.mkdtemp(prefix="crossws-bench-base-"))
        run_versions["baseline"] = args.baseline
    try:
        return run_suite(args, started, run_versions)
    finally:
        shutil.rmtree(snapshot_root, ignore_errors=True)
        if BASELINE_SNAPSHOT:
            shutil.rmtree(BASELINE_SNAPSHOT, ignore_errors=True)


def run_suite(args: argparse.Namespace, started: datetime.datetime, run_versions: Dict[str, Optional[str]]) -> int:
    """Run every (workload, run, system) cell, print the table and write the JSON."""
    log_root = os.path.join(RESULTS_DIR, "logs")
    os.makedirs(log_root, exist_ok=True)
    results: Dict[str, Dict[str, Dict[str, Any]]] = {}
    all_runs: List[Dict[str, Any]] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop what we started
    # Interleaved: run i of every system on a workload back to back, so that all systems of a
    # ratio see the same background load (the machine is shared and its load drifts).
    cells: Dict[Tuple[str, str], List[Dict[str, Any]]] = {}
    for workload in args.workloads:
        params = workload_params(workload, args.quick, args.set)
        for index in range(args.runs):
            for system in args.systems:
                if workload not in SYSTEMS[system]["workloads"]:
                    continue
                run = measure(system, workload, params, index, args, log_root)
                cells.setdefault((system, workload), []).append(run)
                all_runs.append(run)
    for (system, workload), runs in cells.items():
        results.setdefault(system, {})[workload] = aggregate(runs, workload)
    table = render_table(results, args.systems, args.workloads)
    header = "crossws_sync bench %s%s, medians of %d run(s), %s, %d cores" % (
        started.strftime("%Y-%m-%d %H:%M UTC"), " (quick)" if args.quick else "", args.runs,
        platform.node(), psutil.cpu_count() or 0)
    checks = check_targets(results) if any(x.startswith("crossws") for x in args.systems) and not args.quick else []
    targets = render_targets(checks, args.workloads)
    print(header)
    print(table)
    if targets:
        print()
        print(targets)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as fh:
        json.dump({"started": started.isoformat(), "quick": args.quick, "runs_per_cell": args.runs,
                   "machine": {"node": platform.node(), "cpus": psutil.cpu_count(),
                               "memory_gb": round(psutil.virtual_memory().total / 2 ** 30, 1)},
                   "versions": run_versions, "systems": {s: SYSTEMS[s]["about"] for s in args.systems},
                   "workloads": {w: WORKLOADS[w]["title"] for w in args.workloads},
                   "summary": results, "targets": checks, "runs": all_runs, "table": table}, fh, indent=1, default=str)
    print("wrote %s" % os.path.relpath(args.json, os.getcwd()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
