"""What every Python bench server shares: its command line and the bench payloads.

Each server is started by ``bench/run.py`` as its own process::

    python bench/servers/<system>_server.py --port P [--node-index I --nodes N --redis-port R]

and speaks the bench protocol described in ``bench/README.md``.
"""
from __future__ import annotations

import argparse
import gc
import hashlib
import hmac
import logging
import sys
import time
from typing import Any, Callable, Dict, List, Optional


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse a bench server's command line.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        Namespace with ``port``, ``node_index``, ``nodes`` and ``redis_port`` (0 = no Redis).
    """
    parser = argparse.ArgumentParser(description="bench server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--node-index", type=int, default=0)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--redis-port", type=int, default=0)
    parser.add_argument("--recovery", action="store_true", help="crossws only: connection_state_recovery on")
    parser.add_argument("--auth", action="store_true",
                        help="W10: check the query's token at the upgrade (bench_token), map the user, push 'welcome'")
    parser.add_argument("--redis-urls", default="", help="crossws only: comma-separated redis_config entries "
                        "(several independent nodes), or one redis+cluster:// URL; replaces --redis-port")
    parser.add_argument("--shutdown-code", type=int, default=None, help="crossws only: shutdown_code (W8: 1012)")
    parser.add_argument("--restart-retry-window", type=float, default=None,
                        help="crossws only: restart_retry_window, the spread of 1012's retry hints (s)")
    parser.add_argument("--max-accept-rate", type=float, default=None,
                        help="crossws only: max_accept_rate, upgrades per second (503 + Retry-After beyond)")
    parser.add_argument("--accept-burst", type=int, default=None, help="crossws only: accept_burst")
    args = parser.parse_args(argv)
    raise_nofile_limit()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return args


def raise_nofile_limit() -> None:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (W7 and W8 hold thousands of
    sockets per process); the bench processes do it, the library never does."""
    try:
        import resource
    except ImportError:  # pragma: no cover (not POSIX)
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


#: W10's shared secret: a client's token is HMAC-SHA256(secret, user id), first 32 hex digits
#: (bench/node/loadgen.js computes the same).
TOKEN_SECRET = b"crossws-bench-secret"


def bench_token(user_id: str) -> str:
    """The token that W10's auth hook expects for ``user_id``."""
    return hmac.new(TOKEN_SECRET, user_id.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def token_ok(user_id: Optional[str], token: Optional[str]) -> bool:
    """Whether ``token`` is ``user_id``'s W10 token (constant-time comparison)."""
    if not user_id or not token or not isinstance(user_id, str) or not isinstance(token, str):
        return False
    return hmac.compare_digest(bench_token(user_id), token)


def bench_payload(seq: int, pad: str, room: Optional[str] = None) -> Dict[str, Any]:
    """The ~100-byte payload of one pushed ``bench`` event."""
    if room is None:
        return {"seq": seq, "pad": pad}
    return {"seq": seq, "room": room, "pad": pad}


def percentiles_ms(samples: List[float]) -> Dict[str, Optional[float]]:
    """p50 and p99 of latencies given in seconds, in milliseconds (nearest rank)."""
    if not samples:
        return {"p50_ms": None, "p99_ms": None}
    ordered = sorted(samples)

    def rank(q: float) -> float:
        index = min(len(ordered) - 1, max(0, int(-(-q * len(ordered) // 1)) - 1))
        return ordered[index] * 1000.0

    return {"p50_ms": rank(0.5), "p99_ms": rank(0.99)}


def run_rpc_loops(call: Callable[[], bool], loops: int, duration: float,
                  spawn: Callable[..., Any], joinall: Callable[..., Any]) -> Dict[str, Any]:
    """W6: ``loops`` concurrent closed loops of ``call()`` for ``duration`` seconds.

    Args:
        call: one RPC; returns True when it got every expected response.
        loops: number of concurrent loops (greenlets).
        duration: seconds each loop keeps issuing calls.
        spawn: ``gevent.spawn``.
        joinall: ``gevent.joinall``.

    Returns:
        ``{"calls", "calls_per_s", "failures", "p50_ms", "p99_ms", "elapsed_s"}``.
    """
    latencies: List[float] = []
    failures = [0]
    started = time.monotonic()
    end = started + duration

    def loop() -> None:
        while time.monotonic() < end:
            t0 = time.monotonic()
            ok = call()
            if ok:
                latencies.append(time.monotonic() - t0)
            else:
                failures[0] += 1

    joinall([spawn(loop) for _ in range(loops)], timeout=duration + 30)
    elapsed = time.monotonic() - started
    result: Dict[str, Any] = {"calls": len(latencies), "calls_per_s": len(latencies) / elapsed,
                              "failures": failures[0], "elapsed_s": elapsed}
    result.update(percentiles_ms(latencies))
    return result


def collect_garbage() -> Dict[str, Any]:
    """Run a full collection before the runner reads RSS (W7)."""
    gc.collect()
    return {"gc": True}



def run_rpc_rate(call: Callable[[], bool], rate: float, duration: float, spawn: Callable[..., Any],
                 joinall: Callable[..., Any], sleep: Callable[[float], Any], queue: Any,
                 workers: int = 256) -> Dict[str, Any]:
    """W6L: open loop, ``rate`` calls per second for ``duration`` seconds, whatever the replies do.

    A dispatcher releases the calls on schedule (it wakes every millisecond and releases every
    call that is due) into ``queue`` (a ``gevent.queue.Queue``); ``workers`` greenlets make
    them. A call's latency runs from its release, so time spent waiting for a free worker
    counts (no coordinated omission). Calls still in line when the window ends are not made
    (``unstarted``).

    Returns:
        ``{"calls", "calls_per_s", "offered_per_s", "failures", "unstarted", "p50_ms",
        "p99_ms", "behind_ms_max", "elapsed_s"}``; ``behind_ms_max`` is how late the dispatcher
        released a call at worst (its own lag, not the system's).
    """
    latencies: List[float] = []
    failures = [0]
    started = time.monotonic()
    end = started + duration
    state = {"released": 0, "behind": 0.0, "unstarted": 0}

    def worker() -> None:
        while True:
            released = queue.get()
            if released is None:
                return
            if time.monotonic() >= end:
                state["unstarted"] += 1
                continue
            if call():
                latencies.append(time.monotonic() - released)
            else:
                failures[0] += 1

    def dispatcher() -> None:
        while True:
            now = time.monotonic()
            if now >= end:
                break
            due = int((now - started) * rate) + 1
            while state["released"] < due:
                scheduled = started + state["released"] / rate
                state["behind"] = max(state["behind"], now - scheduled)
                queue.put(now)
                state["released"] += 1
            sleep(0.001)
        for _ in range(workers):
            queue.put(None)

    greenlets = [spawn(worker) for _ in range(workers)]
    joinall([spawn(dispatcher)] + greenlets, timeout=duration + 30)
    elapsed = time.monotonic() - started
    result: Dict[str, Any] = {"calls": len(latencies), "calls_per_s": len(latencies) / duration,
                              "offered_per_s": state["released"] / duration, "failures": failures[0],
                              "unstarted": state["unstarted"], "behind_ms_max": state["behind"] * 1000.0,
                              "elapsed_s": elapsed}
    result.update(percentiles_ms(latencies))
    return result
