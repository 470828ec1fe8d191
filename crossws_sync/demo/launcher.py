"""``python -m crossws_sync demo``: start a local cluster of chat nodes sharing one Redis.

What it does, in order:

1. Finds a Redis: ``--redis URL`` or ``$CROSSWS_REDIS_URL`` when given (it must answer PING);
   else the Redis at ``redis://127.0.0.1:6379`` if one answers PING (the address probed can be
   changed with ``$CROSSWS_DEMO_DEFAULT_REDIS``); else it starts its own ``redis-server`` found on
   ``PATH`` on a free port; else it stops and says how to install Redis. It prints which of
   these it did. Nothing is ever put on ``PATH``.
2. Starts N node processes (``python -m crossws_sync.demo.node``) on ports ``--port``,
   ``--port + 1``... (``--port 0``: free ports) and prints their URLs once all are ready. A node
   that dies later is reported and the others go on; the demo ends when none is left.
3. On Ctrl-C (SIGINT) or SIGTERM it stops every process it started, and only those: the nodes
   first (they close their clients with 1012 and a retry hint and leave the cluster), then the Redis it started.

This module uses threads and plain blocking calls (no gevent): it only runs processes.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Iterable, List, Mapping, Optional, Set, TextIO

from ..errors import ConfigError, CrossWSError, RedisUnavailableError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
#: Environment variable with the Redis URL to use (same as ``--redis``).
ENV_REDIS_URL = "CROSSWS_REDIS_URL"
#: Environment variable that changes the address probed before starting a Redis of our own.
ENV_DEFAULT_REDIS = "CROSSWS_DEMO_DEFAULT_REDIS"
MAX_NODES = 16


# Redis ---------------------------------------------------------------------------------------


def redis_problem(url: str, timeout: float = 1.0) -> Optional[str]:
    """Why the Redis at ``url`` cannot be used, or ``None`` when it answers PING.

    Args:
        url: a ``redis://`` / ``rediss://`` / ``unix://`` URL.
        timeout: connect and read time limit in seconds.
    """
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    except ValueError as exc:
        return "invalid Redis URL %r: %s" % (url, exc)
    try:
        client.ping()
        return None
    except redis.RedisError as exc:
        return str(exc) or exc.__class__.__name__
    finally:
        client.close()


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM if the launcher dies without stopping it (SIGKILL).
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _popen(args: List[str], **kwargs: object) -> "subprocess.Popen[Any]":
    # Own session: a Ctrl-C in the terminal reaches the launcher only, which stops the children
    # in order (nodes before the Redis they use).
    if sys.platform.startswith("linux"):
        kwargs["preexec_fn"] = _die_with_parent
    proc: "subprocess.Popen[Any]" = subprocess.Popen(args, start_new_session=True, **kwargs)  # type: ignore[call-overload]
    return proc


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _stop_process(proc: "subprocess.Popen[Any]", timeout: float) -> None:
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


class RedisChoice:
    """The Redis the demo uses, and the server process when the demo started it.

    Attributes:
        url: Redis URL given to every node.
        description: one sentence saying what was found or started.
        process: the ``redis-server`` the demo started (``None`` when it was already running).
    """

    def __init__(self, url: str, description: str, process: Optional["subprocess.Popen[Any]"] = None,
                 data_dir: Optional[str] = None) -> None:
        self.url = url
        self.description = description
        self.process = process
        self.data_dir = data_dir

    @property
    def started_here(self) -> bool:
        """Whether the demo started this Redis (and so stops it)."""
        return self.process is not None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the Redis the demo started (nothing otherwise). Idempotent."""
        if self.process is not None:
            _stop_process(self.process, timeout)
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def __repr__(self) -> str:
        return "RedisChoice(%r, started_here=%s)" % (self.url, self.started_here)


def start_redis_server(binary: str, *, origin: str, host: str = "127.0.0.1", port: Optional[int] = None,
                       timeout: float = 10.0) -> RedisChoice:
    """Start ``binary`` on a free port (no persistence) and wait until it answers PING.

    Args:
        binary: path of a ``redis-server`` executable.
        origin: where it came from, for the description ("redis-server on PATH").
        host, port: where it listens (port ``None``: a free port).
        timeout: seconds to wait for PING.

    Returns:
        a :class:`RedisChoice` that owns the process.

    Raises:
        RedisUnavailableError: the server exited or did not answer in time (its log is quoted).
    """
    port = port or _free_port(host)
    data_dir = tempfile.mkdtemp(prefix="crossws-demo-redis-")
    log_path = os.path.join(data_dir, "redis.log")
    args = [binary, "--port", str(port), "--bind", host, "--save", "", "--appendonly", "no", "--dir", data_dir,
            "--logfile", log_path, "--daemonize", "no"]
    with open(os.devnull, "wb") as devnull:
        proc = _popen(args, stdin=subprocess.DEVNULL, stdout=devnull, stderr=subprocess.STDOUT)
    url = "redis://%s:%d" % (host, port)
    choice = RedisChoice(url, "", proc, data_dir)
    deadline = time.monotonic() + timeout
    problem: Optional[str] = "not started"
    while time.monotonic() < deadline and proc.poll() is None:
        problem = redis_problem(url, timeout=0.5)
        if problem is None:
            choice.description = ("no Redis answered, so the demo started its own: %s (%s) at %s, pid %d; "
                                  "it is stopped with the demo" % (binary, origin, url, proc.pid))
            return choice
        time.sleep(0.05)
    log = ""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            log = "".join(handle.readlines()[-5:]).strip()
    except OSError:
        pass
    code = proc.poll()
    choice.stop()
    raise RedisUnavailableError("%s did not start (%s)%s" % (
        binary, "exit code %s" % code if code is not None else problem, (": " + log) if log else ""))


def find_redis(explicit_url: Optional[str] = None, *, env: Optional[Mapping[str, str]] = None,
               which: Callable[[str], Optional[str]] = shutil.which) -> RedisChoice:
    """Find the Redis for the demo, starting one when none answers (see the module docstring).

    Args:
        explicit_url: ``--redis``; takes precedence over ``$CROSSWS_REDIS_URL``.
        env: environment to read (``os.environ``).
        which: finds ``redis-server`` on ``PATH``.

    Returns:
        the :class:`RedisChoice`; call its :meth:`~RedisChoice.stop` when done.

    Raises:
        RedisUnavailableError: the given URL does not answer, or no Redis could be found or started.
    """
    env = os.environ if env is None else env
    given, source = (explicit_url, "--redis") if explicit_url else (env.get(ENV_REDIS_URL), "$" + ENV_REDIS_URL)
    if given:
        problem = redis_problem(given)
        if problem is not None:
            raise RedisUnavailableError("the Redis given by %s (%s) does not answer PING: %s" % (source, given, problem))
        return RedisChoice(given, "using the Redis given by %s: %s" % (source, given))
    default_url = env.get(ENV_DEFAULT_REDIS) or DEFAULT_REDIS_URL
    if redis_problem(default_url, timeout=0.5) is None:
        return RedisChoice(default_url, "found a running Redis at %s" % default_url)
    on_path = which("redis-server")
    if on_path:
        return start_redis_server(on_path, origin="redis-server on PATH")
    raise RedisUnavailableError(
        "no Redis answered at %s and no redis-server could be found. Either:\n"
        "  * install Redis (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis)\n"
        "  * or pass the URL of a running Redis: --redis redis://HOST:PORT" % default_url)


# Nodes ---------------------------------------------------------------------------------------


class NodeProcess:
    """One node process started by the demo, and what it printed."""

    def __init__(self, name: str, port: int, proc: "subprocess.Popen[Any]") -> None:
        self.name = name
        self.port = port
        self.proc = proc
        self.url: Optional[str] = None
        self.ready = threading.Event()
        self.output_closed = threading.Event()
        self.last_lines: Deque[str] = deque(maxlen=20)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


_NODE_BOOT = ("from gevent import monkey; monkey.patch_all(); import runpy; "
              "runpy.run_module('crossws_sync.demo.node', run_name='__main__', alter_sys=True)")


class DemoCluster:
    """Starts, watches and stops the node processes of the demo.

    Args:
        redis_url: the Redis every node uses.
        nodes: how many nodes.
        port: first port (``0``: each node takes a free port).
        host: address the nodes listen on.
        out: where the launcher and the nodes' output go.
        node_log_level: log level of the nodes (``INFO`` shows joins and leaves).
        heartbeat: cluster heartbeat period of the nodes in seconds.
    """

    def __init__(self, *, redis_url: str, nodes: int = 3, port: int = 8000, host: str = "127.0.0.1",
                 out: TextIO = sys.stdout, node_log_level: str = "INFO", heartbeat: float = 1.0) -> None:
        self.redis_url = redis_url
        self.count = nodes
        self.port = port
        self.host = host
        self.out = out
        self.node_log_level = node_log_level
        self.heartbeat = heartbeat
        self.nodes: List[NodeProcess] = []
        self._print_lock = threading.Lock()

    def say(self, text: str) -> None:
        """Print one line of the launcher's output."""
        with self._print_lock:
            self.out.write(text + "\n")
            self.out.flush()

    def start(self, stop: threading.Event, timeout: float = 60.0) -> bool:
        """Start every node and wait until all print their ready line.

        Returns:
            True when all are ready, False when ``stop`` was set meanwhile.

        Raises:
            CrossWSError: a node exited or did not get ready in time (its last lines are quoted).
        """
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for index in range(self.count):
            name = "node%d" % (index + 1)
            port = self.port + index if self.port else 0
            # Patch before anything imports crossws_sync (``-m`` would import the package, and with
            # it redis and ssl, before node.py could patch).
            args = [sys.executable, "-c", _NODE_BOOT, "--port", str(port), "--name", name,
                    "--redis", self.redis_url, "--host", self.host, "--parent-pid", str(os.getpid()),
                    "--heartbeat", str(self.heartbeat), "--log-level", self.node_log_level]
            proc = _popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=env, text=True, encoding="utf-8", errors="replace", bufsize=1)
            self.nodes.append(NodeProcess(name, port, proc))
        for node in self.nodes:
            threading.Thread(target=self._pump, args=(node,), name="demo-%s-output" % node.name, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not all(node.ready.is_set() for node in self.nodes):
            if stop.wait(0.05):
                return False
            for node in self.nodes:
                if not node.ready.is_set() and not node.alive:
                    node.output_closed.wait(2.0)
                    raise CrossWSError("%s exited with code %s before it was ready:\n  %s" % (
                        node.name, node.proc.returncode, "\n  ".join(node.last_lines) or "(no output)"))
            if time.monotonic() > deadline:
                late = [node.name for node in self.nodes if not node.ready.is_set()]
                raise CrossWSError("%s not ready after %.0f s" % (", ".join(late), timeout))
        return True

    def _pump(self, node: NodeProcess) -> None:
        from .node import READY_PATTERN

        assert node.proc.stdout is not None
        try:
            for raw in node.proc.stdout:
                line = raw.rstrip("\r\n")
                node.last_lines.append(line)
                match = READY_PATTERN.match(line)
                if match and not node.ready.is_set():
                    node.url = match.group("url")
                    node.ready.set()
                    continue
                self.say("[%s] %s" % (node.name, line))
        except (OSError, ValueError):  # pipe closed while stopping
            pass
        finally:
            node.output_closed.set()

    def dead(self) -> List[NodeProcess]:
        """Nodes that exited (nobody asked them to before :meth:`stop`)."""
        return [node for node in self.nodes if not node.alive]

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM every node still running, then SIGKILL those still there after ``timeout``.

        Returns:
            how many nodes were still running.
        """
        running = [node for node in self.nodes if node.alive]
        for node in running:
            node.proc.terminate()
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait(5)
        for node in self.nodes:
            node.output_closed.wait(2.0)
            if node.proc.stdout is not None:
                node.proc.stdout.close()
        return len(running)


# Command line --------------------------------------------------------------------------------


def parse_args(argv: Optional[Iterable[str]] = None) -> argparse.Namespace:
    """Options of ``python -m crossws_sync demo``."""
    parser = argparse.ArgumentParser(
        prog="python -m crossws_sync demo",
        description="Start a local cluster of chat nodes that share one Redis, and serve the chat page.")
    parser.add_argument("--port", type=int, default=8000,
                        help="port of the first node; the others use the next ones (0: free ports). Default 8000")
    parser.add_argument("--nodes", type=int, default=3, help="number of node processes (default 3)")
    parser.add_argument("--redis", default=None, metavar="URL",
                        help="Redis URL (default: $%s, else %s if it answers, else start one)" % (
                            ENV_REDIS_URL, DEFAULT_REDIS_URL))
    parser.add_argument("--host", default="127.0.0.1",
                        help="address the nodes listen on (default 127.0.0.1; 0.0.0.0 to open them to the network)")
    parser.add_argument("--quiet", action="store_true", help="only warnings from the nodes")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not 1 <= args.nodes <= MAX_NODES:
        parser.error("--nodes must be between 1 and %d" % MAX_NODES)
    if not 0 <= args.port <= 65535 - args.nodes:
        parser.error("--port must be between 0 and %d" % (65535 - args.nodes))
    return args


def busy_port(host: str, first: int, count: int) -> Optional[int]:
    """The first of ``first .. first + count - 1`` that cannot be bound on ``host``, or ``None``."""
    for port in range(first, first + count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                return port
    return None


def main(argv: Optional[Iterable[str]] = None, out: TextIO = sys.stdout) -> int:
    """Run the demo until Ctrl-C / SIGTERM.

    Returns:
        0 after a requested stop, 1 when Redis or a node failed, 2 on a usage error.
    """
    args = parse_args(argv)
    if args.port:
        taken = busy_port(args.host, args.port, args.nodes)
        if taken is not None:
            out.write("crossws_sync demo: port %d is in use; choose another first port with --port "
                      "(or --port 0 for free ports)\n" % taken)
            return 2
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    redis: Optional[RedisChoice] = None
    cluster: Optional[DemoCluster] = None
    status = 0
    try:
        try:
            redis = find_redis(args.redis)
        except (RedisUnavailableError, ConfigError) as exc:
            out.write("crossws_sync demo: %s\n" % exc)
            return 1
        out.write("crossws_sync demo: Redis: %s\n" % redis.description)
        out.flush()
        cluster = DemoCluster(redis_url=redis.url, nodes=args.nodes, port=args.port, host=args.host, out=out,
                              node_log_level="WARNING" if args.quiet else "INFO")
        try:
            if not cluster.start(stop):
                return 0
        except CrossWSError as exc:
            cluster.say("crossws_sync demo: %s" % exc)
            return 1
        _print_ready(cluster, redis)
        reported: Set[str] = set()
        while not stop.wait(0.25):
            # A node that dies is reported; the others go on (their users see it leave the cluster).
            for node in cluster.dead():
                if node.name not in reported:
                    reported.add(node.name)
                    left = len(cluster.nodes) - len(reported)
                    cluster.say("crossws_sync demo: %s exited with code %s; %d node%s still running" % (
                        node.name, node.proc.returncode, left, "" if left == 1 else "s"))
            if len(reported) == len(cluster.nodes):
                cluster.say("crossws_sync demo: no node left; stopping the demo")
                status = 1
                break
            if redis.process is not None and redis.process.poll() is not None:
                cluster.say("crossws_sync demo: the Redis server it started exited; stopping the demo")
                status = 1
                break
        return status
    finally:
        stopped = []
        if cluster is not None and cluster.nodes:
            count = cluster.stop()
            stopped.append("%d node%s" % (count, "" if count == 1 else "s"))
        if redis is not None and redis.started_here:
            pid = redis.process.pid if redis.process is not None else 0
            redis.stop()
            stopped.append("the Redis server it started (pid %d)" % pid)
        if stopped:
            out.write("crossws_sync demo: stopped %s.\n" % " and ".join(stopped))
            out.flush()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _print_ready(cluster: DemoCluster, redis: RedisChoice) -> None:
    lines = ["", "crossws_sync demo: %d node%s ready, sharing %s:" % (
        len(cluster.nodes), "" if len(cluster.nodes) == 1 else "s", redis.url)]
    for node in cluster.nodes:
        lines.append("  %-7s %s   (pid %d)" % (node.name, node.url, node.proc.pid))
    if len(cluster.nodes) > 1:
        lines.append("Open two of these URLs in two browser windows, pick a name in each, and chat:")
        lines.append("room messages, direct messages and the online list work across nodes.")
    else:
        lines.append("Open this URL in two browser windows, pick a name in each, and chat.")
    what = "the nodes and the Redis server it started" if redis.started_here else "the nodes (not your Redis)"
    lines.append("Press Ctrl-C to stop %s." % what)
    lines.append("")
    cluster.say("\n".join(lines))

