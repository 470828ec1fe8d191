"""A real Redis Cluster for the tests: 3 primaries with a replica each, started and killed by us."""
from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import redis

from support import redis_server_binary

REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = random.randint(20000, 45000)
        ok = True
        for candidate in (port, port + 10000):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", candidate))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no free port pair")


#: port -> password of the nodes started with one
_PASSWORDS: Dict[int, str] = {}


def resp(port: int, *args: str, timeout: float = 2.0) -> str:
    """One command through redis-cli (raw text answer)."""
    env = dict(os.environ)
    if port in _PASSWORDS:
        env["REDISCLI_AUTH"] = _PASSWORDS[port]
    out = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(port)] + list(args),
                         capture_output=True, text=True, timeout=timeout + 5, env=env)
    return out.stdout


class RedisCluster:
    """Six ``redis-server --cluster-enabled yes`` processes joined by ``redis-cli --cluster create``."""

    def __init__(self, size: int = 6, node_timeout_ms: int = 1000, replicas: int = 1,
                 password: Optional[str] = None) -> None:
        self.replicas = replicas
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="crossws-rcluster-")
        self.node_timeout_ms = node_timeout_ms
        self.ports: List[int] = []
        while len(self.ports) < size:
            port = cluster_port()
            if port not in self.ports and port + 10000 not in self.ports and port - 10000 not in self.ports:
                self.ports.append(port)
        self.procs: Dict[int, Optional[subprocess.Popen]] = {}

    def start(self, timeout: float = 30.0) -> "RedisCluster":
        if not os.access(REDIS_CLI, os.X_OK):  # a failure, never a skip: CI must not pass without it
            raise RuntimeError("redis-cli is needed for a Redis Cluster (apt-get install redis-tools; "
                               ".ci/run installs it)")
        for port in self.ports:
            self._spawn(port)
        for port in self.ports:
            self._wait_answers(port)
        nodes = ["127.0.0.1:%d" % port for port in self.ports]
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        out = subprocess.run([REDIS_CLI] + auth + ["--cluster", "create"] + nodes + ["--cluster-replicas", str(self.replicas), "--cluster-yes"],
                             capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError("redis-cli --cluster create failed: %s %s" % (out.stdout[-2000:], out.stderr[-2000:]))
        self.wait_ok(timeout)
        return self

    def _spawn(self, port: int) -> None:
        node_dir = os.path.join(self.dir, str(port))
        os.makedirs(node_dir, exist_ok=True)
        args = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", node_dir, "--protected-mode", "no", "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", str(self.node_timeout_ms)]
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
            _PASSWORDS[port] = self.password
        self.procs[port] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _wait_answers(self, port: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if resp(port, "PING").strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server on %d did not answer" % port)

    def live_ports(self) -> List[int]:
        return [port for port, proc in self.procs.items() if proc is not None and proc.poll() is None]

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` and agrees on the slots."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in resp(port, "CLUSTER", "INFO") for port in self.live_ports()):
                slots = {self._slots_signature(port) for port in self.live_ports()}
                # a replica that never synced cannot be promoted: wait for every replication link
                links = [resp(port, "INFO", "replication") for port in self.live_ports()]
                if len(slots) == 1 and all("role:master" in info or "master_link_status:up" in info for info in links):
                    return
            time.sleep(0.1)
        raise RuntimeError("cluster not ok within %.0fs" % timeout)

    def _slots_signature(self, port: int) -> str:
        return str(sorted(self.primaries_seen_by(port).items()))

    def primaries_seen_by(self, port: int) -> Dict[int, str]:
        """``{port: "slots"}`` of the primaries as one node sees them (CLUSTER NODES)."""
        result = {}
        for line in resp(port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) >= 8 and "master" in fields[2] and "fail" not in fields[2]:
                result[int(fields[1].split("@")[0].split(":")[1])] = " ".join(fields[8:])
        return result

    def primaries(self) -> List[int]:
        return sorted(self.primaries_seen_by(self.live_ports()[0]))

    def owner_port(self, name: str) -> int:
        """The port of the primary serving ``name``'s slot."""
        slot = int(resp(self.live_ports()[0], "CLUSTER", "KEYSLOT", name).strip())
        for port, ranges in self.primaries_seen_by(self.live_ports()[0]).items():
            for part in ranges.split():
                if part.startswith("["):
                    continue
                first, _, last = part.partition("-")
                if int(first) <= slot <= int(last or first):
                    return port
        raise RuntimeError("no owner for slot %d" % slot)

    def node_id(self, port: int) -> str:
        return resp(port, "CLUSTER", "MYID").strip()

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join("127.0.0.1:%d" % port for port in self.ports[:3])

    def kill(self, port: int) -> None:
        """SIGKILL one node (a crash)."""
        proc = self.procs.get(port)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        self.procs[port] = None

    def restart(self, port: int, timeout: float = 30.0) -> None:
        """Start a killed node again from its ``nodes.conf``: it rejoins the cluster, as a replica
        of whoever took its slots over; return once its replication link is up."""
        self._spawn(port)
        self._wait_answers(port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "master_link_status:up" in resp(port, "INFO", "replication"):
                self.wait_ok(timeout)
                return
            time.sleep(0.1)
        raise RuntimeError("restarted node %d did not become a synced replica" % port)

    def stop(self) -> None:
        for port in list(self.procs):
            self.kill(port)
            _PASSWORDS.pop(port, None)
        shutil.rmtree(self.dir, ignore_errors=True)


def slot_of(name: str) -> int:
    from crossws_sync.wire.slots import key_slot
    return key_slot(name)


def migrate_slot(cluster: RedisCluster, slot: int, source: int, target: int) -> Tuple[float, float]:
    """Move one slot with the CLUSTER SETSLOT steps (what ``redis-cli --cluster reshard`` does).

    Returns:
        When the slot was set MIGRATING, and when it was owned by the target everywhere.
    """
    source_id, target_id = cluster.node_id(source), cluster.node_id(target)
    started = time.monotonic()
    assert resp(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id).strip() == "OK"
    assert resp(source, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id).strip() == "OK"
    client = redis.Redis(host="127.0.0.1", port=source, password=cluster.password)
    try:
        for _ in range(1000):  # the keys of the slot (none for pure channels), as reshard moves them
            keys = client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100)
            if not keys:
                break
            auth = ["AUTH", cluster.password] if cluster.password else []
            client.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, *auth, "KEYS", *keys)
        else:
            raise AssertionError("keys of slot %d did not move" % slot)
    finally:
        client.close()
    for port in (target, source):
        assert resp(port, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id).strip() == "OK"
    for port in cluster.primaries():
        if port not in (source, target):
            resp(port, "CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
    return started, time.monotonic()
