"""The original README's first example, single WebSocket server (no Redis).

Run:  python examples/single_ws_server/server.py --port=9000
Then: python examples/single_ws_server/client.py --id=1 --port=9000
"""
from gevent import monkey

monkey.patch_all()

import logging  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402

from crossws_sync import WebSocketCrossServerAdapter  # noqa: E402

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

port = 9000
for arg in sys.argv[1:]:
    if arg.startswith("--port="):
        port = int(arg.split("=", 1)[1])
print("Using configured values - port: %d" % port)

ws_server = WebSocketCrossServerAdapter(ws_options={"host": "0.0.0.0", "port": port})


def on_connection(socket, request):
    print("Client connection")
    data = ws_server.parse_ws_request_params(request)
    print("Connection params:", data)
    # Demo only: trust the id from the URL. Real apps authenticate, ideally before the upgrade
    # with the `authenticate=` hook (see docs/guide.md).
    if data["params"].get("id"):
        player_id = str(data["params"]["id"])
        print("The client's ID is: " + player_id)
        socket.player_id = player_id
        ws_server.set_user_socket(player_id, socket)
    else:
        socket.close(4011, "Auth failure")


def on_close(socket, request, code, reason):
    print("Client disconnected, id: %s (code %s)" % (getattr(socket, "player_id", None), code))
    if getattr(socket, "player_id", None):
        ws_server.remove_user_socket(socket.player_id)


def on_say(socket, data, callback):
    print("Received 'say' event from client %s: %r" % (getattr(socket, "player_id", None), data))
    if callback:
        callback({"msg": "I am a callback for your say event"})


def on_join_room(socket, data, callback):
    print("Received 'joinRoom' event from client %s: %r" % (getattr(socket, "player_id", None), data))
    if getattr(socket, "player_id", None):
        ws_server.join_room("testRoom", "1000", socket.player_id)
    if callback:
        callback({"msg": "JoinRoom successfully"})


ws_server.on_websocket_event("connection", on_connection)
ws_server.on_websocket_event("close", on_close)
ws_server.on_websocket_event("say", on_say)
ws_server.on_websocket_event("joinRoom", on_join_room)


def every(seconds, fn):
    def loop():
        while True:
            gevent.sleep(seconds)
            fn()

    return gevent.spawn(loop)


every(15, lambda: ws_server.broadcast("serverSay", {"msg": "I'm sending this message to everyone"}))
every(10, lambda: ws_server.broadcast_to_room("testRoom", "1000", "roomSay", {"msg": "This is a message sent to the test room"}))

ws_server.serve_forever()
