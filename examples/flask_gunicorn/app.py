"""A Flask app with WebSockets on the same port, served by gunicorn workers.

    gunicorn -k crossws_sync.server.gunicorn.GeventWebSocketWorker -w 2 -b 127.0.0.1:8000 \
        --no-control-socket examples.flask_gunicorn.app:app

HTTP routes are Flask's; upgrades on /ws are the adapter's. Set CROSSWS_REDIS_URL (e.g.
redis://127.0.0.1:6379) to make every worker a node of one cluster, so broadcasts, direct
messages and room messages reach clients on any worker.
"""
import os

from flask import Flask, jsonify

from crossws_sync import WebSocketCrossServerAdapter

redis_url = os.environ.get("CROSSWS_REDIS_URL")

adapter = WebSocketCrossServerAdapter(
    ws_options={"no_server": True},
    redis_config=[redis_url] if redis_url else None,
    server_name="worker-{pid}" if redis_url else None,
    auto_cleanup=True,
    node_heartbeat_interval=float(os.environ.get("CROSSWS_NODE_HEARTBEAT", "2.0")),
    # /metrics for every worker at once when PROMETHEUS_MULTIPROC_DIR names a directory they share
    # (needs the metrics extra); /healthz and /readyz for the load balancer.
    metrics=bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")),
    health=True,
)

app = Flask(__name__)
app.wsgi_app = adapter.wsgi_middleware(app.wsgi_app, path="/ws")


@app.route("/")
def index():
    return jsonify(pid=os.getpid(), clients=adapter.get_socket_client_count())


def on_connection(socket, request):
    user_id = adapter.parse_ws_request_params(request)["params"].get("id")
    if not user_id:
        socket.close(4011, "Auth failure")
        return
    socket.user_id = user_id
    adapter.set_user_socket(user_id, socket)


def whoami(socket, payload, callback):
    if callback:
        callback({"pid": os.getpid(), "node": adapter.get_server_name()})


def join(socket, payload, callback):
    adapter.join_room("chat", str(payload["room"]), socket.user_id)
    if callback:
        callback({"joined": payload["room"]})


def say_room(socket, payload, callback):
    adapter.broadcast_to_room("chat", str(payload["room"]), "room", {"from": socket.user_id, "text": payload["text"]})
    if callback:
        callback(True)


def direct(socket, payload, callback):
    adapter.to_socket_id(str(payload["to"]), "direct", {"from": socket.user_id, "text": payload["text"]})
    if callback:
        callback(True)


def shout(socket, payload, callback):
    adapter.broadcast("shout", {"from": socket.user_id, "text": payload["text"]})
    if callback:
        callback(True)


def nodes(socket, payload, callback):
    if callback:
        callback([node["server_name"] for node in adapter.get_cluster_nodes()])


def ask_all(socket, payload, callback):
    """Ask every worker (cluster registry) who it is, over the cross-server bus."""
    result = adapter.emit_cross_server_and_wait("identify", {}, expected_responses=None, timeout=3.0)
    if callback:
        callback(sorted(result.get("responses", {})))


# Registered at import time: with --preload this runs in the master, before the fork.
adapter.on_cross_server_event("identify", lambda data, reply: reply and reply(adapter.get_server_name()))
adapter.on_websocket_event("connection", on_connection)
for name, handler in {"whoami": whoami, "join": join, "sayRoom": say_room, "direct": direct, "shout": shout,
                      "nodes": nodes, "askAll": ask_all}.items():
    adapter.on_websocket_event(name, handler)
