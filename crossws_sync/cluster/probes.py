"""Liveness and readiness probes for load balancers and orchestrators.

* liveness (``/healthz``): 200 ``ok`` whenever the process answers HTTP;
* readiness (``/readyz``): 200 ``ready`` when the node can take traffic, else 503 with the reason
  as a short text: ``shutting down``, ``not started``, ``redis unreachable`` (no Redis node has
  a healthy publisher) or ``not registered`` (the node has not announced itself to the cluster).
  Without ``redis_config`` only shutting down makes a node unready.

Served before the application when the adapter's ``health`` option is on (exact paths only).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

from .runtime import Runtime

Readiness = Callable[[], Tuple[bool, str]]


def node_readiness(*, runtime: Runtime, closed: Callable[[], bool], started: Callable[[], bool]) -> Readiness:
    """Return the readiness check of one node.

    Args:
        runtime: the process's bus and router (read at each check).
        closed: whether the node is shutting down or shut down.
        started: whether the node was started (``start()``, autostart or a first request).
    """

    def readiness() -> Tuple[bool, str]:
        if closed():
            return False, "shutting down"
        if not runtime.redis_enabled:
            return True, "ready"
        bus, router = runtime.bus, runtime.router
        if bus is None or router is None:
            return False, "not started" if not started() else "redis side not started"
        if not bus.healthy:
            return False, "redis unreachable"
        if not router.membership.registered:
            return False, "not registered"
        return True, "ready"

    return readiness


class LivenessEndpoint:
    """WSGI app: 200 ``ok`` (GET and HEAD)."""

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> List[bytes]:
        return _answer(environ, start_response, True, "ok")


class ReadinessEndpoint:
    """WSGI app: 200 ``ready`` or 503 with the reason (GET and HEAD)."""

    def __init__(self, readiness: Readiness) -> None:
        self.readiness = readiness

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> List[bytes]:
        ready, reason = self.readiness()
        return _answer(environ, start_response, ready, reason)


def _answer(environ: Dict[str, Any], start_response: Callable[..., Any], ok: bool, text: str) -> List[bytes]:
    body = (text + "\n").encode("utf-8")
    start_response("200 OK" if ok else "503 Service Unavailable",
                   [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                    ("Cache-Control", "no-store")])
    return [body] if environ.get("REQUEST_METHOD") != "HEAD" else []


__all__ = ["LivenessEndpoint", "ReadinessEndpoint", "Readiness", "node_readiness"]
