"""Prometheus metrics of one node, read from the counters the library keeps anyway.

Imported only when the adapter's ``metrics`` option is on (it needs the ``metrics`` extra,
``prometheus_client``). :class:`NodeCollector` is a custom collector: nothing is counted on the
hot paths for it beyond the plain ``int`` additions the service, the connections, the Redis
nodes and the bus already make; the families are built at scrape time from those counters. It
is registered in a private ``CollectorRegistry`` (never the process's default one).

Every sample carries ``node="<server_name>"``. Under gunicorn every worker is a node and a scrape
of the shared port reaches one worker at random; with a *multiprocess directory*
(:class:`MultiprocessExport`) every worker writes its exposition there every few seconds and a
scrape of any worker answers with every live worker's samples (merged by family, told apart by
``node``). The metric names, types and labels are listed in docs/operations.md ("Metrics and
health").
"""
from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import gevent
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
                                    SummaryMetricFamily)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from ..config import MetricsOptions, resolve_server_name
from ..io.supervisor import supervise
from ..server.service import REJECT_REASONS, WebSocketService
from ..server.wsgi import HeadGuard
from ..wire.request import Request
from .local import LocalNode
from .runtime import Runtime

if TYPE_CHECKING:
    from .asks import Asks

logger = logging.getLogger("crossws_sync.metrics")

#: The prefix of every metric name.
PREFIX = "crossws_"
#: Seconds between two writes of a worker's file in the multiprocess directory; a file older than
#: :data:`STALE_AFTER` belongs to a worker that is gone and is ignored (then removed).
EXPORT_INTERVAL = 5.0
STALE_AFTER = 3 * EXPORT_INTERVAL

Readiness = Callable[[], Tuple[bool, str]]


class NodeCollector(Collector):
    """Builds this node's metric families from the library's counters at scrape time.

    Args:
        service: the WebSocket service, or ``None`` (a bus-only node).
        local: this node's users and rooms.
        runtime: the process's bus, router and recovery (read at each scrape: they change on
            start and after a fork).
        server_name: returns this node's name (the ``node`` label).
        head_guard: the standalone listener's request-head guard (its refusals).
        asks: the server-to-client requests (``ack_stats``).
        readiness: the readiness check (``crossws_ready``).
    """

    def __init__(self, *, service: Optional[WebSocketService], local: LocalNode, runtime: Runtime,
                 server_name: Callable[[], Optional[str]], head_guard: Optional[HeadGuard] = None,
                 asks: Optional["Asks"] = None, readiness: Optional[Readiness] = None) -> None:
        self.service = service
        self.local = local
        self.runtime = runtime
        self.server_name = server_name
        self.head_guard = head_guard
        self.asks = asks
        self.readiness = readiness

    def collect(self) -> Iterator[Metric]:
        node = self.server_name() or resolve_server_name(None)  # a nameless node: <host>-<pid>
        families: List[Metric] = []
        families.extend(self._node_families(node))
        if self.service is not None:
            families.extend(self._websocket_families(node, self.service))
        if self.head_guard is not None:
            failures = CounterMetricFamily(PREFIX + "handshake_failures", "HTTP request heads refused before any "
                                           "upgrade (timeout, too large, evicted)", labels=["node", "reason"])
            for key, value in self.head_guard.stats.items():
                failures.add_metric([node, key], value)
            families.append(failures)
        if self.asks is not None:
            asks = CounterMetricFamily(PREFIX + "server_requests", "Server-to-client requests (ack_stats), by event",
                                       labels=["node", "event"])
            for key, value in self.asks.stats.items():
                asks.add_metric([node, key], value)
            families.append(asks)
        if self.runtime.bus is not None:
            families.extend(self._bus_families(node, self.runtime.bus))
        if self.runtime.router is not None:
            families.extend(self._cluster_families(node, self.runtime.router))
        recovery = self.runtime.recovery
        if recovery is not None:
            events = CounterMetricFamily(PREFIX + "recovery_events", "Connection state recovery events",
                                         labels=["node", "event"])
            for key, value in recovery.stats.items():
                events.add_metric([node, key], value)
            families.append(events)
        return iter(families)

    # Families ------------------------------------------------------------------------------

    def _node_families(self, node: str) -> Iterable[Metric]:
        users = GaugeMetricFamily(PREFIX + "users", "User ids mapped to a socket on this node", labels=["node"])
        users.add_metric([node], self.local.get_socket_client_count())
        rooms = GaugeMetricFamily(PREFIX + "rooms", "Rooms with at least one member on this node", labels=["node"])
        rooms.add_metric([node], len(self.local.rooms))
        families: List[Metric] = [users, rooms]
        if self.readiness is not None:
            ready = GaugeMetricFamily(PREFIX + "ready", "1 when /readyz would answer 200", labels=["node"])
            ready.add_metric([node], 1 if self.readiness()[0] else 0)
            families.append(ready)
        return families

    def _websocket_families(self, node: str, service: WebSocketService) -> Iterable[Metric]:
        labels = ["node"]
        connections = GaugeMetricFamily(PREFIX + "connections", "Open WebSocket connections", labels=labels)
        connections.add_metric([node], len(service.clients))
        accepted = CounterMetricFamily(PREFIX + "connections_accepted", "WebSocket upgrades accepted", labels=labels)
        accepted.add_metric([node], service.accepted)
        rejected = CounterMetricFamily(PREFIX + "connections_rejected", "WebSocket upgrades refused, by reason",
                                       labels=["node", "reason"])
        for reason in REJECT_REASONS:
            rejected.add_metric([node, reason], service.rejections.get(reason, 0))
        closed = CounterMetricFamily(PREFIX + "connections_closed", "WebSocket connections closed, by close code",
                                     labels=["node", "code"])
        for code, count in sorted(service.closes.items()):
            closed.add_metric([node, str(code)], count)
        slow = CounterMetricFamily(PREFIX + "slow_consumer_closes", "Connections dropped because their outbox "
                                   "passed max_outbox_bytes", labels=labels)
        slow.add_metric([node], service.slow_consumer_closes)
        traffic = service.traffic()
        counters: List[Metric] = [connections, accepted, rejected, closed, slow]
        for key, name, text in (
                ("messages_received", "messages_received", "WebSocket data messages received from clients"),
                ("messages_sent", "messages_sent", "WebSocket data frames sent to clients"),
                ("bytes_received", "received_bytes", "Bytes read from WebSocket connections (frames, after TLS)"),
                ("bytes_sent", "sent_bytes", "Bytes of data frames written to WebSocket connections")):
            family = CounterMetricFamily(PREFIX + name, text, labels=labels)
            family.add_metric([node], traffic[key])
            counters.append(family)
        outbox = GaugeMetricFamily(PREFIX + "outbox_bytes", "Bytes queued for slow readers, all connections",
                                   labels=labels)
        outbox.add_metric([node], service.outbox_bytes())
        fanout = SummaryMetricFamily(PREFIX + "broadcast_fanout_seconds", "Time spent writing one broadcast "
                                     "frame to every local client", labels=labels)
        fanout.add_metric([node], count_value=service.fanouts, sum_value=service.fanout_seconds)
        rejected_total = CounterMetricFamily(PREFIX + "bad_frames", "Frames that broke the protocol or the "
                                             "event format", labels=labels)
        rejected_total.add_metric([node], service.stats["bad_frames"])
        rate_limited = CounterMetricFamily(PREFIX + "rate_limited_messages", "Client messages dropped by the "
                                           "rate limit", labels=labels)
        rate_limited.add_metric([node], service.stats["rate_limited"])
        return counters + [outbox, fanout, rejected_total, rate_limited]

    def _bus_families(self, node: str, bus: Any) -> Iterable[Metric]:
        labels = ["node", "redis"]
        per_node = {
            "published": CounterMetricFamily(PREFIX + "bus_published", "Messages published through a Redis node",
                                             labels=labels),
            "received": CounterMetricFamily(PREFIX + "bus_received", "Messages received from a Redis node",
                                            labels=labels),
            "decode_errors": CounterMetricFamily(PREFIX + "bus_decode_errors", "Messages from a Redis node that "
                                                 "could not be decoded", labels=labels),
            "failovers": CounterMetricFamily(PREFIX + "bus_failovers", "Publishes that failed on a Redis node and "
                                             "moved to another (or failed)", labels=labels),
        }
        up = GaugeMetricFamily(PREFIX + "redis_up", "1 while both connections to a Redis node are healthy",
                               labels=labels)
        for redis_node in bus.redis_nodes:
            label = [node, redis_node.label]
            for key, family in per_node.items():
                family.add_metric(label, redis_node.counts[key])
            up.add_metric(label, 1 if (redis_node.publisher_healthy and redis_node.subscriber_healthy) else 0)
        lag = HistogramMetricFamily(PREFIX + "bus_delivery_lag_seconds", "Publish to delivery through a Redis "
                                    "node, timed on a sample of this node's own messages coming back",
                                    labels=labels)
        for label, histogram in sorted(bus.delivery_lag.items()):
            lag.add_metric([node, label], histogram.cumulative(), sum_value=histogram.sum)
        stats = bus.stats
        failures = CounterMetricFamily(PREFIX + "bus_publish_failures", "Publishes that no Redis node took",
                                       labels=["node"])
        failures.add_metric([node], stats["publish_failures"])
        missed = CounterMetricFamily(PREFIX + "bus_messages_missed", "Messages of peers that never reached this "
                                     "node (sequence gaps)", labels=["node"])
        missed.add_metric([node], stats["messages_missed"])
        signature = CounterMetricFamily(PREFIX + "signature_failures", "Bus messages refused by the signing check",
                                        labels=["node"])
        signature.add_metric([node], bus.codec.signature_failures)
        calls = bus.calls
        rpc = SummaryMetricFamily(PREFIX + "rpc_duration_seconds", "Cross-server emits that got every expected "
                                  "reply, and how long they waited", labels=["node"])
        rpc.add_metric([node], count_value=calls.completed, sum_value=calls.completed_seconds)
        timeouts = CounterMetricFamily(PREFIX + "rpc_timeouts", "Cross-server emits that timed out", labels=["node"])
        timeouts.add_metric([node], calls.timeouts)
        pending = GaugeMetricFamily(PREFIX + "rpc_pending", "Cross-server emits waiting for replies", labels=["node"])
        pending.add_metric([node], len(calls))
        return list(per_node.values()) + [up, lag, failures, missed, signature, rpc, timeouts, pending]

    def _cluster_families(self, node: str, router: Any) -> Iterable[Metric]:
        stats = router.stats
        depth = GaugeMetricFamily(PREFIX + "outage_buffer_messages", "Messages held while no Redis node is healthy",
                                  labels=["node"])
        depth.add_metric([node], len(router.outage))
        outage = CounterMetricFamily(PREFIX + "outage_buffer_events", "Messages buffered, flushed and dropped by "
                                     "the outage buffer", labels=["node", "event"])
        for event in ("buffered", "flushed", "dropped"):
            outage.add_metric([node, event], stats["outage_" + event])
        live = GaugeMetricFamily(PREFIX + "cluster_nodes", "Live cluster nodes seen from this node (itself included)",
                                 labels=["node"])
        live.add_metric([node], len(router.membership.live_nodes()))
        return [depth, outage, live]


class MultiprocessExport:
    """The files of the workers of one gunicorn master in a shared directory.

    Each worker writes its own exposition to ``<directory>/crossws-<pid>.prom`` every
    :data:`EXPORT_INTERVAL` seconds and on every scrape it answers; a scrape reads every fresh
    file and merges the families (samples are told apart by their ``node`` label).
    """

    def __init__(self, directory: str, registry: CollectorRegistry, interval: float = EXPORT_INTERVAL) -> None:
        self.directory = directory
        self.registry = registry
        self.interval = interval
        self._writer: Optional[gevent.Greenlet] = None
        self._pid = 0

    @property
    def own_file(self) -> str:
        return os.path.join(self.directory, "crossws-%d.prom" % os.getpid())

    def start(self) -> None:
        """Write now and every interval (in the process that serves: a worker after its fork)."""
        if self._writer is not None and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        os.makedirs(self.directory, exist_ok=True)
        self._writer = gevent.spawn(supervise, self._write_loop, "metrics export", logger, backoff=1.0)

    def stop(self) -> None:
        """Stop writing and remove this worker's file."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.kill(block=False)
        try:
            os.unlink(self.own_file)
        except OSError:
            pass

    def _write_loop(self) -> None:
        while True:
            self.write(generate_latest(self.registry))
            gevent.sleep(self.interval)

    def write(self, exposition: bytes) -> None:
        """Replace this worker's file atomically."""
        path = self.own_file
        temporary = path + ".tmp"
        with open(temporary, "wb") as stream:
            stream.write(exposition)
        os.replace(temporary, path)

    def merged(self, own: bytes) -> bytes:
        """Every fresh worker file (ours replaced by ``own``) merged into one exposition."""
        self.write(own)
        now = time.time()
        families: Dict[str, Metric] = {}
        for name in sorted(os.listdir(self.directory)):
            if not (name.startswith("crossws-") and name.endswith(".prom")):
                continue
            path = os.path.join(self.directory, name)
            try:
                if now - os.path.getmtime(path) > STALE_AFTER:
                    os.unlink(path)  # a worker that is gone
                    continue
                with open(path, "rb") as stream:
                    text = stream.read().decode("utf-8")
            except OSError:
                continue
            for family in text_string_to_metric_families(text):
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type)
                merged.samples.extend(family.samples)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Fixed(list(families.values())))
        return generate_latest(registry)


class _Fixed(Collector):
    def __init__(self, families: List[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


class MetricsEndpoint:
    """The WSGI app behind the metrics path: GET answers the Prometheus text format.

    Args:
        collector: this node's collector.
        options: the checked ``metrics`` option (path, auth, multiprocess directory).
    """

    def __init__(self, collector: NodeCollector, options: MetricsOptions) -> None:
        self.options = options
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.export = (MultiprocessExport(options.multiprocess_dir, self.registry)
                       if options.multiprocess_dir else None)

    def __call__(self, environ: Dict[str, Any], start_response: Callable[..., Any]) -> List[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "HEAD"):
            return _text(start_response, "405 Method Not Allowed", b"GET only", [("Allow", "GET, HEAD")])
        auth = self.options.auth
        if auth is not None:
            try:
                allowed = bool(auth(Request(environ)))
            except Exception:
                logger.exception("metrics auth hook raised; refusing the scrape")
                allowed = False
            if not allowed:
                return _text(start_response, "403 Forbidden", b"Forbidden")
        body = generate_latest(self.registry)
        if self.export is not None:
            body = self.export.merged(body)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])
        return [body] if method == "GET" else []


def _text(start_response: Callable[..., Any], status: str, body: bytes,
          headers: Optional[List[Tuple[str, str]]] = None) -> List[bytes]:
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store")] + list(headers or []))
    return [body]


__all__ = ["EXPORT_INTERVAL", "MetricsEndpoint", "MultiprocessExport", "NodeCollector", "PREFIX", "STALE_AFTER"]
