"""crossws_sync.cluster.dashboard: the live cluster dashboard, served by real nodes.

Two nodes on one real redis-server, 25 raw clients on one and 7 on the other, 3 rooms: the JSON
snapshot of either node has the exact counts (users per node, room sizes, Redis health); the auth
hook (refuse, accept, raise, a ``Reject`` asking for basic auth, a hook that forgets to return);
GET/HEAD only; the bound on rooms; rates; slow-consumer closes; the WSGI middleware. Then the page
in headless Chromium: the node table fills with the right numbers, the rate chart is drawn (checked
on a PNG screenshot, decoded here), and a hostile user id and room name show as literal text
while no script of theirs runs.
"""
from __future__ import annotations

import base64
import json
import os
import socket
import time
import urllib.error
import urllib.request
from urllib.parse import quote
from typing import Any, Dict, List, Optional, Tuple

import gevent
import gevent.event
import pytest
from gevent import pywsgi

from cdp import Browser, Page
from png import Image, decode_png
from rawclient import RawClient
from support import connect_user, wait_for

from crossws_sync import Reject, WebSocketCrossServerAdapter
from crossws_sync.errors import ConfigError
from crossws_sync.server.wsgi import WebSocketHandler

pytestmark = pytest.mark.timeout(90)

HOSTILE_USER = '<img src=x onerror="window.__pwned=1">'
HOSTILE_ROOM = "<script>window.__pwned=2</script><b>big</b>"


def request(port: int, path: str, method: str = "GET",
            headers: Optional[Dict[str, str]] = None) -> Tuple[int, Dict[str, str], bytes]:
    """``(status, headers, body)``, 4xx and 5xx included."""
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def snapshot(port: int, path: str = "/dashboard/data", headers: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    status, response_headers, body = request(port, path, headers=headers)
    assert status == 200, body
    assert response_headers["Content-Type"] == "application/json; charset=utf-8"
    assert response_headers["Cache-Control"] == "no-store"
    return json.loads(body)


def users_per_node(data: Dict[str, Any]) -> Dict[str, int]:
    return {node["name"]: node["users"] for node in data["nodes"]}


def rooms_of(data: Dict[str, Any]) -> List[Tuple[str, str, int]]:
    return [(room["namespace"], room["room"], room["size"]) for room in data["rooms"]["top"]]


def populate(node_a: WebSocketCrossServerAdapter, node_b: WebSocketCrossServerAdapter) -> List[RawClient]:
    """25 users on A and 7 on B, in rooms chat/lobby (15 + 5), chat/dev (4 + 2) and game/t1 (3)."""
    clients = [connect_user(node_a, "a%02d" % i) for i in range(25)]
    clients += [connect_user(node_b, "b%d" % i) for i in range(7)]
    for i in range(15):
        node_a.join_room("chat", "lobby", "a%02d" % i)
    for i in range(5):
        node_b.join_room("chat", "lobby", "b%d" % i)
    for i in range(15, 19):
        node_a.join_room("chat", "dev", "a%02d" % i)
    for i in range(5, 7):
        node_b.join_room("chat", "dev", "b%d" % i)
    for i in range(19, 22):
        node_a.join_room("game", "t1", "a%02d" % i)
    return clients


EXPECTED_ROOMS = [("chat", "lobby", 20), ("chat", "dev", 6), ("game", "t1", 3)]


# The JSON snapshot -----------------------------------------------------------------------------------


def test_any_node_answers_exact_counts_of_the_whole_cluster(cluster):
    node_a, node_b = cluster(2, dashboard={"auth": None, "interval": 0.2})
    clients = populate(node_a, node_b)
    for port in (node_a.port, node_b.port):
        wait_for(lambda: users_per_node(snapshot(port)) == {"node0": 25, "node1": 7}
                 and rooms_of(snapshot(port)) == EXPECTED_ROOMS, timeout=10,
                 message="the counts on the dashboard of port %d" % port)
    data = snapshot(node_a.port)
    assert data["version"] == 1 and data["node"] == "node0" and data["ready"] == {"ok": True, "reason": "ready"}
    assert data["cluster"] == {"nodes": 2, "online_users": 32}
    assert [(n["name"], n["self"], n["rooms"], n["websocket"], n["health"]) for n in data["nodes"]] == [
        ("node0", True, 3, True, "ok"), ("node1", False, 2, True, "ok")]
    assert data["rooms"]["namespaces"] == [{"namespace": "chat", "rooms": 2, "members": 26},
                                           {"namespace": "game", "rooms": 1, "members": 3}]
    assert (data["rooms"]["total_rooms"], data["rooms"]["total_members"], data["rooms"]["truncated"]) == (3, 29, False)
    assert data["totals"]["connections"] == 25
    [redis] = data["redis"]
    assert redis["publisher"] is True and redis["subscriber"] is True
    assert redis["label"].startswith("127.0.0.1:") and redis["published"] > 0 and redis["received"] > 0
    assert redis["lag_p99_ms"] is None or 0 < redis["lag_p99_ms"] <= 10000  # one echo in 16 is timed
    assert snapshot(node_b.port)["node"] == "node1"
    # Users leave: the next snapshots follow.
    for client in clients[:10]:
        client.close(1000, "bye")
    wait_for(lambda: users_per_node(snapshot(node_b.port)) == {"node1": 7, "node0": 15}, timeout=10)


def test_message_rates_come_from_counters_sampled_on_the_server(cluster):
    node_a, node_b = cluster(2, dashboard={"auth": None, "interval": 0.2, "history": 4})
    clients = [connect_user(node_a, "u%d" % i) for i in range(5)]
    stop = gevent.event.Event()

    def traffic() -> None:
        while not stop.is_set():
            for client in clients:
                client.send_json({"event": "noise", "payload": 1})
            node_a.broadcast("tick", {"n": 1})
            gevent.sleep(0.05)

    sender = gevent.spawn(traffic)
    try:
        wait_for(lambda: any(row["in"] > 20 and row["out"] > 20 and row["bus_out"] > 1
                             for row in snapshot(node_a.port)["rates"]), timeout=10, message="rates on the dashboard")
    finally:
        stop.set()
        sender.join(timeout=2)
    data = snapshot(node_a.port)
    assert len(data["rates"]) <= 20  # history / interval: the ring is bounded
    assert data["totals"]["messages_received"] >= 5 and data["totals"]["messages_sent"] >= 5
    times = [row["t"] for row in data["rates"]]
    assert times == sorted(times)


def test_the_snapshot_stays_bounded_with_many_rooms(make_adapter):
    adapter = make_adapter(server_name="solo", dashboard={"auth": None, "top_rooms": 10}, max_rooms_per_socket=None,
                           ws_options={"path": "/ws"})
    adapter.on_websocket_event("connection", lambda s, req: adapter.set_user_socket(
        adapter.parse_ws_request_params(req)["params"]["id"], s))
    adapter.start()
    clients = [connect_user(adapter, "u%d" % i, path="/ws?id=") for i in range(8)]
    for room in range(600):
        for member in range(room % 8 + 1):
            adapter.join_room("ns%d" % (room % 30), "room-%03d" % room, "u%d" % member)
    status, _, body = request(adapter.port, "/dashboard/data")
    assert status == 200
    data = json.loads(body)
    assert len(data["rooms"]["top"]) == 10 and len(data["rooms"]["namespaces"]) == 10
    assert all(room["size"] == 8 for room in data["rooms"]["top"])
    assert data["rooms"]["total_rooms"] == 600 and data["rooms"]["total_namespaces"] == 30
    assert data["rooms"]["total_members"] == sum(room % 8 + 1 for room in range(600))
    assert data["rooms"]["truncated"] is True
    assert data["redis"] == [] and users_per_node(data) == {"solo": 8}
    assert len(body) < 8000  # 600 rooms, 2760 memberships: the document does not grow with them
    for client in clients:
        client.abort()


def test_slow_consumer_closes_are_listed_newest_first(cluster):
    node_a, _ = cluster(2, dashboard={"auth": None}, max_outbox_bytes=64 * 1024)
    slow = make_slow_consumer(node_a, HOSTILE_USER)
    data = snapshot(node_a.port)
    assert data["totals"]["slow_consumer_closes"] == 1
    [entry] = data["slow_consumers"]
    assert entry["socket_id"] == HOSTILE_USER and entry["code"] == 1008
    assert entry["messages_sent"] > 0 and abs(entry["at"] - time.time()) < 30
    slow.abort()


def make_slow_consumer(node: WebSocketCrossServerAdapter, user_id: str) -> RawClient:
    """Connect ``user_id``, never read, and send to it until the slow-consumer policy drops it."""
    client = RawClient(node.port, "/?id=" + quote(user_id, safe=""))
    wait_for(lambda: node.get_socket_instance(user_id) is not None, message="%r mapped" % user_id)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    blob = "z" * 20000
    deadline = time.monotonic() + 20
    while node.get_socket_instance(user_id) is not None and time.monotonic() < deadline:
        node.to_socket_id(user_id, "big", {"blob": blob})
        gevent.sleep(0.001)
    wait_for(lambda: node.get_wss().slow_consumer_closes >= 1, timeout=10, message="the slow consumer to be dropped")
    return client


# Auth, methods, paths -------------------------------------------------------------------------------


def test_the_auth_hook_refuses_accepts_and_can_ask_for_basic_auth(make_adapter):
    good = "Basic " + base64.b64encode(b"ops:s3cret").decode()
    seen: List[str] = []

    def check(request: Any) -> Any:
        seen.append(request.path)
        header = request.headers.get("authorization", "")
        if header == good:
            return True
        if header == "boom":
            raise RuntimeError("hook bug")
        if header == "forgot":
            return None  # a hook that forgets to return refuses: only True opens
        if header == "deny":
            return False
        return Reject(401, "login", [("WWW-Authenticate", 'Basic realm="crossws"')])

    adapter = make_adapter(dashboard={"auth": check, "path": "/ops/board"}, ws_options={"path": "/ws"}).start()
    port = adapter.port
    for headers_sent in ({}, {"Authorization": "Basic b3BzOndyb25n"}):  # none, or ops:wrong
        status, headers, _ = request(port, "/ops/board/data", headers=headers_sent)
        assert (status, headers["WWW-Authenticate"]) == (401, 'Basic realm="crossws"')
    for header in ("boom", "forgot", "deny"):
        status, headers, body = request(port, "/ops/board/data", headers={"Authorization": header})
        assert (status, body, headers["Cache-Control"]) == (403, b"Forbidden\n", "no-store"), header
    status, headers, page = request(port, "/ops/board", headers={"Authorization": "forgot"})
    assert status == 403 and b"<canvas" not in page
    status, headers, page = request(port, "/ops/board", headers={"Authorization": good})
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8" and b"<canvas" in page
    assert headers["Cache-Control"] == "no-store" and "script-src 'sha256-" in headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    assert snapshot(port, "/ops/board/data", headers={"Authorization": good})["version"] == 1
    assert seen and set(seen) <= {"/ops/board", "/ops/board/data"}


def test_get_and_head_only_and_exact_paths(make_adapter):
    adapter = make_adapter(dashboard={"auth": None}, metrics=False, health=True, ws_options={"path": "/ws"}).start()
    port = adapter.port
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/dashboard", "/dashboard/data"):
            status, headers, _ = request(port, path, method=method)
            assert (status, headers.get("Allow")) == (405, "GET, HEAD"), (method, path)
    status, headers, body = request(port, "/dashboard/data", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 100
    for path in ("/dashboard/other", "/dashboard/data/x", "/dashboardx"):
        assert request(port, path)[0] == 404, path
    assert request(port, "/healthz")[0] == 200


def test_served_by_the_wsgi_middleware_before_the_app(make_adapter):
    def app(environ: Dict[str, Any], start_response: Any) -> List[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"app:" + environ["PATH_INFO"].encode()]

    adapter = make_adapter(server_name="mw", dashboard={"auth": None}, ws_options={"no_server": True})
    server = pywsgi.WSGIServer(("127.0.0.1", 0), adapter.wsgi_middleware(app, path="/ws"),
                               handler_class=WebSocketHandler, log=None)
    server.start()
    try:
        port = server.server_port
        assert request(port, "/dashboard/extra")[2] == b"app:/dashboard/extra"
        clients = [RawClient(port, "/ws") for _ in range(3)]
        wait_for(lambda: snapshot(port)["totals"]["connections"] == 3, message="3 connections on the dashboard")
        assert snapshot(port)["node"] == "mw"
        assert b"<canvas" in request(port, "/dashboard")[2]
        for client in clients:
            client.abort()
    finally:
        server.stop(timeout=1)


def test_options_are_checked_in_the_constructor():
    with pytest.raises(ConfigError, match="pass ws_options"):
        WebSocketCrossServerAdapter(dashboard={"auth": None})
    with pytest.raises(ConfigError, match=r"auth\": None"):
        WebSocketCrossServerAdapter(ws_options={"no_server": True}, dashboard=True)
    with pytest.raises(ConfigError, match="also the path of the metrics or a probe"):
        WebSocketCrossServerAdapter(ws_options={"no_server": True}, health={"readiness_path": "/board/data"},
                                    dashboard={"auth": None, "path": "/board"}, autostart=False)


# The page in Chromium ---------------------------------------------------------------------------------

CHART_COLORS = {"in": (0x1F, 0x77, 0xB4), "out": (0xE4, 0x57, 0x2E)}


def near(pixel: Tuple[int, int, int], color: Tuple[int, int, int], tolerance: int = 40) -> bool:
    return sum(abs(a - b) for a, b in zip(pixel, color)) <= tolerance


def save(png: bytes, directory: Any, name: str) -> str:
    path = os.path.join(str(directory), name)
    with open(path, "wb") as handle:
        handle.write(png)
    return path


def ink_length(image: Image) -> int:
    """Pixels of dark ink along the text lines of ``image``: the widths of the bands of rows
    holding ink, summed (a wrapped string counts every line)."""
    total = 0
    band: List[int] = []
    for y in range(image.height + 1):
        columns = [x for x in range(image.width) if sum(image.pixel(x, y)) < 250] if y < image.height else []
        if columns:
            band.extend((min(columns), max(columns)))
        elif band:
            total += max(band) - min(band)
            band = []
    return total


def open_dashboard(browser: Browser, port: int) -> Page:
    page = browser.new_page("http://127.0.0.1:%d/dashboard" % port)
    page.set_viewport(1200, 900)
    return page


@pytest.mark.timeout(120)
def test_the_page_shows_the_cluster_and_draws_the_rate_chart(browser, cluster, tmp_path):
    node_a, node_b = cluster(2, dashboard={"auth": None, "interval": 0.5})
    clients = populate(node_a, node_b)
    page = open_dashboard(browser, node_a.port)
    page.wait_for("(() => { const rows = document.querySelectorAll('#nodes tbody tr');"
                  " return rows.length === 2 && rows[0].dataset.users === '25' && rows[1].dataset.users === '7'; })()",
                  timeout=15, message="the node table with 25 and 7 users")
    assert page.texts("#nodes tbody tr td:first-child") == ["node0 (this node)", "node1"]
    assert page.text("#tile-users") == "32" and page.text("#tile-nodes") == "2" and page.text("#node-name") == "node0"
    page.wait_for("document.querySelectorAll('#rooms tbody tr[data-size]').length === 3", message="three rooms")
    assert page.evaluate("Array.from(document.querySelectorAll('#rooms tbody tr'), tr => "
                         "Array.from(tr.cells).slice(0, 3).map(td => td.textContent).join('/'))") == [
        "chat/lobby/20", "chat/dev/6", "game/t1/3"]
    assert page.evaluate("Array.from(document.querySelectorAll('#redis tbody tr td .pill'), p => p.textContent)") == [
        "up", "up"]

    # Traffic: 100 messages/s from clients, 20 broadcasts/s to 25 local clients (500 frames/s out).
    stop = gevent.event.Event()

    def traffic() -> None:
        while not stop.is_set():
            for client in clients[:10]:
                client.send_json({"event": "noise", "payload": 1})
            node_a.broadcast_raw("tick", local_only=True)
            node_a.broadcast_raw("tock", local_only=True)
            gevent.sleep(0.1)

    sender = gevent.spawn(traffic)
    try:
        page.wait_for("Number(document.getElementById('tile-in').textContent.replace(/,/g, '')) > 40"
                      " && Number(document.getElementById('tile-out').textContent.replace(/,/g, '')) > 200",
                      timeout=20, message="the rates in the tiles")
        polls = int(page.evaluate("document.body.dataset.polls"))
        page.wait_for("Number(document.body.dataset.polls) >= %d" % (polls + 2), timeout=10, message="two more polls")
        canvas = page.rect("#rates")
        shot = page.screenshot()
    finally:
        stop.set()
        sender.join(timeout=2)
    saved = save(shot, tmp_path, "dashboard.png")
    image = decode_png(shot)
    assert (image.width, image.height) == (1200, 900), saved

    # The page is not blank: many colours over the viewport, the header's dark text included.
    sample = [image.pixel(x, y) for y in range(0, image.height, 7) for x in range(0, image.width, 7)]
    assert len(set(sample)) > 20, saved
    assert sum(1 for p in sample if sum(p) < 200) > 50, saved

    # The chart: the canvas area holds lines in the chart colours, above the zero line.
    x, y, width, height = (int(canvas[key]) for key in ("x", "y", "width", "height"))
    assert width > 800 and height == 220
    area = image.region(x, y, width, height)
    assert sum(1 for p in area if p == (255, 255, 255)) > len(area) // 2, saved  # the background
    zero_line = y + height - 24  # the plot's bottom edge (24 px are left for the time labels)
    for name, color in CHART_COLORS.items():
        raised = [(px, py) for py in range(y, zero_line - 6) for px in range(x, x + width)
                  if near(image.pixel(px, py), color)]
        assert len(raised) > 40, "no %s line above zero in %s" % (name, saved)
    _no_page_errors(page)


@pytest.mark.timeout(120)
def test_hostile_names_show_as_text_and_run_nothing(browser, cluster, tmp_path):
    node_a, _ = cluster(2, dashboard={"auth": None, "interval": 0.5}, max_outbox_bytes=64 * 1024)
    member = connect_user(node_a, "member")
    node_a.join_room("chat", HOSTILE_ROOM, "member")
    slow = make_slow_consumer(node_a, HOSTILE_USER)
    page = open_dashboard(browser, node_a.port)
    page.wait_for("document.querySelectorAll('#slow tbody tr td.name').length === 1"
                  " && document.querySelectorAll('#rooms tbody tr[data-size]').length === 1",
                  timeout=15, message="the slow consumer and the room on the page")
    assert page.text("#slow tbody tr td.name") == HOSTILE_USER
    assert page.text("#rooms tbody tr td:nth-child(2)") == HOSTILE_ROOM
    assert page.evaluate("document.querySelectorAll('img, main script, table b').length") == 0
    assert page.evaluate("window.__pwned === undefined")

    # On the screen: the cells show the whole string as characters (ink across most of its width,
    # where an <img> would show as a small broken-image icon), in the text colour.
    for selector, text in (("#slow tbody tr td.name", HOSTILE_USER), ("#rooms tbody tr td:nth-child(2)", HOSTILE_ROOM)):
        page.evaluate("document.querySelector(%s).scrollIntoView({block: 'center'})" % json.dumps(selector))
        box = page.rect(selector)
        shot = page.screenshot(clip=box)
        saved = save(shot, tmp_path, "hostile-%d.png" % len(text))
        image = decode_png(shot)
        assert ink_length(image) > 5 * len(text), "the text is not drawn as characters: %s" % saved
    assert page.evaluate("window.__pwned === undefined")
    _no_page_errors(page)
    member.abort()
    slow.abort()


def _no_page_errors(page: Page) -> None:
    assert not page.errors, "errors in the page:\n" + "\n".join(page.log)
