"""gunicorn worker for crossws_sync: ``gunicorn -k crossws_sync.server.gunicorn.GeventWebSocketWorker -w N app:app``.

* Upgrades are handled by :class:`~crossws_sync.server.wsgi.WebSocketHandler` logic on top of
  gunicorn's own pywsgi handler, so ``--access-logfile`` keeps working.
* On SIGTERM / SIGINT / SIGQUIT every adapter of the worker closes its clients with its
  ``shutdown_code`` (1012 Service Restart with a retry hint unless set; ``CROSSWS_SHUTDOWN_CODE``
  overrides it),
  deregisters from the cluster and stops its background greenlets, well inside
  ``--graceful-timeout``.
* Adapters created at import time (also with ``--preload``) start their Redis connections and
  greenlets lazily in the worker after the fork; each worker is a separate cluster node.
"""
from __future__ import annotations

import os
from typing import Any

import gevent
from gunicorn.workers.ggevent import GeventPyWSGIWorker, PyWSGIHandler

from ..io import forks
from .wsgi import UpgradeHandlerMixin


class WebSocketPyWSGIHandler(UpgradeHandlerMixin, PyWSGIHandler):
    """gunicorn's pywsgi handler (access log) with crossws_sync's upgrade handling."""


class GeventWebSocketWorker(GeventPyWSGIWorker):
    """gevent pywsgi worker with WebSocket support and graceful WebSocket shutdown."""

    wsgi_handler = WebSocketPyWSGIHandler

    def init_process(self) -> None:
        os.environ.setdefault("CROSSWS_WORKER_ID", str(self.age))
        super().init_process()

    def run(self) -> None:
        gevent.spawn(forks.start_all)
        super().run()

    def handle_quit(self, sig: Any, frame: Any) -> None:
        gevent.spawn(self._graceful_then, super().handle_quit, sig, frame)

    def handle_exit(self, sig: Any, frame: Any) -> None:
        gevent.spawn(self._graceful_then, super().handle_exit, sig, frame)

    def _graceful_then(self, parent: Any, sig: Any, frame: Any) -> None:
        configured = os.environ.get("CROSSWS_SHUTDOWN_CODE")
        code = int(configured) if configured else None  # None: each adapter's shutdown_code
        timeout = max(1.0, min(10.0, float(self.cfg.graceful_timeout) - 1.0))
        forks.shutdown_all(code=code, timeout=timeout)
        parent(sig, frame)
