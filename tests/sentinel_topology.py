"""A Redis Sentinel topology for the tests: one primary, one replica and three sentinels.

Every process is the system's Redis 7 ``redis-server`` (sentinels run it with ``--sentinel``), on
free ports of 127.0.0.1, started and killed (by PID) by the suite. Failover settings are short:
quorum 2, ``down-after-milliseconds`` 1000, ``failover-timeout`` 3000.

    topology = SentinelTopology().start()
    topology.url            # redis+sentinel://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/mymaster
    topology.primary.kill() # SIGKILL; topology.wait_failover() returns the new primary's port
    topology.stop()
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
from typing import Any, Dict, Optional, Tuple

import redis as redis_py

from support import RedisProcess, redis_server_binary, wait_for

SERVICE = "mymaster"


class SentinelProcess(RedisProcess):
    """``redis-server <conf> --sentinel`` on a free port, monitoring ``SERVICE``."""

    def __init__(self, primary_port: int, *, quorum: int = 2, down_after_ms: int = 1000,
                 failover_timeout_ms: int = 3000) -> None:
        super().__init__()
        self.conf = os.path.join(self.dir, "sentinel.conf")
        with open(self.conf, "w") as handle:  # the sentinel rewrites it: it must be its own file
            handle.write("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\n" % (self.port, self.dir))
            handle.write("sentinel monitor %s 127.0.0.1 %d %d\n" % (SERVICE, primary_port, quorum))
            handle.write("sentinel down-after-milliseconds %s %d\n" % (SERVICE, down_after_ms))
            handle.write("sentinel failover-timeout %s %d\n" % (SERVICE, failover_timeout_ms))
            handle.write("sentinel parallel-syncs %s 1\n" % SERVICE)

    def start(self, timeout: float = 10.0) -> "SentinelProcess":
        self.proc = subprocess.Popen([redis_server_binary(), self.conf, "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("redis sentinel exited with %s" % self.proc.returncode)
            time.sleep(0.02)
        raise RuntimeError("redis sentinel did not answer on port %d" % self.port)

    def client(self) -> redis_py.Redis:
        return redis_py.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, decode_responses=True)

    def master(self) -> Dict[str, Any]:
        """``SENTINEL MASTER <service>`` as a dict."""
        client = self.client()
        try:
            return client.sentinel_master(SERVICE)
        finally:
            client.close()

    def primary_address(self) -> Optional[Tuple[str, int]]:
        client = self.client()
        try:
            reply = client.execute_command("SENTINEL", "get-master-addr-by-name", SERVICE)
        finally:
            client.close()
        return (reply[0], int(reply[1])) if reply else None


class SentinelTopology:
    """One primary, one replica of it (or more: ``replicas``), three sentinels (quorum 2)."""

    def __init__(self, *, sentinels: int = 3, down_after_ms: int = 1000, failover_timeout_ms: int = 3000,
                 replicas: int = 1) -> None:
        self.primary = RedisProcess()
        self.replicas = [RedisProcess(extra_args=["--replicaof", "127.0.0.1", str(self.primary.port)])
                         for _ in range(replicas)]
        self.replica = self.replicas[0]
        self.sentinels = [SentinelProcess(self.primary.port, down_after_ms=down_after_ms,
                                          failover_timeout_ms=failover_timeout_ms) for _ in range(sentinels)]
        self.servers = {server.port: server for server in [self.primary, *self.replicas]}

    @property
    def url(self) -> str:
        """The ``redis_config`` URL of the service."""
        return "redis+sentinel://%s/%s" % (",".join("127.0.0.1:%d" % s.port for s in self.sentinels), SERVICE)

    @property
    def config(self) -> Dict[str, Any]:
        """The ``redis_config`` dict of the service."""
        return {"sentinels": [["127.0.0.1", s.port] for s in self.sentinels], "service_name": SERVICE}

    def start(self, timeout: float = 20.0) -> "SentinelTopology":
        """Start everything; return once the replica is in sync and every sentinel knows the
        replica and the two other sentinels (so that a failover can be agreed on)."""
        self.primary.start()
        for replica in self.replicas:
            replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        wait_for(self._in_sync, timeout=timeout, interval=0.1, message="the replica to sync")
        wait_for(self._sentinels_know_everyone, timeout=timeout, interval=0.2,
                 message="the sentinels to discover the replica and each other")
        return self

    def _in_sync(self) -> bool:
        return all(in_sync(replica.port) for replica in self.replicas)

    def _sentinels_know_everyone(self) -> bool:
        for sentinel in self.sentinels:
            try:
                master = sentinel.master()
            except redis_py.RedisError:
                return False
            if int(master.get("num-slaves", 0)) < len(self.replicas) or int(master.get("num-other-sentinels", 0)) < len(self.sentinels) - 1:
                return False
        return True

    def primary_port(self) -> Optional[int]:
        """The primary's port as the first sentinel that answers says (``None``: none knows)."""
        for sentinel in self.sentinels:
            try:
                address = sentinel.primary_address()
            except redis_py.RedisError:
                continue
            if address:
                return address[1]
        return None

    def wait_failover(self, old_port: int, timeout: float = 20.0) -> int:
        """Wait until every sentinel names another primary than ``old_port``; return its port."""
        def moved() -> bool:
            ports = set()
            for sentinel in self.sentinels:
                try:
                    address = sentinel.primary_address()
                except redis_py.RedisError:
                    return False
                ports.add(address[1] if address else None)
            return len(ports) == 1 and old_port not in ports and None not in ports

        wait_for(moved, timeout=timeout, interval=0.05, message="the sentinels to fail over")
        port = self.primary_port()
        assert port is not None
        return port

    def stop(self) -> None:
        """Kill every process we started (by PID) and remove their directories."""
        for process in [*self.sentinels, *self.replicas, self.primary]:
            process.stop()


def in_sync(port: int) -> bool:
    """Whether the replica on 127.0.0.1:``port`` has its link to the primary up."""
    client = redis_py.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)
    try:
        return client.info("replication").get("master_link_status") == "up"
    except redis_py.RedisError:
        return False
    finally:
        client.close()


def role(port: int) -> str:
    """``master`` or ``slave``, as ``ROLE`` says on 127.0.0.1:``port``."""
    client = redis_py.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    try:
        reply = client.execute_command("ROLE")
        return reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
    finally:
        client.close()


__all__ = ["SERVICE", "SentinelProcess", "SentinelTopology", "in_sync", "role"]
