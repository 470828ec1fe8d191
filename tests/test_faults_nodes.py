"""Node faults and graceful shutdown, with real server processes.

* a node SIGKILLed under connected users leaves the cluster registry and stats within the
  documented expiry (3 heartbeat intervals + 0.5 s); its users, connected through a TCP
  balancer, reconnect with the client's backoff schedule to the surviving nodes and are
  reachable again;
* SIGTERM to a standalone node and to gunicorn (one worker, then the master) sends every client
  a close frame (1012 with a retry hint) before the process exits, deregisters the node at once (far
  sooner than the expiry) and ends within the shutdown / graceful timeout.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any, Dict, List

import gevent
import pytest

from crossws_sync import WebSocketConnector, WebSocketCrossServerAdapter
from crossws_sync.core.backoff import reconnect_delay
from faultkit import NodeProcess, TcpBalancer, ask, record, start_nodes
from rawclient import RawClient
from support import free_port, repo_root, terminate_process, wait_for


@pytest.fixture
def cleanup():
    """Things to stop at teardown, in reverse order (processes, adapters, clients)."""
    items: List[Any] = []
    yield items
    for item in reversed(items):
        try:
            if isinstance(item, (NodeProcess,)):
                item.stop()
            elif isinstance(item, subprocess.Popen):
                terminate_process(item)
            elif isinstance(item, WebSocketCrossServerAdapter):
                item.close(timeout=1)
            elif isinstance(item, WebSocketConnector):
                item.manual_close()
            else:
                item.close()
        except Exception:  # teardown must go on
            pass


def _observer(redis_url: str, heartbeat: float) -> WebSocketCrossServerAdapter:
    """An emitter-only node in the test process: it sees the registry like any other node."""
    observer = WebSocketCrossServerAdapter(server_name="observer", redis_config=[redis_url],
                                           node_heartbeat_interval=heartbeat)
    return observer.start()


def _names(observer: WebSocketCrossServerAdapter) -> List[str]:
    return sorted(n["server_name"] for n in observer.get_cluster_nodes() if n["server_name"] != "observer")


class CloseWatcher:
    """Reads a raw client until the server's close frame, answers it, and records when it came."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.close: Any = None
        self.at = 0.0
        self.greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        try:
            code, reason = self.client.recv_close(timeout=30)
        except Exception as exc:  # EOF without a close frame is a failure the test reports
            self.close = ("no close frame", repr(exc))
            self.at = time.monotonic()
            return
        self.at = time.monotonic()
        self.close = (code, reason)
        self.client.close(code)  # complete the closing handshake, as a browser does


HB = 0.5  # heartbeat of the SIGKILL test: expiry = 3 * 0.5 + 0.5 = 2.0 s


@pytest.mark.timeout(90)
def test_sigkilled_node_leaves_the_registry_and_its_users_reconnect_elsewhere(redis_server, cleanup):
    expiry = 3 * HB + 0.5
    nodes = start_nodes([dict(name=name, redis_urls=[redis_server.url], heartbeat=HB) for name in ("n1", "n2", "n3")])
    cleanup.extend(nodes)
    observer = _observer(redis_server.url, HB)
    cleanup.append(observer)
    wait_for(lambda: _names(observer) == ["n1", "n2", "n3"], timeout=10, message="three nodes in the registry")
    balancer = TcpBalancer([node.port for node in nodes])
    cleanup.append(balancer)

    users = ["u%02d" % i for i in range(30)]
    got: Dict[str, List[Any]] = {user: [] for user in users}
    schedules: Dict[str, List[float]] = {user: [] for user in users}
    clients: Dict[str, WebSocketConnector] = {}
    options = dict(fast_reconnect_interval=0.25, fast_reconnect_threshold=3, reconnect_max_interval=2.0,
                   ping_interval=1.0, pong_timeout=1.0, connect_timeout=2.0, auto_reconnect=True)
    for user in users:
        client = WebSocketConnector("ws://127.0.0.1:%d/" % balancer.port, custom_params={"id": user}, **options)
        client.on("dm", got[user].append)
        client.on("reconnect", lambda info, user=user: schedules[user].append(info.timeout))
        clients[user] = client
        cleanup.append(client)
    wait_for(lambda: all(c.connected for c in clients.values()), timeout=15, message="30 clients connected")
    wait_for(lambda: observer.get_cluster_stats()["online_users"] == 30, timeout=10, message="30 users online")
    victims = [user for user in users if observer.find_user_node(user) == "n3"]
    assert len(victims) >= 5, "the balancer should have put a third of the users on n3"
    for user in users:
        observer.to_socket_id(user, "dm", 0)
    wait_for(lambda: all(got[user] == [0] for user in users), timeout=10, message="every user reachable before")
    rss_before = {node.name: node.rss() for node in nodes[:2]}

    t_kill = time.monotonic()
    nodes[2].signal(signal.SIGKILL)
    # each victim scheduled a reconnect (with full jitter some are back before others noticed)
    wait_for(lambda: all(schedules[v] for v in victims), timeout=5, message="the victims to notice")
    wait_for(lambda: all(clients[v].connected for v in victims), timeout=15, message="victims reconnected")
    t_reconnected = time.monotonic()
    wait_for(lambda: "n3" not in _names(observer), timeout=expiry + 5, interval=0.02, message="n3 to expire")
    t_gone = time.monotonic()
    assert t_gone - t_kill <= expiry + 0.5
    wait_for(lambda: all(observer.find_user_node(v) in ("n1", "n2") for v in victims), timeout=10,
             message="victims mapped on the surviving nodes")
    stats = observer.get_cluster_stats()
    assert set(stats["nodes"]) == {"observer", "n1", "n2"} and stats["online_users"] == 30
    t_stats = time.monotonic()

    for user in users:
        observer.to_socket_id(user, "dm", 1)
    wait_for(lambda: all(got[user][-1:] == [1] for user in users), timeout=10, message="every user reachable after")
    t_reachable = time.monotonic()
    delivered = sum(1 for user in users if 1 in got[user])
    first_delays = {schedules[v][0] for v in victims}
    # full jitter (the client's default): spread over [0, the schedule's delay], not all at once
    assert all(0 <= delay <= reconnect_delay(1, threshold=3, interval=0.25, max_interval=2.0) for delay in first_delays)
    assert len(first_delays) > 1
    assert all(not schedules[user] for user in users if user not in victims), "only n3's users reconnect"
    record("node_sigkill", users=len(users), victims=len(victims), expiry_s=expiry,
           registry_drop_s=round(t_gone - t_kill, 3), victims_reconnected_s=round(t_reconnected - t_kill, 3),
           stats_consistent_s=round(t_stats - t_kill, 3), all_reachable_s=round(t_reachable - t_kill, 3),
           dms_sent=len(users), dms_delivered=delivered,
           reconnect_attempts=sorted(len(schedules[v]) for v in victims),
           rss_mib_before={k: round(v / 2 ** 20, 1) for k, v in rss_before.items()},
           rss_mib_after={node.name: round(node.rss() / 2 ** 20, 1) for node in nodes[:2]})


@pytest.mark.timeout(90)
def test_sigterm_standalone_node_sends_1012_to_every_client_and_leaves_the_cluster_at_once(redis_server, cleanup):
    heartbeat = 2.0  # expiry 6.5 s: a deregistration faster than 1 s can only be the goodbye
    node = NodeProcess("solo", redis_urls=[redis_server.url], heartbeat=heartbeat).wait_ready()
    cleanup.append(node)
    observer = _observer(redis_server.url, heartbeat)
    cleanup.append(observer)
    wait_for(lambda: _names(observer) == ["solo"], timeout=10, message="the node in the registry")
    watchers = [CloseWatcher(RawClient(node.port, "/?id=g%d" % i)) for i in range(25)]
    silent = [RawClient(node.port, "/?id=s%d" % i) for i in range(2)]  # never answer the close
    cleanup.extend(silent)
    wait_for(lambda: observer.get_cluster_stats()["online_users"] == 27, timeout=10, message="27 users online")

    t_term = time.monotonic()
    node.signal(signal.SIGTERM)
    wait_for(lambda: "solo" not in _names(observer), timeout=5, interval=0.01, message="the goodbye")
    t_gone = time.monotonic()
    wait_for(lambda: all(w.close is not None for w in watchers), timeout=10, message="every close frame")
    silent_closes = [client.recv_close(timeout=10) for client in silent]
    # until the process is gone (the silent clients hold it ~5 s: more than 2 heartbeats), the
    # node must not come back in the registry (a heartbeat or delta after the goodbye would)
    reappeared = []
    while node.alive() and time.monotonic() - t_term < 15:
        if "solo" in _names(observer):
            reappeared.append(round(time.monotonic() - t_term, 3))
        gevent.sleep(0.02)
    code = node.wait_exit(15)
    t_exit = time.monotonic()
    assert not reappeared, "back in the registry after its goodbye at %s s" % reappeared[:3]
    closes = [w.close for w in watchers] + silent_closes
    assert {code for code, _ in closes} == {1012}
    assert all(re.fullmatch(r"service restart retry=\d+\.\d+s", reason) for _, reason in closes), closes[:3]
    assert code == 0 and "EXITED" in node.log()
    assert t_gone - t_term < 1.0
    assert t_exit - t_term < 5.0 + 2.0  # close timeout of the silent clients + the HTTP server stop
    assert max(w.at for w in watchers) < t_exit
    record("shutdown_standalone_sigterm", clients=len(watchers) + len(silent), close_code=1012,
           deregistered_s=round(t_gone - t_term, 3), expiry_s=3 * heartbeat + 0.5,
           last_close_frame_s=round(max(w.at for w in watchers) - t_term, 3),
           exit_s=round(t_exit - t_term, 3), silent_clients=len(silent))


def _gunicorn(port: int, redis_url: str, graceful: float) -> subprocess.Popen:
    env = dict(os.environ, CROSSWS_REDIS_URL=redis_url, CROSSWS_NODE_HEARTBEAT="2.0",
               PYTHONPATH=repo_root() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = [sys.executable, "-m", "gunicorn", "-k", "crossws_sync.gunicorn.GeventWebSocketWorker", "-w", "2",
            "-b", "127.0.0.1:%d" % port, "--no-control-socket", "--graceful-timeout", str(graceful),
            "examples.flask_gunicorn.app:app"]
    return subprocess.Popen(args, cwd=repo_root(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _http_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.timeout(90)
def test_sigterm_to_a_gunicorn_worker_then_to_the_master(redis_server, cleanup):
    port, graceful = free_port(), 5
    proc = _gunicorn(port, redis_server.url, graceful)
    cleanup.append(proc)
    wait_for(lambda: _http_ok(port), timeout=30, message="gunicorn to serve")
    observer = _observer(redis_server.url, 2.0)
    cleanup.append(observer)
    wait_for(lambda: len(_names(observer)) == 2, timeout=15, message="two worker nodes")

    by_pid: Dict[int, List[CloseWatcher]] = {}
    node_of: Dict[int, str] = {}
    for batch in range(20):
        for i in range(10):
            client = RawClient(port, "/ws?id=c%d_%d" % (batch, i))
            reply = ask(client, "whoami", timeout=10)
            node_of[reply["pid"]] = reply["node"]
            by_pid.setdefault(reply["pid"], []).append(CloseWatcher(client))
        if len(by_pid) == 2 and min(len(v) for v in by_pid.values()) >= 3:
            break
    assert len(by_pid) == 2, "connections should land on both workers"
    (victim_pid, victims), (other_pid, others) = sorted(by_pid.items(), key=lambda kv: -len(kv[1]))

    # 1. SIGTERM to one worker: its clients get 1012, its node leaves at once, the master replaces it.
    t_term = time.monotonic()
    os.kill(victim_pid, signal.SIGTERM)
    wait_for(lambda: node_of[victim_pid] not in _names(observer), timeout=5, interval=0.01, message="goodbye")
    t_gone = time.monotonic()
    while time.monotonic() - t_gone < 0.5:  # and it stays gone (no delta or heartbeat after the goodbye)
        assert node_of[victim_pid] not in _names(observer), "back in the registry after its goodbye"
        gevent.sleep(0.01)
    wait_for(lambda: all(w.close is not None for w in victims), timeout=graceful + 2, message="1012 to its clients")
    assert {w.close[0] for w in victims} == {1012}
    assert all(re.fullmatch(r"service restart retry=\d+\.\d+s", w.close[1]) for w in victims)
    assert all(w.close is None for w in others), "the other worker's clients are not touched"
    wait_for(lambda: len(_names(observer)) == 2 and node_of[victim_pid] not in _names(observer), timeout=20,
             message="the replacement worker in the registry")
    t_replaced = time.monotonic()
    worker_closes = max(w.at for w in victims) - t_term

    # 2. SIGTERM to the master: every remaining client gets 1012, every worker node leaves, all exit in time.
    t_master = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        wait_for(lambda: not _names(observer), timeout=5, interval=0.01)
    except AssertionError:
        raise AssertionError("still registered: %r" % observer.get_cluster_nodes())
    t_all_gone = time.monotonic()
    wait_for(lambda: all(w.close is not None for w in others), timeout=graceful + 2, message="1012 to the rest")
    assert {w.close[0] for w in others} == {1012}
    assert all(re.fullmatch(r"service restart retry=\d+\.\d+s", w.close[1]) for w in others)
    assert len({w.close[1] for w in others}) > 1  # the retry hints are spread
    proc.wait(graceful + 5)
    t_exit = time.monotonic()
    assert proc.returncode == 0
    assert t_gone - t_term < 1.0 and t_all_gone - t_master < 1.0
    assert t_exit - t_master < graceful
    record("shutdown_gunicorn_sigterm", graceful_timeout_s=graceful, close_code=1012,
           worker_clients=len(victims), worker_deregistered_s=round(t_gone - t_term, 3),
           worker_last_close_s=round(worker_closes, 3), replacement_registered_s=round(t_replaced - t_term, 3),
           master_clients=len(others), master_deregistered_s=round(t_all_gone - t_master, 3),
           master_exit_s=round(t_exit - t_master, 3))
