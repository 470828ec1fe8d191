"""The live cluster dashboard: one HTML page and its JSON snapshot, served by any node.

On when the adapter's ``dashboard`` option is given (:class:`~crossws_sync.config.DashboardOptions`).
Two exact paths join the node's endpoints (standalone listener and WSGI middleware alike):

* ``path``: ``crossws_sync/static/dashboard.html``, one self-contained page (inline script and
  style, no CDN, no library) that polls the snapshot every ``interval`` seconds and draws the
  message rates on a ``<canvas>``. Every string from the snapshot is set as ``textContent``; a
  Content-Security-Policy with the hashes of the inline script and style forbids anything else;
* ``path + "/data"``: the snapshot (:mod:`crossws_sync.core.cluster_view`), bounded whatever the
  cluster holds.

Both are GET/HEAD only, read-only, behind the ``auth`` hook and ``Cache-Control: no-store``. A
background greenlet samples the message counters every ``interval`` (a ring of ``history``
seconds, so a page opened now draws its chart at once). A snapshot is built at most twice per
interval, however many pages poll.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import gevent

from ..config import DashboardOptions, resolve_server_name
from ..core.cluster_view import (MAX_NODES, RateHistory, build_snapshot, clip, node_rows, rank_rooms,
                                 slow_consumer_rows)
from ..io.supervisor import supervise
from ..server.service import Reject, WebSocketService
from ..server.static import static_file
from ..wire.request import Request
from .local import LocalNode
from .runtime import Runtime

logger = logging.getLogger("crossws_sync.dashboard")

Readiness = Callable[[], Tuple[bool, str]]
StartResponse = Callable[..., Any]

#: The page, from the package's static files.
PAGE_FILE = "dashboard.html"


def content_security_policy(page: bytes) -> str:
    """A policy that lets exactly the page's inline ``<script>`` and ``<style>`` run (by hash)
    and the page fetch its own origin; no other script, style, image, frame or form."""
    text = page.decode("utf-8")
    hashes: Dict[str, List[str]] = {"script": [], "style": []}
    for tag in hashes:
        for body in re.findall(r"<%s>(.*?)</%s>" % (tag, tag), text, re.S):
            digest = base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode("ascii")
            hashes[tag].append("'sha256-%s'" % digest)
    return ("default-src 'none'; script-src %s; style-src %s; connect-src 'self'; img-src 'none'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
            % (" ".join(hashes["script"]) or "'none'", " ".join(hashes["style"]) or "'none'"))


class Dashboard:
    """The counters' sampler, the snapshot builder and the two WSGI apps of one node.

    Args:
        options: the checked ``dashboard`` option.
        service: the WebSocket service, or ``None`` (then no client traffic is shown).
        local: this node's users and rooms.
        runtime: the process's bus and router (read at each sample and snapshot; never started
            from here).
        server_name: returns this node's name.
        readiness: the readiness check (the health of this node's row).
        heartbeat_interval: the cluster heartbeat period (a peer's heartbeat is late past 1.5 of it).
    """

    def __init__(self, options: DashboardOptions, *, service: Optional[WebSocketService], local: LocalNode,
                 runtime: Runtime, server_name: Callable[[], Optional[str]], readiness: Readiness,
                 heartbeat_interval: float) -> None:
        self.options = options
        self.service = service
        self.local = local
        self.runtime = runtime
        self.server_name = server_name
        self.readiness = readiness
        self.heartbeat_interval = heartbeat_interval
        self.history = RateHistory(options.samples)
        self.page = static_file(PAGE_FILE)
        self.policy = content_security_policy(self.page)
        self._sampler: Optional[gevent.Greenlet] = None
        self._pid = 0
        self._cached: Optional[Tuple[float, bytes]] = None

    # Background (started and stopped with the node) -----------------------------------------------

    def start(self) -> None:
        """Sample now and every interval, in the process that serves (a worker after its fork)."""
        if self._sampler is not None and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._sampler = gevent.spawn(supervise, self._sample_loop, "dashboard sampler", logger, backoff=1.0)

    def stop(self) -> None:
        """Stop sampling."""
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.kill(block=False)

    def _sample_loop(self) -> None:
        while True:
            self.sample(time.time())
            gevent.sleep(self.options.interval)

    def sample(self, now: float) -> None:
        """Add one sample of the message counters to the rate history."""
        counters = {"in": 0, "out": 0, "bus_in": 0, "bus_out": 0}
        if self.service is not None:
            traffic = self.service.traffic()
            counters["in"], counters["out"] = traffic["messages_received"], traffic["messages_sent"]
        bus = self.runtime.bus
        if bus is not None:
            for redis_node in bus.redis_nodes:
                counters["bus_in"] += redis_node.counts["received"]
                counters["bus_out"] += redis_node.counts["published"]
        self.history.add(now, counters)

    # The snapshot ------------------------------------------------------------------------------------

    def snapshot(self, now: Optional[float] = None) -> Dict[str, Any]:
        """The snapshot as a dict (see :func:`crossws_sync.core.cluster_view.build_snapshot`)."""
        now = time.time() if now is None else now
        ready = self.readiness()
        name = self.server_name() or resolve_server_name(None)  # a nameless node: <host>-<pid>
        router = self.runtime.router
        sources: List[Any] = [self.local.rooms.view()]
        if router is not None:
            membership = router.membership
            nodes = membership.live_nodes()
            online_users = int(membership.cluster_stats()["online_users"])
            sources.extend(entry.rooms for entry in membership.directory.nodes.values())
        else:
            online_users = self.local.get_socket_client_count()
            nodes = [{"server_name": name, "users": online_users, "rooms": len(self.local.rooms),
                      "last_seen_ago": 0.0, "synced": True, "websocket": self.service is not None, "self": True}]
        totals: Dict[str, int] = {"connections": 0, "messages_received": 0, "messages_sent": 0,
                                  "slow_consumer_closes": 0, "bus_published": 0, "bus_received": 0}
        slow: List[Dict[str, Any]] = []
        if self.service is not None:
            traffic = self.service.traffic()
            totals.update(connections=len(self.service.clients), messages_received=traffic["messages_received"],
                          messages_sent=traffic["messages_sent"],
                          slow_consumer_closes=self.service.slow_consumer_closes)
            slow = slow_consumer_rows(self.service.slow_consumer_log)
        redis: List[Dict[str, Any]] = []
        bus = self.runtime.bus
        if bus is not None:
            lags = bus.delivery_lag
            for redis_node in bus.redis_nodes[:MAX_NODES]:
                counts = redis_node.counts
                lag = lags.get(redis_node.label)
                p99 = lag.quantile(0.99) if lag is not None and lag.count else None
                redis.append({"label": clip(redis_node.label), "publisher": bool(redis_node.publisher_healthy),
                              "subscriber": bool(redis_node.subscriber_healthy),
                              "published": counts["published"], "received": counts["received"],
                              # upper bound of the p99 bucket since start, ms (None: not timed yet or above 10 s)
                              "lag_p99_ms": p99 * 1000.0 if p99 is not None and p99 != float("inf") else None})
                totals["bus_published"] += counts["published"]
                totals["bus_received"] += counts["received"]
        return build_snapshot(
            node=name, now=now, interval=self.options.interval,
            nodes=node_rows(nodes, self.heartbeat_interval, ready), online_users=online_users, redis=redis,
            rates=self.history.rates(), totals=totals, rooms=rank_rooms(sources, self.options.top_rooms),
            slow_consumers=slow, ready=ready)

    def snapshot_json(self) -> bytes:
        """The snapshot as JSON, built at most once per half interval (every page shares it)."""
        now = time.monotonic()
        cached = self._cached
        if cached is not None and now - cached[0] < self.options.interval / 2:
            return cached[1]
        body = json.dumps(self.snapshot(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        self._cached = (now, body)
        return body

    # WSGI apps -------------------------------------------------------------------------------------

    def page_app(self, environ: Dict[str, Any], start_response: StartResponse) -> List[bytes]:
        """WSGI app of the page."""
        return self._serve(environ, start_response, lambda: (
            "text/html; charset=utf-8", self.page,
            [("Content-Security-Policy", self.policy), ("X-Frame-Options", "DENY")]))

    def data_app(self, environ: Dict[str, Any], start_response: StartResponse) -> List[bytes]:
        """WSGI app of the JSON snapshot."""
        return self._serve(environ, start_response, lambda: ("application/json; charset=utf-8", self.snapshot_json(), []))

    def _serve(self, environ: Dict[str, Any], start_response: StartResponse,
               content: Callable[[], Tuple[str, bytes, List[Tuple[str, str]]]]) -> List[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "HEAD"):
            return _answer(start_response, "405 Method Not Allowed", b"GET only\n", [("Allow", "GET, HEAD")])
        refusal = self._refusal(environ)
        if refusal is not None:
            status, body, headers = refusal
            return _answer(start_response, status, body, headers)
        content_type, body, headers = content()
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"),
                                  ("Referrer-Policy", "no-referrer")] + headers)
        return [body] if method == "GET" else []

    def _refusal(self, environ: Dict[str, Any]) -> Optional[Tuple[str, bytes, List[Tuple[str, str]]]]:
        auth = self.options.auth
        if auth is None:
            return None
        try:
            verdict: Any = auth(Request(environ))
        except Reject as reject:
            verdict = reject
        except Exception:
            logger.exception("dashboard auth hook raised; refusing the request")
            verdict = False
        if isinstance(verdict, Reject):
            return ("%d %s" % (verdict.status, _REASONS.get(verdict.status, "Refused")),
                    (verdict.body or "Refused").encode("utf-8") + b"\n", list(verdict.headers))
        if verdict is True:
            return None
        return "403 Forbidden", b"Forbidden\n", []


_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 429: "Too Many Requests"}


def _answer(start_response: StartResponse, status: str, body: bytes,
            headers: Optional[List[Tuple[str, str]]] = None) -> List[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store")] + list(headers or []))
    return [body]


__all__ = ["Dashboard", "PAGE_FILE", "content_security_policy"]
