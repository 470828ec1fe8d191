"""The original README's third example: one WebSocket node of a distributed cluster.

    python examples/ws_cross_server/wsserver.py --name=serverA --port=9000 [--redis=redis://127.0.0.1:6379]

Start five with different names and ports, then clients.py and boss.py.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402

from crossws_sync import WebSocketCrossServerAdapter  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--name", default="serverA")
parser.add_argument("--port", type=int, default=9000)
parser.add_argument("--redis", default="redis://127.0.0.1:6379")
parser.add_argument("--quiet", action="store_true")
args = parser.parse_args()
logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(name)s %(message)s")
print("Using configured values - serverName: %s, port: %d" % (args.name, args.port), flush=True)

ws_cross_server = WebSocketCrossServerAdapter(
    redis_config=[args.redis], server_name=args.name, ws_options={"host": "0.0.0.0", "port": args.port}
)
name = ws_cross_server.get_server_name()


def on_connection(socket, request):
    data = ws_cross_server.parse_ws_request_params(request)
    if not args.quiet:
        print("[%s] Client Connection params: %s" % (name, data), flush=True)
    if data["params"].get("id"):
        socket.player_id = str(data["params"]["id"])
        ws_cross_server.set_user_socket(socket.player_id, socket)
    else:
        socket.close(4011, "Auth failure")


def on_close(socket, request, code, reason):
    if getattr(socket, "player_id", None):
        ws_cross_server.remove_user_socket(socket.player_id)


def on_join_room(socket, data, callback):
    if getattr(socket, "player_id", None) and isinstance(data, dict) and data.get("roomId"):
        ws_cross_server.join_room("chat", str(data["roomId"]), socket.player_id)
        if callback:
            callback({"msg": "Successfully joined the roomId:%s" % data["roomId"]})
    elif callback:
        callback({"msg": "Failed to join the room"})


def on_command(socket, data, callback):
    if not isinstance(data, dict) or not isinstance(data.get("action"), str):
        if callback:
            callback({"msg": "Failed to send message"})
        return
    action, msg = data["action"], data.get("msg")
    if action == "broadcast":
        ws_cross_server.broadcast("say", {"action": action, "msg": msg})
    elif action == "toPlayer" and data.get("toPlayerId"):
        ws_cross_server.to_socket_id(str(data["toPlayerId"]), "say", {"action": action, "msg": msg})
    elif action == "toPlayers" and isinstance(data.get("toPlayerIds"), list):
        ws_cross_server.to_socket_ids([str(x) for x in data["toPlayerIds"]], "say", {"action": action, "msg": msg})
    elif action == "toRoom" and data.get("roomId"):
        ws_cross_server.broadcast_to_room("chat", str(data["roomId"]), "say", {"action": action, "msg": msg})
    else:
        if callback:
            callback({"msg": "Unknown action type"})
        return
    if callback:
        callback({"msg": "Message sent successfully [action:%s] " % action})


ws_cross_server.on_websocket_event("connection", on_connection)
ws_cross_server.on_websocket_event("close", on_close)
ws_cross_server.on_websocket_event("joinRoom", on_join_room)
ws_cross_server.on_websocket_event("command", on_command)
ws_cross_server.serve_forever()
