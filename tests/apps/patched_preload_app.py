"""A gunicorn app written the original's way: patched at import, an adapter with Redis built at
import time, a cross-server listener, nobody calling start(). Used with ``--preload``, where the
gunicorn master imports it (and runs gevent's hub, since ``select`` is patched) before forking."""
from gevent import monkey

monkey.patch_all()

import os  # noqa: E402

from crossws_sync import WebSocketCrossServerAdapter  # noqa: E402

adapter = WebSocketCrossServerAdapter(ws_options={"no_server": True}, redis_config=[os.environ["CROSSWS_REDIS_URL"]],
                                      server_name="preload-{pid}", node_heartbeat_interval=0.3)
adapter.on_cross_server_event("who", lambda data, reply: reply and reply({"pid": os.getpid()}))


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
