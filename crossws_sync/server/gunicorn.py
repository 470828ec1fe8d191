"""gunicorn worker for crossws_sync: ``gunicorn -k crossws_sync.server.gunicorn.GeventWebSocketWorker -w N app:app``.

* New connections take the accept path of :mod:`crossws_sync.server.accept`
  (:class:`WebSocketPyWSGIServer`): no greenlet while a request head is awaited, an upgrade
  served from one read; other requests go to gunicorn's own pywsgi handler with
  :class:`~crossws_sync.server.wsgi.UpgradeHandlerMixin`; ``--access-logfile`` keeps working
  for both.
* On SIGTERM / SIGINT / SIGQUIT every adapter of the worker closes its clients with its
  ``shutdown_code`` (1012 Service Restart with a retry hint unless set; ``CROSSWS_SHUTDOWN_CODE``
  overrides it),
  deregisters from the cluster and stops its background greenlets, well inside
  ``--graceful-timeout``.
* Adapters created at import time (also with ``--preload``) start their Redis connections and
  greenlets lazily in the worker after the fork; each worker is a separate cluster node.
"""
from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from typing import Any, Dict

import gevent
from gunicorn.workers.ggevent import GeventPyWSGIWorker, GeventResponse, PyWSGIHandler, PyWSGIServer

from ..io import forks
from ..wire.headers import UpgradeHead
from .accept import UpgradeResponse, UpgradeServer
from .wsgi import DEFAULT_HEAD_GUARD, UpgradeHandlerMixin

logger = logging.getLogger("crossws_sync.wsgi")


class WebSocketPyWSGIHandler(UpgradeHandlerMixin, PyWSGIHandler):
    """gunicorn's pywsgi handler (access log) with crossws_sync's upgrade handling."""


class WebSocketPyWSGIServer(UpgradeServer, PyWSGIServer):
    """gunicorn's pywsgi server with the accept path of :mod:`crossws_sync.server.accept`: the
    environ has what gunicorn's handler adds (``gunicorn.sock``, ``RAW_URI``) and upgrades are
    written to gunicorn's access log (``--access-logfile``). The head limits are the adapters'
    (``handshake_timeout``, ``max_handshake_bytes``, ``max_pending_handshakes``)."""

    crossws_head_guard = DEFAULT_HEAD_GUARD

    def upgrade_environ(self, head: UpgradeHead, sock: Any, address: Any) -> Dict[str, Any]:
        environ = super().upgrade_environ(head, sock, address)
        environ["gunicorn.sock"] = sock
        environ["RAW_URI"] = head.target
        return environ

    def log_upgrade(self, head: UpgradeHead, address: Any, environ: Dict[str, Any], response: UpgradeResponse,
                    started: float) -> None:
        try:
            answer = GeventResponse(response.status, response.headers, response.length)
            self.log.access(answer, head.headers.items(), environ, timedelta(seconds=time.time() - started))
        except Exception:  # a broken log must not break the connection
            logger.debug("access log failed", exc_info=True)


class GeventWebSocketWorker(GeventPyWSGIWorker):
    """gevent pywsgi worker with WebSocket support and graceful WebSocket shutdown."""

    server_class = WebSocketPyWSGIServer
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
