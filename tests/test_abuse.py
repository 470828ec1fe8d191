"""Abuse from clients against a real server process: a seeded frame fuzzer, floods of valid
frames, a reader that never reads, connection floods and the per-connection rate limit.

The server runs in its own process (``tests/fault_node.py``) so its memory, file descriptors
and greenlets can be measured from outside; a *canary* client asks ``echo`` every 20 ms the
whole time and its round trips are the "other clients keep their latency" figures.
"""
from __future__ import annotations

import json
import random
import socket
import struct
import time
from typing import Any, Callable, List, Optional, Set, Tuple, Union

import gevent
import gevent.pool
import pytest

from crossws_sync.wire import frames
from faultkit import Canary, NodeProcess, ask, latency_summary, mib, record
from rawclient import HandshakeRejected, RawClient
from support import wait_for

LIMIT = 65536  # --max-message-size of the fuzzed server
SEED = 20260607
CASES = 1500

Expect = Union[str, Set[int]]  # "keep", "any" or the close codes the server may answer with


@pytest.fixture
def server():
    """Factory of server processes (no Redis); all killed at teardown."""
    started: List[NodeProcess] = []

    def start(*extra: str) -> NodeProcess:
        node = NodeProcess("abuse%d" % len(started), extra=list(extra)).wait_ready()
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def _diag(port: int) -> Any:
    client = RawClient(port)
    try:
        return ask(client, "diag", timeout=10)
    finally:
        client.abort()


# The fuzzer -----------------------------------------------------------------------------------

def frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0,
          declared: Optional[int] = None) -> bytes:
    """Any frame, including the ones a correct client never sends (RSV bits, no mask, lies)."""
    length = len(payload) if declared is None else declared
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask else 0
    if length < 126:
        header = bytes((first, mask_bit | length))
    elif length < 65536:
        header = bytes((first, mask_bit | 126)) + struct.pack("!H", length)
    else:
        header = bytes((first, mask_bit | 127)) + struct.pack("!Q", length)
    if not mask:
        return header + payload
    key = bytes(random.getrandbits(8) for _ in range(4))
    return header + key + frames.unmask(payload, key)


def text(value: str) -> bytes:
    return frame(frames.OP_TEXT, value.encode("utf-8"))


def close(payload: bytes) -> bytes:
    return frame(frames.OP_CLOSE, payload)


def _echo(payload: Any, callback_id: str = "f") -> str:
    return json.dumps({"event": "echo", "payload": payload, "callbackId": callback_id})


def _bad_json(rng: random.Random) -> Tuple[str, bytes, Expect]:
    choices = ['{', '{"event":', 'nul', '{"event":"echo","payload":}', "}{", '"just a string',
               "".join(chr(rng.randrange(32, 127)) for _ in range(rng.randrange(1, 200))), "\x00" * 10]
    return "bad_json", text(rng.choice(choices)), "keep"


def _wrong_shape(rng: random.Random) -> Tuple[str, bytes, Expect]:
    value = rng.choice([[], 1, "s", None, True, {"event": 5}, {"event": ""}, {"payload": 1}, {"event": ["echo"]},
                        {"event": "echo", "callbackId": 123, "payload": 1},
                        {"event": "echo", "callbackId": "x" * 65, "payload": 1},
                        {"event": "constructor"}, {"event": "__proto__", "payload": {}}, {"event": "toString"},
                        {"event": "connection", "payload": {"url": "/?id=victim", "headers": {}}},
                        {"event": "close", "payload": {}}, {"event": "x" * 5000, "payload": 1}])
    return "wrong_shape", text(json.dumps(value)), "keep"


def _deep(rng: random.Random) -> Tuple[str, bytes, Expect]:
    depth = rng.choice([100, 1000, 10000, 30000])
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
    body = '{"event":"echo","payload":%s%s,"callbackId":"deep"}' % (opener * depth, closer * depth)
    payload = body.encode()
    return "deep_nesting_%d" % depth, text(body), "keep" if len(payload) <= LIMIT else {1009}


def _huge(rng: random.Random) -> Tuple[str, bytes, Expect]:
    size = rng.choice([1000, 30000, LIMIT - 60, LIMIT + 10, 200000])
    body = _echo("x" * size, "huge").encode()
    return "huge_string_%d" % size, frame(frames.OP_TEXT, body), "keep" if len(body) <= LIMIT else {1009}


def _lying_length(rng: random.Random) -> Tuple[str, bytes, Expect]:
    declared = rng.choice([LIMIT + 1, 1 << 31, (1 << 63) - 1])
    return "declared_length_%d" % declared, frame(frames.OP_TEXT, b"{}", declared=declared), {1009}


def _invalid_utf8(rng: random.Random) -> Tuple[str, bytes, Expect]:
    bad = rng.choice([b"\xff\xfe", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80"])
    body = b'{"event":"echo","payload":"' + bad + b'"}'
    if rng.random() < 0.5:  # RFC 6455 §8.1: invalid text fails the connection
        return "invalid_utf8_text", frame(frames.OP_TEXT, body), {1007}
    return "invalid_utf8_binary", frame(frames.OP_BINARY, body), "keep"  # binary is bytes, not text


def _binary(rng: random.Random) -> Tuple[str, bytes, Expect]:
    if rng.random() < 0.5:
        return "binary_json", frame(frames.OP_BINARY, _echo([1, 2, 3], "bin").encode()), "keep"
    data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300)))
    return "binary_random", frame(frames.OP_BINARY, data), "keep"  # any bytes are a valid binary message


def _control(rng: random.Random) -> Tuple[str, bytes, Expect]:
    kind = rng.randrange(7)
    if kind == 0:
        return "ping_126_bytes", frame(frames.OP_PING, b"p" * 126), {1002}
    if kind == 1:
        return "ping_fragmented", frame(frames.OP_PING, b"p", fin=False), {1002}
    if kind == 2:
        return "close_1_byte", close(b"\x03"), {1002}
    if kind == 3:
        code = rng.choice([0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535])
        return "close_code_%d" % code, close(struct.pack("!H", code)), {1002}
    if kind == 4:
        return "close_reason_not_utf8", close(struct.pack("!H", 1000) + b"\xff\xfe"), {1007}
    if kind == 5:
        return "pong_unsolicited", frame(frames.OP_PONG, bytes(rng.getrandbits(8) for _ in range(rng.randrange(126)))), "keep"
    return "ping_random", frame(frames.OP_PING, bytes(rng.getrandbits(8) for _ in range(rng.randrange(126)))), "keep"


def _close_code(rng: random.Random) -> Tuple[str, bytes, Expect]:
    code = rng.choice([1000, 1001, 1012, 1013, 1014, 3000, 4000, 4999, None])
    if code is None:
        return "close_empty", close(b""), {1005}
    return "close_%d" % code, close(struct.pack("!H", code) + b"bye"), {code}


def _fragments(rng: random.Random) -> Tuple[str, bytes, Expect]:
    kind = rng.randrange(5)
    body = _echo({"fragmented": True}, "frag").encode()
    if kind <= 1:  # valid, maybe with a ping in the middle
        cuts = sorted(rng.sample(range(1, len(body)), rng.randrange(1, 6)))
        parts = [body[i:j] for i, j in zip([0] + cuts, cuts + [len(body)])]
        out = b""
        for index, part in enumerate(parts):
            opcode = frames.OP_TEXT if index == 0 else frames.OP_CONT
            out += frame(opcode, part, fin=index == len(parts) - 1)
            if kind == 1 and index == 0:
                out += frame(frames.OP_PING, b"mid")
        return "fragments_valid", out, "keep"
    if kind == 2:
        return "continuation_without_start", frame(frames.OP_CONT, b"x"), {1002}
    if kind == 3:
        return "data_inside_fragmented", frame(frames.OP_TEXT, b"{", fin=False) + text("{}"), {1002}
    chunk = b"x" * 30000
    return "fragments_over_limit", b"".join(frame(frames.OP_TEXT if i == 0 else frames.OP_CONT, chunk, fin=False)
                                            for i in range(3)), {1009}


def _framing(rng: random.Random) -> Tuple[str, bytes, Expect]:
    kind = rng.randrange(3)
    if kind == 0:
        return "rsv_bits", frame(frames.OP_TEXT, b"{}", rsv=rng.choice([1, 2, 4, 7])), {1002}
    if kind == 1:
        return "unmasked", frame(frames.OP_TEXT, b"{}", mask=False), {1002}
    opcode = rng.choice([3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
    return "opcode_%d" % opcode, frame(opcode, b"x"), {1002}


def _garbage(rng: random.Random) -> Tuple[str, bytes, Expect]:
    return "garbage", bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64))), "any"


MAKERS: List[Callable[[random.Random], Tuple[str, bytes, Expect]]] = [
    _bad_json, _wrong_shape, _deep, _huge, _lying_length, _invalid_utf8, _binary, _control, _close_code,
    _fragments, _framing, _garbage]


def fuzz_cases(seed: int, count: int) -> List[Tuple[str, bytes, Expect, List[int]]]:
    """``count`` cases: (name, bytes, expectation, split points for sending in pieces)."""
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        name, data, expect = rng.choice(MAKERS)(rng)
        splits = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(1, 8)))) \
            if len(data) > 1 and rng.random() < 0.3 else []
        cases.append((name, data, expect, splits))
    return cases


def _outcome(client: RawClient, wait: float) -> Tuple[str, Any]:
    """Send an echo probe and read until its ack, a close frame, EOF or ``wait`` seconds."""
    try:
        client.send_text(_echo("probe", "probe"))
    except OSError:
        pass
    deadline = time.monotonic() + wait
    while True:
        try:
            opcode, payload = client.recv_frame(timeout=max(0.01, deadline - time.monotonic()))
        except socket.timeout:
            return "timeout", None
        except (ConnectionError, OSError) as exc:
            return "eof", repr(exc)
        if opcode == frames.OP_CLOSE:
            return "close", frames.parse_close_payload(payload)[0]
        if opcode == frames.OP_TEXT:
            try:
                message = json.loads(payload.decode("utf-8"))
            except (ValueError, RecursionError):  # a deep echo is too deep for the stdlib parser
                continue
            if isinstance(message, dict) and message.get("callbackId") == "probe":
                return "ack", message.get("payload")


def _run_case(port: int, case: Tuple[str, bytes, Expect, List[int]]) -> Optional[str]:
    """Play one case on a fresh connection; return a problem description or ``None``."""
    name, data, expect, splits = case
    client = RawClient(port)
    cut_while_sending = False
    try:
        pieces = [data[i:j] for i, j in zip([0] + splits, splits + [len(data)])]
        try:
            for piece in pieces:
                client.send_raw(piece)
                if len(pieces) > 1:
                    gevent.sleep(0.001)
        except OSError:
            # The server failed the connection while we were still sending: the rest of our
            # bytes make its kernel reset the TCP connection, which may drop the close frame.
            cut_while_sending = True
        kind, value = _outcome(client, 5.0 if expect != "any" else 0.3)
    finally:
        client.abort()
    if cut_while_sending and expect != "keep" and kind in ("eof", "close"):
        return None
    if expect == "keep":
        ok = kind == "ack" and value == "probe"
    elif expect == "any":
        ok = kind in ("ack", "timeout") or (kind == "close" and value in (1002, 1007, 1009))
    else:
        ok = (kind == "close" and value in expect) or (-1 in expect and kind == "ack")
    return None if ok else "%s: expected %s, got %s %r" % (name, expect, kind, value)


@pytest.mark.timeout(120)
def test_seeded_fuzzer_never_hurts_the_server_or_the_other_clients(server):
    node = server("--max-message-size", str(LIMIT), "--max-outbox", str(256 * 1024))
    canary = Canary(node.port)
    wait_for(lambda: len(canary.rtts) >= 20, message="canary baseline")
    baseline = latency_summary(canary.rtts)
    clients_before = _diag(node.port)["clients"]  # the canary and the diag connection itself
    rss_before = node.rss()
    cases = fuzz_cases(SEED, CASES)
    pool = gevent.pool.Pool(20)
    started = time.monotonic()
    problems = [p for p in pool.imap_unordered(lambda case: _run_case(node.port, case), cases) if p]
    elapsed = time.monotonic() - started
    during = canary.stop()
    assert not problems, "%d of %d cases misbehaved:\n%s" % (len(problems), len(cases), "\n".join(problems[:20]))
    assert not canary.failures and node.alive()
    assert during["p99_ms"] < 250, during
    # the canary is gone too now: only the diag connection itself is left
    wait_for(lambda: _diag(node.port)["clients"] == clients_before - 1, timeout=10, message="fuzz connections gone")
    diag = _diag(node.port)
    rss_after = node.rss()
    assert rss_after - rss_before < 32 << 20
    record("fuzzer", seed=SEED, cases=len(cases), kinds=len({c[0].split("_")[0] for c in cases}),
           seconds=round(elapsed, 2), canary_before=baseline, canary_during=during,
           rss_mib_before=mib(rss_before), rss_mib_after=mib(rss_after),
           server_counted_bad_frames=diag["service_stats"]["bad_frames"],
           server_counted_handler_errors=diag["service_stats"]["handler_errors"], fds_after=diag["fds"],
           greenlets_after=diag["greenlets"])


@pytest.mark.timeout(60)
def test_flood_of_valid_frames_and_a_reader_that_never_reads(server):
    node = server("--max-outbox", str(256 * 1024))
    canary = Canary(node.port)
    wait_for(lambda: len(canary.rtts) >= 20, message="canary baseline")
    baseline = latency_summary(canary.rtts)
    clients_before = _diag(node.port)["clients"]
    rss_before = node.rss()

    # 1. 300 000 valid events as fast as the socket takes them, no acks asked.
    flooder = RawClient(node.port, "/?id=flooder")
    batch = frames.encode_text(json.dumps({"event": "echo", "payload": "x" * 20}), mask=True) * 20000
    canary.rtts.clear()
    started = time.monotonic()
    for _ in range(15):
        flooder.send_raw(batch)
    wait_for(lambda: _diag(node.port)["counters"]["echo"] >= 300000, timeout=30, message="the flood processed")
    flood_seconds = time.monotonic() - started
    during_flood = latency_summary(canary.rtts)
    assert during_flood["count"] >= 5 and during_flood["p99_ms"] < 300, during_flood

    # 2. Requests with acks from a client that never reads: its outbox overflows, it is dropped.
    hog = RawClient(node.port, "/?id=hog")
    request = frames.encode_text(_echo("y" * 1000, "hog"), mask=True)
    sent = 0
    try:
        for _ in range(200):
            hog.send_raw(request * 100)
            sent += 100
    except OSError:
        pass  # the server dropped us: what the policy says
    wait_for(lambda: _diag(node.port)["clients"] == clients_before + 1, timeout=15, message="the hog dropped")
    during = canary.stop()
    assert not canary.failures and node.alive()
    rss_after = node.rss()
    assert rss_after - rss_before < 48 << 20
    flooder.abort()
    hog.abort()
    record("flood_valid_frames", frames_sent=300000, seconds=round(flood_seconds, 2),
           rate_per_s=int(300000 / flood_seconds), canary_before=baseline, canary_during_flood=during_flood,
           canary_overall=during, hog_requests_sent=sent, rss_mib_before=mib(rss_before), rss_mib_after=mib(rss_after))


@pytest.mark.timeout(60)
def test_per_connection_rate_limit_drops_the_excess_and_spares_the_others(server):
    node = server("--rate", "100", "--burst", "20")
    noisy, quiet = RawClient(node.port, "/?id=noisy"), RawClient(node.port, "/?id=quiet")
    started = time.monotonic()
    noisy.send_raw(b"".join(frames.encode_text(_echo(i, "n%d" % i), mask=True) for i in range(300)))
    assert ask(quiet, "echo", "still served", timeout=5) == "still served"
    acked = set()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            acked.add(noisy.recv_json(timeout=max(0.01, deadline - time.monotonic()))["callbackId"])
        except OSError:
            break
    elapsed = time.monotonic() - started
    # 20 of burst, then 100 per second: the first 300 arrive in a few ms, so about 20 pass
    assert 20 <= len(acked) <= 20 + 100 * elapsed + 5, (len(acked), elapsed)
    stats = _diag(node.port)["service_stats"]
    assert stats["rate_limited"] == 300 - len(acked)
    wait_for(lambda: time.monotonic() - started > 1.2, timeout=5)  # tokens come back
    assert ask(noisy, "echo", "after the pause", timeout=5, callback_id="later") == "after the pause"
    record("rate_limit", sent=300, accepted=len(acked), dropped=stats["rate_limited"], rate=100, burst=20)


@pytest.mark.timeout(60)
def test_connection_flood_is_refused_before_the_upgrade_and_leaves_nothing_behind(server):
    node = server("--max-connections", "50")
    canary = Canary(node.port)
    wait_for(lambda: len(canary.rtts) >= 10, message="canary")
    before = _diag(node.port)
    accepted: List[RawClient] = []
    refused: List[int] = []

    def attempt(i: int) -> None:
        try:
            accepted.append(RawClient(node.port, "/?id=f%d" % i))
        except HandshakeRejected as exc:
            refused.append(exc.status)

    gevent.joinall([gevent.spawn(attempt, i) for i in range(300)], timeout=30, raise_error=True)
    assert len(accepted) + len(refused) == 300 and set(refused) == {503}
    assert len(accepted) == 49  # the canary holds the 50th slot
    for client in accepted:
        client.abort()
    wait_for(lambda: _diag(node.port)["clients"] == before["clients"], timeout=10, message="connections gone")
    after = _diag(node.port)
    during = canary.stop()
    assert not canary.failures and node.alive()
    assert after["fds"] <= before["fds"] + 2 and after["greenlets"] <= before["greenlets"] + 3
    assert after["sockets"] == before["sockets"]
    record("connection_flood", attempts=300, accepted=len(accepted), refused_503=len(refused),
           fds_before=before["fds"], fds_after=after["fds"], greenlets_before=before["greenlets"],
           greenlets_after=after["greenlets"], rss_mib_before=mib(before["rss"]), rss_mib_after=mib(after["rss"]),
           canary=during)
