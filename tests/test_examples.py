"""The original README's examples run as real processes, with every expected delivery counted."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from support import free_port, port_open, repo_root, terminate_process, wait_for

EXAMPLES = os.path.join(repo_root(), "examples")


def _python(*args, **kwargs):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, *args], cwd=repo_root(), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.mark.timeout(120)
def test_ws_cross_server_example_five_servers_fifty_clients_and_boss(redis_server):
    ports = [free_port() for _ in range(5)]
    servers = [_python(os.path.join(EXAMPLES, "ws_cross_server", "wsserver.py"), "--name=server%s" % "ABCDE"[i],
                       "--port=%d" % port, "--redis=" + redis_server.url, "--quiet") for i, port in enumerate(ports)]
    clients = boss = None
    try:
        wait_for(lambda: all(port_open(p) for p in ports), timeout=30, message="five servers")
        clients = _python(os.path.join(EXAMPLES, "ws_cross_server", "clients.py"), "--ports=" + ",".join(map(str, ports)),
                          "--seed=7", "--duration=60")
        lines = []
        other = []

        def read_until(predicate, timeout):
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                line = clients.stdout.readline()
                if not line:
                    break
                if line.startswith("{"):
                    lines.append(json.loads(line))
                    if predicate():
                        return True
                else:
                    other.append(line)
            return False

        joined_count = lambda: sum(1 for l in lines if l.get("event") == "joined")  # noqa: E731
        opened = lambda: sum(1 for l in lines if l.get("event") == "open")  # noqa: E731
        assert read_until(lambda: opened() == 50 and joined_count() == 10, 30), (
            "50 clients open (%d), 10 joined (%d); other output: %s" % (opened(), joined_count(), "".join(other[-20:])))
        time.sleep(1.0)  # let every node see the directory deltas of the others (heartbeat 2 s)
        boss = _python(os.path.join(EXAMPLES, "ws_cross_server", "boss.py"), "--port=%d" % ports[0], "--interval=0.5")
        room_1000 = {l["client"] for l in lines if l.get("event") == "joined" and l["room"] == "1000"}
        expected = 50 + 1 + 4 + len(room_1000)
        says = lambda: [l for l in lines if "say" in l]  # noqa: E731
        assert read_until(lambda: len(says()) >= expected - 0, 30), "got %d of %d says" % (len(says()), expected)
        by_action = {}
        for line in says():
            by_action.setdefault(line["say"]["action"], []).append(line["client"])
        assert sorted(by_action["broadcast"]) == list(range(1, 51))
        assert by_action["toPlayer"] == [13]
        assert sorted(by_action["toPlayers"]) == [3, 10, 25, 37]
        assert sorted(by_action.get("toRoom", [])) == sorted(room_1000)
        boss_out, _ = boss.communicate(timeout=30)
        assert boss_out.count("Message sent successfully") == 4
        assert "Hello every one" in boss_out  # the boss is a client too and gets the broadcast
    finally:
        for proc in [p for p in (clients, boss) if p] + servers:
            terminate_process(proc)
