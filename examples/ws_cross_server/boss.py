"""The original README's third example: the control client that sends the four kinds of command.

    python examples/ws_cross_server/boss.py [--port=9000] [--id=555] [--interval=3]
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402

import gevent  # noqa: E402

from crossws_sync import WebSocketConnector  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, default=9000)
parser.add_argument("--id", default="555")
parser.add_argument("--interval", type=float, default=3.0, help="seconds between commands (the seed uses 3)")
args = parser.parse_args()
print("Using configured values - port: %d, id: %s" % (args.port, args.id), flush=True)

client = WebSocketConnector("ws://127.0.0.1:%d" % args.port, custom_params={"id": args.id})
client.on("open", lambda event=None: print("Connect success", flush=True))
client.on("close", lambda event: print("onClose event:", event.code, event.reason, flush=True))
client.on("say", lambda data: print("Received say event:", data, flush=True))
client.wait_connected(10)

commands = [
    {"action": "broadcast", "msg": "Hello every one"},
    {"action": "toPlayer", "msg": "Hello player 13 ", "toPlayerId": "13"},
    {"action": "toPlayers", "msg": "Hello group players ", "toPlayerIds": ["3", "10", "25", "37"]},
    {"action": "toRoom", "msg": "Hello room players ", "roomId": "1000"},
]
for command in commands:
    gevent.sleep(args.interval)
    result = client.emit_and_wait("command", command)
    print("Received callback response:", dict(result), flush=True)
gevent.sleep(0.5)
client.manual_close()
