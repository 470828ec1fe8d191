"""The original README's third example: 50 clients spread over the five nodes, ten of them in rooms.

    python examples/ws_cross_server/clients.py [--ports=9000,9001,9002,9003,9004] [--seed=N]

Every received ``say`` event is printed as one JSON line ``{"client", "port", "say"}``.
"""
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402

import gevent  # noqa: E402

from crossws_sync import WebSocketConnector  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--ports", default="9000,9001,9002,9003,9004")
parser.add_argument("--total", type=int, default=50)
parser.add_argument("--rooms", type=int, default=10, help="how many clients join a room")
parser.add_argument("--seed", type=int, default=None)
parser.add_argument("--duration", type=float, default=None, help="exit after this many seconds")
args = parser.parse_args()
ports = [int(p) for p in args.ports.split(",")]
rng = random.Random(args.seed)
room_members = set(rng.sample(range(1, args.total + 1), args.rooms))
room_ids = ["1000", "1001", "1002"]


def out(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def start_client(index):
    port = ports[index % len(ports)]
    client_id = index + 1
    client = WebSocketConnector("ws://127.0.0.1:%d" % port, custom_params={"id": client_id})

    def on_open(event=None):
        out(client=client_id, port=port, event="open")
        if client_id in room_members:
            room_id = rng.choice(room_ids)

            def joined(err, data):
                out(client=client_id, port=port, event="joined", room=room_id, err=err, data=data)

            client.emit("joinRoom", {"roomId": room_id}, joined)

    client.on("open", on_open)
    client.on("close", lambda event: out(client=client_id, port=port, event="close", code=event.code))
    client.on("say", lambda data: out(client=client_id, port=port, say=data))
    return client


clients = [start_client(i) for i in range(args.total)]
if args.duration:
    gevent.sleep(args.duration)
else:
    gevent.wait()
