"""The original README's first example client, in Python (blocking style on gevent).

Run the server first:  python examples/single_ws_server/server.py --port=9000
Then one or more:      python examples/single_ws_server/client.py --id=1 --port=9000
Options: --id=N --port=N --duration=SECONDS (exit after that long; default: run until Ctrl+C).

Shows every client feature: custom params in the URL, lifecycle events, server events, acks with a
callback, with a promise (AsyncResult) and blocking, pending feedback, ack timeouts, heartbeat and
latency, reconnection (manual, as in the original, or automatic), a lifecycle-named server event,
manual close and reopening.
"""
from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

import gevent  # noqa: E402

from crossws_sync import WebSocketConnector  # noqa: E402

# Default port and client id; override with --port=9001 --id=16
port = 9000
client_id = "1"
duration = None
for arg in sys.argv[1:]:
    if arg.startswith("--port="):
        port = int(arg.split("=", 1)[1])
    elif arg.startswith("--id="):
        client_id = arg.split("=", 1)[1]
    elif arg.startswith("--duration="):
        duration = float(arg.split("=", 1)[1])

print("Using configured values - port: %s, id: %s" % (port, client_id), flush=True)

client = WebSocketConnector(
    "ws://localhost:%d" % port,
    # Sent in the query string exactly like the original: ?name=Sam&id=1
    custom_params={"name": "Sam", "id": client_id},
    # Stop the server to watch reconnection with different settings (times are seconds):
    # repeat_limit=5,
    # fast_reconnect_threshold=1,
    # Or let the client reconnect by itself after a close (not after 4001/4010/4011/4012):
    # auto_reconnect=True,
)

# Close codes after which the client must not reconnect: manual close, forced logout,
# authentication failure, kicked by a concurrent login.
NO_RECONNECT = (4001, 4010, 4011, 4012)


def on_open(event):
    print("Connect success", flush=True)


def on_close(event):
    print("onClose event:", event.code, event.reason, flush=True)
    if event.code in NO_RECONNECT:
        # Closed manually or by forced logout / auth failure: do not reconnect. manual_close()
        # also stops the timers; it is safe to call again.
        print("Connection closed manually or by forced logout/auth failure. No reconnection.", flush=True)
        client.manual_close()
    else:
        # Any other close: reconnect (or pass auto_reconnect=True above).
        client.reconnect()


def on_error(event):
    print("Connect on error:", event.message, flush=True)  # a retry follows by itself


def on_reconnect(info):
    print("Preparing for reconnection attempt #%d, actual reconnection will occur in %.3f s"
          % (info.repeat, info.timeout), flush=True)


def on_repeat_limit(repeat_limit):
    print("Reached maximum reconnection attempts: %d" % repeat_limit, flush=True)


client.on("open", on_open)
client.on("close", on_close)
client.on("error", on_error)
client.on("reconnect", on_reconnect)
client.on("repeat-limit", on_repeat_limit)

# Server-pushed events
client.on("serverSay", lambda data: print("Received serverSay event:", data, flush=True))
client.on("roomSay", lambda data: print("Received roomSay event:", data, flush=True))
# A server event whose name is a lifecycle name never fires lifecycle listeners;
# listen to it explicitly:
client.on_server_event("close", lambda data: print("Server event named 'close':", data, flush=True))

# Heartbeat: ping_interval (10 s) after open / last pong; the latency is measured on a monotonic clock.
client.on("ping", lambda: print("Go to ping....", flush=True))
client.on("pong", lambda latency: print("Network latency: %.1f ms" % (latency * 1000), flush=True))
client.on("pong-timeout", lambda: print("No heartbeat echo: closing with 4002", flush=True))


def say_with_promise():
    # Promise style: an AsyncResult that always resolves (never raises) to a Result.
    promise = client.emit_with_promise(
        "say", {"msg": "I am a client with ID: %s, and I need your promise callback." % client_id},
        on_pending=lambda: print("requesting...", flush=True))
    data = promise.get()
    print("Received promise response:", dict(data), flush=True)


def say_with_callback():
    def on_reply(err, data):
        if err:
            print("Callback error occurred", dict(err), flush=True)
        else:
            print("Received callback response:", data, flush=True)

    client.emit("say", {"msg": "I am a client with ID: %s, and I need your callback." % client_id}, on_reply,
                on_pending=lambda: print("requesting...", flush=True), callback_timeout=1)


def join_room():
    def on_reply(err, data):
        if err:
            print("JoinRoom Callback error occurred", dict(err), flush=True)
        else:
            print("JoinRoom Received callback response:", data, flush=True)

    client.emit("joinRoom", {"msg": "I want to join the test room"}, on_reply)


def blocking_calls():
    # Blocking alias of the promise form, and an event nobody answers: CALLBACK_TIMEOUT.
    print("Blocking say:", dict(client.emit_and_wait("say", {"msg": "blocking"})), flush=True)
    print("Unanswered event:", dict(client.emit_and_wait("nobodyListens", {}, callback_timeout=0.5)), flush=True)
    # Heartbeat every 5 s from now on; latency of the last heartbeat so far:
    client.set_ping_interval(5, immediate=True)
    print("Ping interval: %s s, last latency: %s" % (client.get_ping_interval(), client.latency), flush=True)


gevent.spawn_later(2, say_with_promise)
gevent.spawn_later(4, say_with_callback)
gevent.spawn_later(6, join_room)
gevent.spawn_later(8, blocking_calls)

try:
    gevent.sleep(duration if duration is not None else 10 ** 9)
except KeyboardInterrupt:
    pass
finally:
    client.manual_close()  # fires 'close' 4001 locally; the server sees 4001 'client manual close'
    gevent.sleep(0.2)  # let the close listener print
