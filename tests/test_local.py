"""crossws_sync.cluster.local: one node's users, rooms and sends, on a real WebSocketService with
real clients and no Redis: delivery to users and rooms, room limits, duplicate logins and the
cleanup when a connection closes."""
import pytest
from gevent import pywsgi

from crossws_sync.cluster.local import LocalNode, LocalSettings
from crossws_sync.cluster.runtime import Runtime
from crossws_sync.errors import InvalidNameError, LimitExceededError
from crossws_sync.server.service import WebSocketService, WebSocketSettings
from crossws_sync.server.wsgi import WebSocketHandler, WebSocketMiddleware
from rawclient import RawClient
from support import wait_for


@pytest.fixture
def make_local():
    running = []

    def make(**settings):
        holder = {}
        service = WebSocketService(WebSocketSettings(),
                                   on_closed=lambda conn, code, reason: holder["local"].on_connection_closed(conn, code, reason))
        local = holder["local"] = LocalNode(service, Runtime(lambda: None, redis_config=[]), LocalSettings(**settings))

        def on_connection(conn, request):
            user = request.query_string.partition("id=")[2]
            if user:
                local.set_user_socket(user, conn)

        service.system_events.on("connection", on_connection)
        server = pywsgi.WSGIServer(("127.0.0.1", 0), WebSocketMiddleware(service, None, "/ws"),
                                   handler_class=WebSocketHandler, log=None)
        server.start()
        running.append((server, service))
        local.port = server.server_port
        return local

    yield make
    for server, service in running:
        service.close_all(timeout=1)
        server.stop(timeout=1)


def connect(local, user):
    client = RawClient(local.port, "/ws?id=%s" % user)
    wait_for(lambda: local.get_socket_instance(user) is not None)
    return client


def test_users_and_rooms_get_what_is_sent_to_them(make_local):
    local = make_local()
    alice, bob, carol = (connect(local, name) for name in ("alice", "bob", "carol"))
    assert local.to_socket_id("alice", "hi", {"n": 1}) is True
    assert alice.recv_json() == {"event": "hi", "payload": {"n": 1}}
    assert local.to_socket_id("nobody", "hi") is False
    with pytest.raises(TypeError):
        local.to_socket_id("", "hi")
    assert local.to_socket_ids(["bob", "carol", "bob", "nobody"], "many") == 2
    assert bob.recv_json() == carol.recv_json() == {"event": "many"}
    local.join_room("game", "r1", "alice")
    local.join_room("game", "r1", "bob")
    local.join_room("game", "r1", "bob")  # idempotent
    assert local.get_room_socket_ids("game", "r1") == {"alice", "bob"}
    assert local.broadcast_to_room("game", "r1", "room", 1, exclude_socket_ids=["bob"]) == 1
    assert alice.recv_json() == {"event": "room", "payload": 1}
    assert local.broadcast_to_room("game", "r1", "last", 2, room_destroy=True) == 2
    assert local.get_room_count("game") == 0 and not local.is_joined_room("alice", "game")
    assert local.broadcast("all") == 3
    assert [c.recv_json()["event"] for c in (alice, bob, carol)] == ["last", "last", "all"]


def test_room_limits_and_reserved_names_refuse_without_changing_anything(make_local):
    local = make_local(max_rooms_per_socket=2, max_namespaces_per_socket=1)
    local.join_room("game", "r1", "u1")
    with pytest.raises(LimitExceededError) as namespaces:
        local.join_room("chat", "r1", "u1")
    assert namespaces.value.limit == "max_namespaces_per_socket" and namespaces.value.value == 1
    local.join_room("game", "r2", "u1")
    with pytest.raises(LimitExceededError) as rooms:
        local.join_room("game", "r3", "u1")
    assert rooms.value.limit == "max_rooms_per_socket"
    with pytest.raises(InvalidNameError):
        local.join_room("private_socket", "r1", "u2")
    assert local.get_joined_rooms("u1") == {"game": {"r1", "r2"}} and local.get_joined_rooms("u2") == {}


@pytest.mark.parametrize("policy, closed_user", [("close_old", "first"), ("reject_new", "second")])
def test_a_duplicate_login_closes_one_of_the_two_connections(make_local, policy, closed_user):
    local = make_local(duplicate_login=policy)
    first = connect(local, "u")
    old = local.get_socket_instance("u")
    second = RawClient(local.port, "/ws?id=u")
    closed = {"first": first, "second": second}[closed_user]
    code, reason = closed.recv_close()
    assert code == 4012
    assert (local.get_socket_instance("u") is old) == (policy == "reject_new")


def test_auto_cleanup_unmaps_a_closed_user_and_empties_its_rooms(make_local):
    local = make_local(auto_cleanup=True)
    client = connect(local, "u")
    local.join_room("game", "r1", "u")
    client.close()
    wait_for(lambda: local.get_socket_instance("u") is None)
    assert local.get_room_count("game") == 0 and local.get_local_socket_ids() == []


def test_without_auto_cleanup_the_app_keeps_the_mapping(make_local):
    local = make_local()
    client = connect(local, "u")
    conn = local.get_socket_instance("u")
    client.close()
    wait_for(lambda: conn.closed)
    assert local.get_socket_instance("u") is conn and local.get_socket_client_count() == 1
    local.remove_user_socket("u")
    assert local.get_socket_client_count() == 0
