"""The health check of one Redis node: publisher PINGs, a stalled-read watchdog, the server-name
check and the liveness probe, run by one supervised greenlet of :class:`~crossws_sync.bus.node.RedisNode`.

Every ``ping_interval`` (sooner while the publisher is down, at once when woken) the check PINGs
the publisher with a real timeout of ``ping_timeout`` and reports the result to the node, which
owns the health flags and their hook. It kills the subscriber's listener when a read stalls
mid-reply (a PING sent on the subscriber and not answered within ``ping_timeout + 0.5``), and
once, after the first subscription, counts the subscribers of the server-name channel with
``PUBSUB NUMSUB``.

With a *probe channel* (given by the node set while ``force_ping`` is on), it also publishes a
small probe on a channel private to this node, through the publisher, every ``ping_interval``,
and expects it back on the subscriber within ``ping_timeout``. A PING only shows that the
subscriber's server answers; the probe shows that it hears what is published: a subscriber left
on a server that no longer gets the publishes (a demoted primary, an address that moved) is
reported down with the event ``probe`` and made to reconnect.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional

import gevent
from gevent.event import Event

import redis

from ..errors import RedisUnavailableError
from .subscriber import Deaf, Stalled, Subscriber

logger = logging.getLogger("crossws_sync.nodes")

#: ``set_publisher(healthy, event, error)`` / ``set_subscriber(...)``: the node's health flips.
FlipHook = Callable[[bool, str, Optional[str]], None]


def _now() -> float:
    return time.monotonic()


class HealthCheck:
    """The health greenlet's work for one node (see the module docstring).

    Args:
        label: the node's label (for logs).
        command: runs one command on the node's publisher (``command("PING", timeout=...)``).
        subscriber: the node's subscriber (its PING in flight, its confirmed channels).
        listener: the subscriber's listener greenlet now (``None`` before start).
        publisher_up, subscriber_up: the node's health flags.
        set_publisher, set_subscriber: report a health flip to the node.
        stopped: the node is closed or abandoned: :meth:`run` returns.
        ping_interval, ping_timeout, force_ping: as for the node.
        name_check_channel: counted once with ``PUBSUB NUMSUB`` after the first subscription.
        on_name_conflict: ``(subscriber_count)`` when that count is above one.
        probe_channel: the liveness probe's channel (``None``: no probe).
    """

    def __init__(self, *, label: str, command: Callable[..., Any], subscriber: Subscriber,
                 listener: Callable[[], Optional[gevent.Greenlet]], publisher_up: Callable[[], bool],
                 subscriber_up: Callable[[], bool], set_publisher: FlipHook, set_subscriber: FlipHook,
                 stopped: Callable[[], bool], ping_interval: float, ping_timeout: float, force_ping: bool,
                 name_check_channel: Optional[str] = None,
                 on_name_conflict: Optional[Callable[[int], None]] = None,
                 probe_channel: Optional[str] = None) -> None:
        self.label = label
        self._command = command
        self._subscriber = subscriber
        self._listener = listener
        self._publisher_up = publisher_up
        self._subscriber_up = subscriber_up
        self._set_publisher = set_publisher
        self._set_subscriber = set_subscriber
        self._stopped = stopped
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.force_ping = force_ping
        #: Round trip of the last publisher PING in seconds (0.0 until measured).
        self.latency = 0.0
        #: Whether a publisher PING was ever answered.
        self.publisher_seen = False
        #: Set once the first publisher PING finished, answered or not.
        self.pinged = Event()
        self._wake = Event()
        self._name_check_channel = name_check_channel
        self._on_name_conflict = on_name_conflict
        self._name_check_due = False
        self._name_checked = False
        #: The liveness probe's channel (``None``: no probe).
        self.probe_channel = probe_channel
        #: When the probe in flight was sent (``None``: none in flight).
        self.probe_sent_at: Optional[float] = None
        self._probe_token = b""
        self._probe_seq = 0
        self._probe_due = 0.0
        #: Round trip of the last probe (publisher to own subscriber) in seconds.
        self.probe_latency = 0.0
        #: Probes that did not come back in time.
        self.probe_misses = 0

    def wake(self) -> None:
        """Run the next check now (a connection went down, the node is closing...)."""
        self._wake.set()

    def subscriber_ready(self) -> None:
        """The subscriber is subscribed: run the server-name check, once per check."""
        if self._name_check_channel and not self._name_checked:
            self._name_checked = True
            self._name_check_due = True
            self._wake.set()

    def run(self) -> None:
        """Check until the node stops; an ``Exception`` in one check is logged and the next one runs."""
        while not self._stopped():
            try:
                self.step()
            except gevent.GreenletExit:
                raise
            except Exception:  # supervised: never let health checking stop
                logger.exception("health check of %s failed; continuing", self.label)
            if self._publisher_up():
                interval = self.ping_interval if self.force_ping else max(self.ping_interval, 1.0)
            else:
                interval = min(self.ping_interval, 0.2 if not self.pinged.is_set() else 0.25)
            if self.probe_sent_at is not None:  # wake when the probe is due back
                interval = max(0.01, min(interval, self.probe_sent_at + self.ping_timeout - _now() + 0.01))
            if self._wake.wait(interval):
                self._wake.clear()

    def step(self) -> None:
        """One check: PING the publisher, watch the listener, the name check, the probe."""
        if not self._publisher_up() or self.force_ping:
            started = _now()
            try:
                self._command("PING", timeout=self.ping_timeout)
            except (RedisUnavailableError, redis.RedisError) as exc:
                self._set_publisher(False, "ping", str(exc))
            else:
                self.latency = _now() - started
                self._set_publisher(True, "ping" if self.publisher_seen else "connect", None)
                self.publisher_seen = True
            finally:
                self.pinged.set()
        # A read that stalls mid-reply never returns to the listener's own PING check.
        sent = self._subscriber.ping_sent_at
        if sent is not None and _now() - sent > self.ping_timeout + 0.5:
            self._kill_listener(Stalled("subscriber read stalled"))
        if self._name_check_due and self._publisher_up() and self._name_check_channel:
            self._name_check_due = False
            try:
                reply = self._command("PUBSUB", "NUMSUB", self._name_check_channel, timeout=self.ping_timeout)
                count = int(reply[1]) if isinstance(reply, list) and len(reply) > 1 else 0
            except (RedisUnavailableError, redis.RedisError, ValueError) as exc:
                logger.debug("server name check on %s failed: %s", self.label, exc)
                return
            if count > 1 and self._on_name_conflict is not None:
                self._on_name_conflict(count)
        if self.probe_channel is not None:
            self.probe_step()

    # Liveness probe -----------------------------------------------------------------------

    def probe_step(self) -> None:
        """Send the next probe when one is due, or report the one in flight as missed.

        The probe is published through the publisher and must come back on the subscriber: a
        subscriber that answers PINGs but is not on the server the publishes go to (or lost its
        subscriptions there) misses it. A miss marks the subscriber down (event ``probe``) and
        makes it reconnect (re-resolving a Sentinel primary, re-subscribing every channel).
        """
        channel = self.probe_channel
        assert channel is not None
        now = _now()
        if self.probe_sent_at is not None:
            if now - self.probe_sent_at > self.ping_timeout:
                self._probe_missed("probe not received within %.1fs" % self.ping_timeout)
            return
        if (now < self._probe_due or not (self._publisher_up() and self._subscriber_up())
                or not self._subscriber.is_subscribed(channel)):
            return
        self._probe_seq += 1
        token = b"%d" % self._probe_seq
        self._probe_token, self.probe_sent_at = token, now
        self._probe_due = now + self.ping_interval
        try:
            receivers = int(self._command("PUBLISH", channel, token, timeout=self.ping_timeout))
        except (RedisUnavailableError, redis.RedisError, ValueError) as exc:
            self.probe_sent_at = None  # the publisher's failure: its own PING reports it
            logger.debug("probe publish on %s failed: %s", self.label, exc)
            return
        if receivers == 0 and self.probe_sent_at is not None and self._subscriber.is_subscribed(channel):
            self._probe_missed("the probe reached no subscriber (publisher and subscriber on different servers?)")

    def probe_received(self, raw: bytes) -> None:
        """A message on the probe channel: the probe in flight, if it is that one, is back."""
        if self.probe_sent_at is not None and raw == self._probe_token:
            self.probe_latency = _now() - self.probe_sent_at
            self.probe_sent_at = None

    def _probe_missed(self, error: str) -> None:
        self.probe_sent_at = None
        self.probe_misses += 1
        if not self._subscriber_up():
            return
        self._set_subscriber(False, "probe", error)
        self._kill_listener(Deaf(error))

    def _kill_listener(self, error: BaseException) -> None:
        listener = self._listener()
        if listener is not None and not listener.dead:
            listener.kill(error, block=False)


__all__ = ["FlipHook", "HealthCheck"]
