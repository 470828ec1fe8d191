"""Helpers shared by the test modules: free ports, real redis-server processes, polling waits."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from typing import Callable, List, Optional, Tuple

import gevent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float = 5.0, interval: float = 0.01, message: str = "") -> object:
    """Poll ``condition`` until it returns a truthy value; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, message or condition))
        gevent.sleep(interval)


def http_get(port: int, path: str) -> Tuple[int, str]:
    """``(status, body text)`` of a plain HTTP GET to 127.0.0.1."""
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as response:
        return response.status, response.read().decode()


def redis_server_binary() -> str:
    """Path of the system's redis-server, 7 or newer; the suite fails loudly (never skips) when it
    is missing or older (later features need Redis 7: sharded pub/sub, ACL selectors...)."""
    path = shutil.which("redis-server")
    if not path:
        raise RuntimeError("redis-server is not on PATH: install it (apt-get install redis-server)")
    version = redis_server_version(path)
    if int(version.split(".")[0]) < 7:
        raise RuntimeError("redis-server %s at %s is older than 7: install Redis 7 or newer, and make sure "
                           "nothing (such as a virtualenv's bin/) shadows it on PATH" % (version, path))
    return path


_versions: dict = {}


def redis_server_version(path: str) -> str:
    """``x.y.z`` of a redis-server binary (``redis-server --version``)."""
    if path not in _versions:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
        match = re.search(r"v=(\d+\.\d+\.\d+)", out)
        _versions[path] = match.group(1) if match else "0.0.0"
    return _versions[path]


class RedisProcess:
    """A real redis-server on a free port, started and killed by the test suite."""

    def __init__(self, port: Optional[int] = None, extra_args: Optional[List[str]] = None) -> None:
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])
        self.proc: Optional[subprocess.Popen] = None
        self.dir = tempfile.mkdtemp(prefix="crossws-redis-")

    @property
    def url(self) -> str:
        return "redis://127.0.0.1:%d" % self.port

    @property
    def config(self) -> dict:
        return {"host": "127.0.0.1", "port": self.port}

    def start(self, timeout: float = 10.0) -> "RedisProcess":
        args = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.dir, "--protected-mode", "no"] + self.extra_args
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith((b"+PONG", b"-NOAUTH")):  # -NOAUTH: up, with a password
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited with %s" % self.proc.returncode)
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer on port %d" % self.port)

    def kill(self) -> None:
        """SIGKILL the server (a crash, not a shutdown) and wait for it."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def restart(self) -> "RedisProcess":
        self.kill()
        return self.start()

    def command(self, *args: str) -> str:
        """Run one command with redis-cli-like raw RESP and return the first reply line."""
        parts = ["*%d\r\n" % len(args)] + ["$%d\r\n%s\r\n" % (len(a.encode()), a) for a in args]
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall("".join(parts).encode())
            return sock.recv(65536).decode(errors="replace")

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def terminate_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM a process we started, then SIGKILL it if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def repo_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_certificate(directory: str, name: str = "cert", common_name: str = "localhost") -> Tuple[str, str]:
    """A self-signed EC certificate for 127.0.0.1 / localhost made with openssl: ``(cert, key)`` paths."""
    cert, key = os.path.join(directory, name + ".pem"), os.path.join(directory, name + "-key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=" + common_name,
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def counting_sends(send: Callable[[bytes], int], sizes: List[int]) -> Callable[[bytes], int]:
    """Wrap a ``send``-like function so that the size of every call is appended to ``sizes``."""

    def counted(data: bytes) -> int:
        sizes.append(len(data))
        return send(data)

    return counted


def connect_user(node, user_id: str, path: str = "/?id="):
    """A raw WebSocket client connected to ``node`` as ``user_id``, once the node mapped it."""
    from rawclient import RawClient

    client = RawClient(node.port, path + user_id)
    wait_for(lambda: node.get_socket_instance(user_id) is not None)
    return client


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
