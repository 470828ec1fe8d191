"""What an idle WebSocket connection costs a crossws_sync server, piece by piece.

W7 (``bench/run.py``) gives one figure: KB of RSS per idle connection. This script says where
it goes. It runs the bench server (``bench/servers/crossws_server.py``'s handlers: each
connection is mapped to its user id) in this process, opens idle connections from a separate
client process (plain Python on epoll: it answers pings and sends the original client's
heartbeat, an empty text frame every 10 s), and at every stage, after ``gc.collect()``, reports
per connection:

* RSS (``/proc/self/status``), as W7 computes it: ``(RSS(n) - RSS(0)) / n``;
* anonymous mappings by size (``/proc/self/smaps``): CPython 3.11+ gives every greenlet that
  runs Python code its own frame stack, a separate 16 KiB mapping, of which RSS counts the
  pages touched;
* live objects by type (``gc.get_objects``, containers only) and greenlets alive;
* with ``--trace``: ``tracemalloc`` differences against stage 0, grouped by file and by line
  (top 25). Greenlet stacks saved to the heap on a switch are ``PyMem`` allocations, so they
  show up there (under the line that was running when the switch copied them).

Usage::

    python bench/memory_breakdown.py --stages 1000,5000            # RSS, mappings, objects
    python bench/memory_breakdown.py --stages 5000 --trace         # + tracemalloc (slower, more RSS)
    python bench/memory_breakdown.py --stages 5000,20000,50000 --sources 4
    python bench/memory_breakdown.py --library /tmp/before     # /tmp/before/crossws_sync (git archive)

More than ~28,000 connections need several source addresses (``--sources``: 127.0.0.2,
127.0.0.3, ...; the ephemeral port range is per address pair); both processes raise their own
``RLIMIT_NOFILE`` (the soft limit to the hard one, and the hard one too when running as root).
Everything is bounded: connecting has a budget (``--connect-timeout``), the client exits on its
own after ``--deadline`` seconds, and both stop when the measurement is done.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import time
from typing import Any, Dict, List, Tuple

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)


def raise_nofile(wanted: int) -> int:
    """Raise this process's RLIMIT_NOFILE to ``wanted`` (the hard limit too when allowed)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            wanted = hard
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return max(soft, wanted)


# --------------------------------------------------------------------------- the client process

_HEARTBEAT = b"\x81\x80\x00\x00\x00\x00"  # masked empty text frame, mask 0: the original's ping
_PONG = b"\x8a\x80\x00\x00\x00\x00"


def _handshake(port: int, index: int) -> bytes:
    return ("GET /?id=idle%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (index, port)).encode("ascii")


class IdleClients:
    """Idle WebSocket connections on one epoll: handshake, then heartbeats and pongs only."""

    def __init__(self, port: int, sources: int, heartbeat: float, first_source: int = 2) -> None:
        self.port = port
        # From 127.0.0.2 on: 127.0.0.1's ephemeral ports are left to whatever else runs here.
        self.sources = ["127.0.0.%d" % (first_source + i) for i in range(max(1, sources))]
        self.heartbeat = heartbeat
        self.epoll = select.epoll()
        self.socks: Dict[int, socket.socket] = {}
        self.pending: Dict[int, bytes] = {}  # fd -> response bytes so far (handshake not done)
        self.order: List[int] = []
        self.closed = 0
        self.heartbeats_sent = 0
        self.pings = 0
        self._hb_next = 0

    @property
    def alive(self) -> int:
        return len(self.socks) - len(self.pending)

    def open(self, target: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        batch = 200
        while len(self.socks) < target and time.monotonic() < deadline:
            for _ in range(min(batch, target - len(self.socks))):
                index = len(self.order)
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind((self.sources[index % len(self.sources)], 0))
                sock.settimeout(5.0)
                sock.connect(("127.0.0.1", self.port))
                sock.sendall(_handshake(self.port, index))
                sock.setblocking(False)
                fd = sock.fileno()
                self.socks[fd] = sock
                self.pending[fd] = b""
                self.order.append(fd)
                self.epoll.register(fd, select.EPOLLIN)
            while self.pending and time.monotonic() < deadline:
                self.poll(0.05)
        while self.pending and time.monotonic() < deadline:
            self.poll(0.05)

    def poll(self, timeout: float) -> None:
        for fd, _ in self.epoll.poll(timeout):
            sock = self.socks.get(fd)
            if sock is None:
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self._drop(fd)
                continue
            if fd in self.pending:
                head = self.pending[fd] + data
                end = head.find(b"\r\n\r\n")
                if end < 0:
                    self.pending[fd] = head
                    continue
                if not head.startswith(b"HTTP/1.1 101"):
                    sys.stderr.write("refused: %r\n" % head[:80])
                    self._drop(fd)
                    continue
                del self.pending[fd]
                data = head[end + 4:]
            self._frames(sock, data)
        self._heartbeats()

    def _frames(self, sock: socket.socket, data: bytes) -> None:
        pos = 0
        while pos + 2 <= len(data):
            opcode, length = data[pos] & 0x0F, data[pos + 1] & 0x7F
            header = 2 + (2 if length == 126 else 8 if length == 127 else 0)
            if length == 126:
                length = struct.unpack_from("!H", data, pos + 2)[0]
            elif length == 127:
                length = struct.unpack_from("!Q", data, pos + 2)[0]
            if opcode == 0x9:  # ping: answer (payloads are empty from the server's sweep)
                self.pings += 1
                try:
                    sock.send(_PONG)
                except OSError:
                    pass
            pos += header + length

    def _heartbeats(self) -> None:
        # Round robin: every connection sends one heartbeat per interval, spread over it.
        if self.heartbeat <= 0 or not self.order:
            return
        now = time.monotonic()
        if now < self._hb_next:
            return
        step = 0.1
        self._hb_next = now + step
        share = max(1, int(len(self.order) * step / self.heartbeat))
        for _ in range(share):
            fd = self.order[self.heartbeats_sent % len(self.order)]
            self.heartbeats_sent += 1
            sock = self.socks.get(fd)
            if sock is not None and fd not in self.pending:
                try:
                    sock.send(_HEARTBEAT)
                except OSError:
                    pass

    def _drop(self, fd: int) -> None:
        sock = self.socks.pop(fd, None)
        self.pending.pop(fd, None)
        self.closed += 1
        try:
            self.epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        if sock is not None:
            sock.close()

    def close_all(self) -> None:
        for fd in list(self.socks):
            self._drop(fd)


def client_main(args: argparse.Namespace) -> None:
    """The client process: commands on stdin (``open N``, ``quit``), one JSON line per answer."""
    raise_nofile(args.nofile)
    clients = IdleClients(args.port, args.sources, args.heartbeat)
    deadline = time.monotonic() + args.deadline
    stdin = sys.stdin.fileno()
    clients.epoll.register(stdin, select.EPOLLIN)
    buffered = b""
    while time.monotonic() < deadline:
        ready = [fd for fd, _ in clients.epoll.poll(0.05) if fd == stdin]
        clients.poll(0)
        if not ready:
            continue
        chunk = os.read(stdin, 4096)
        if not chunk:
            break
        buffered += chunk
        while b"\n" in buffered:
            line, buffered = buffered.split(b"\n", 1)
            words = line.decode().split()
            if not words:
                continue
            if words[0] == "open":
                started = time.monotonic()
                clients.open(int(words[1]), args.connect_timeout)
                print(json.dumps({"alive": clients.alive, "closed": clients.closed,
                                  "seconds": round(time.monotonic() - started, 1)}), flush=True)
            elif words[0] == "idle":  # keep serving heartbeats and pings for N seconds
                end = time.monotonic() + float(words[1])
                while time.monotonic() < end:
                    clients.poll(0.05)
                print(json.dumps({"alive": clients.alive, "closed": clients.closed, "pings": clients.pings,
                                  "heartbeats": clients.heartbeats_sent}), flush=True)
            elif words[0] == "quit":
                clients.close_all()
                return
    clients.close_all()


# --------------------------------------------------------------------------- the server side

def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def anon_mappings() -> Dict[int, Tuple[int, int]]:
    """Anonymous mappings by size in KiB: (count, RSS KiB)."""
    out: Dict[int, List[int]] = collections.defaultdict(lambda: [0, 0])
    size = None
    anon = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                fields = line.split()
                anon = len(fields) < 6 or fields[5] in ("[heap]",) or not fields[5].startswith("/")
                size = None
            elif first == "Size:":
                size = int(line.split()[1])
            elif first == "Rss:" and anon and size is not None:
                entry = out[size]
                entry[0] += 1
                entry[1] += int(line.split()[1])
    return {k: (v[0], v[1]) for k, v in out.items()}


def object_counts() -> Dict[str, int]:
    import gc

    counts: Dict[str, int] = collections.Counter()
    for obj in gc.get_objects():
        kind = type(obj)
        counts["%s.%s" % (getattr(kind, "__module__", "?"), getattr(kind, "__qualname__", kind.__name__))] += 1
    return dict(counts)


class Stage:
    def __init__(self, connections: int, trace: bool) -> None:
        import gc

        import greenlet

        gc.collect()
        self.connections = connections
        self.rss = rss_bytes()
        self.fds = len(os.listdir("/proc/self/fd"))
        self.mappings = anon_mappings()
        self.objects = object_counts()
        self.greenlets = sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet))
        self.snapshot = None
        if trace:
            import tracemalloc

            self.snapshot = tracemalloc.take_snapshot().filter_traces([
                tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)])


def report(base: Stage, stage: Stage, top: int) -> Dict[str, Any]:
    n = stage.connections - base.connections
    result: Dict[str, Any] = {"connections": stage.connections, "rss_mb": round(stage.rss / 2 ** 20, 1),
                              "kb_per_conn": round((stage.rss - base.rss) / 1024.0 / n, 2),
                              "greenlets_per_conn": round((stage.greenlets - base.greenlets) / n, 2),
                              "fds_per_conn": round((stage.fds - base.fds) / n, 2)}
    mappings = []
    for size in sorted(set(stage.mappings) | set(base.mappings)):
        count = stage.mappings.get(size, (0, 0))[0] - base.mappings.get(size, (0, 0))[0]
        rss = stage.mappings.get(size, (0, 0))[1] - base.mappings.get(size, (0, 0))[1]
        if count >= n * 0.5:
            mappings.append({"size_kb": size, "per_conn": round(count / n, 2), "rss_kb_per_conn": round(rss / n, 2)})
    result["anon_mappings"] = mappings
    deltas = [(name, stage.objects.get(name, 0) - base.objects.get(name, 0))
              for name in set(stage.objects) | set(base.objects)]
    result["objects_per_conn"] = {name: round(d / n, 2) for name, d in sorted(deltas, key=lambda x: -x[1])[:top]
                                  if d >= n * 0.5}
    if stage.snapshot is not None and base.snapshot is not None:
        by_file = stage.snapshot.compare_to(base.snapshot, "filename")
        by_line = stage.snapshot.compare_to(base.snapshot, "lineno")
        result["traced_bytes_per_conn"] = round(sum(s.size_diff for s in by_file) / n, 1)
        result["by_file"] = [{"file": _short(s.traceback[0].filename), "bytes_per_conn": round(s.size_diff / n, 1),
                              "blocks_per_conn": round(s.count_diff / n, 2)} for s in by_file[:top]]
        result["by_line"] = [{"line": "%s:%d" % (_short(s.traceback[0].filename), s.traceback[0].lineno),
                              "bytes_per_conn": round(s.size_diff / n, 1),
                              "blocks_per_conn": round(s.count_diff / n, 2)} for s in by_line[:top]]
    return result


def _short(path: str) -> str:
    for marker in ("site-packages/", "crossws_sync/", "lib/python"):
        index = path.find(marker)
        if index >= 0:
            return path[index:]
    return path


def server_main(args: argparse.Namespace) -> None:
    from gevent import monkey

    monkey.patch_all()
    import gevent

    stages = [int(s) for s in args.stages.split(",") if s]
    raise_nofile(max(stages) + 1000)
    if args.trace:
        import tracemalloc

        tracemalloc.start(1)
    sys.path.insert(0, os.path.join(BENCH_DIR, "servers"))
    sys.path.insert(0, os.path.abspath(args.library) if args.library else REPO)
    from crossws_server import build  # the bench server's handlers (W7's)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    adapter = build("127.0.0.1", port, 0, 0)
    adapter.start()
    service = adapter._service  # the connections themselves, to count them
    client = subprocess.Popen([sys.executable, os.path.abspath(__file__), "client", "--port", str(port),
                               "--sources", str(args.sources), "--nofile", str(max(stages) + 1000),
                               "--deadline", str(args.deadline), "--connect-timeout", str(args.connect_timeout)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    from gevent.os import make_nonblocking, nb_read

    make_nonblocking(client.stdout.fileno())
    lines = [b""]

    def ask(command: str, timeout: float) -> Dict[str, Any]:
        client.stdin.write((command + "\n").encode())
        client.stdin.flush()
        end = time.monotonic() + timeout
        while b"\n" not in lines[0]:
            if time.monotonic() > end:
                raise RuntimeError("client did not answer %r" % command)
            with gevent.Timeout(max(0.1, end - time.monotonic()), False):
                chunk = nb_read(client.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError("client exited")
                lines[0] += chunk
        line, lines[0] = lines[0].split(b"\n", 1)
        return json.loads(line)

    import crossws_sync

    results: Dict[str, Any] = {"python": sys.version.split()[0], "library": os.path.dirname(crossws_sync.__file__),
                               "stages": []}
    try:
        gevent.sleep(0.5)
        base = Stage(0, args.trace)
        results["rss_mb_0"] = round(base.rss / 2 ** 20, 1)
        for target in stages:
            opened = ask("open %d" % target, args.connect_timeout + 30)
            end = time.monotonic() + 10
            while len(service.clients) < opened["alive"] and time.monotonic() < end:
                gevent.sleep(0.05)
            idle = ask("idle %s" % args.settle, args.settle + 30)
            stage = Stage(len(service.clients), args.trace)
            entry = report(base, stage, args.top)
            entry["client"] = dict(opened, **idle)
            results["stages"].append(entry)
            sys.stderr.write("%d connections: %.2f KB per connection (RSS %.1f MB)\n"
                             % (stage.connections, entry["kb_per_conn"], stage.rss / 2 ** 20))
    finally:
        try:
            client.stdin.write(b"quit\n")
            client.stdin.flush()
            client.wait(30)
        except Exception:  # the client may be gone already: then make sure it is
            client.kill()
    print(json.dumps(results, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="role")
    client = sub.add_parser("client")
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--sources", type=int, default=1)
    client.add_argument("--nofile", type=int, default=20000)
    client.add_argument("--heartbeat", type=float, default=10.0)
    client.add_argument("--deadline", type=float, default=900.0)
    client.add_argument("--connect-timeout", type=float, default=120.0)
    parser.add_argument("--stages", default="1000,5000", help="connection counts, comma-separated")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds idle before each measurement")
    parser.add_argument("--sources", type=int, default=1, help="client source addresses, from 127.0.0.2 on")
    parser.add_argument("--trace", action="store_true", help="tracemalloc differences (slower)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--deadline", type=float, default=900.0, help="the client exits after this many seconds")
    parser.add_argument("--connect-timeout", type=float, default=120.0)
    parser.add_argument("--library", default="", help="a directory holding another crossws_sync/ (before/after)")
    args = parser.parse_args()
    if args.role == "client":
        client_main(args)
    else:
        server_main(args)


if __name__ == "__main__":
    main()
