"""The WSGI app of a gunicorn worker in W9: crossws_server's bench adapter, ``no_server``, on Redis.

Each worker builds its own adapter (no ``--preload``) with server name ``w<pid>``; upgrades on
every path go to it (the generator connects to ``/?id=...``).
"""
import os

from crossws_server import build

adapter = build("127.0.0.1", 0, 0, int(os.environ["CROSSWS_BENCH_REDIS_PORT"]),
                auth=bool(os.environ.get("CROSSWS_BENCH_AUTH")), ws_options={"no_server": True},
                server_name="w%d" % os.getpid())
app = adapter.wsgi_middleware(None, path=None)
