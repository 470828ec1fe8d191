"""permessage-deflate (RFC 7692): negotiation and per-connection compression. Pure (zlib only).

Off by default, as in the original's ``ws`` server. When both sides agree, a data message whose
payload is at least ``threshold`` bytes is sent compressed (RSV1 set on its frame), and received
compressed messages are inflated, never past the message size limit (a zip bomb closes with 1009).

Memory per connection while it is negotiated (zlib's own figures): the compressor holds
``2**(window_bits + 2) + 2**(mem_level + 9)`` bytes (256 KiB at 15 bits / memLevel 8, 16 KiB at
9 / 1), the decompressor ``2**window_bits`` plus about 7 KiB (39 KiB at 15 bits). With
``server_no_context_takeover`` the compressor exists only while a message is compressed.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ..errors import ConfigError, HandshakeError, MessageTooBig, ProtocolError

EXTENSION = "permessage-deflate"
_TAIL = b"\x00\x00\xff\xff"


@dataclass(frozen=True)
class DeflateOptions:
    """What this side asks for and accepts (the ``per_message_deflate`` option).

    ``server_*`` / ``client_*`` name the side that compresses with that setting.
    """

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    client_max_window_bits: int = 15
    threshold: int = 1024
    level: int = 6
    mem_level: int = 8


def options_from(value: Any) -> Optional[DeflateOptions]:
    """``per_message_deflate`` as options: ``False``/``None`` (off), ``True`` or a mapping.

    Raises:
        ConfigError: an unknown key or a value out of range.
    """
    if value is None or value is False:
        return None
    if value is True:
        return DeflateOptions()
    if not isinstance(value, Mapping):
        raise ConfigError("per_message_deflate must be a bool or a dict")
    known = set(DeflateOptions.__dataclass_fields__)
    unknown = set(value) - known
    if unknown:
        raise ConfigError("per_message_deflate: unknown option(s) %s" % ", ".join(sorted(unknown)))
    options = DeflateOptions(**value)
    for name in ("server_max_window_bits", "client_max_window_bits"):
        if not 9 <= getattr(options, name) <= 15:
            raise ConfigError("per_message_deflate: %s must be within 9..15" % name)
    if options.threshold < 0 or not -1 <= options.level <= 9 or not 1 <= options.mem_level <= 9:
        raise ConfigError("per_message_deflate: threshold >= 0, level -1..9, mem_level 1..9")
    return options


@dataclass(frozen=True)
class Agreement:
    """What was agreed for one connection: who keeps its context, with which window."""

    server_no_context_takeover: bool
    client_no_context_takeover: bool
    server_max_window_bits: int
    client_max_window_bits: int

    def header(self) -> str:
        """The ``Sec-WebSocket-Extensions`` value that states this agreement."""
        return _header(self.server_no_context_takeover, self.client_no_context_takeover,
                       self.server_max_window_bits, self.client_max_window_bits, offer=False)


def _header(server_no_takeover: bool, client_no_takeover: bool, server_bits: int, client_bits: int, *,
            offer: bool) -> str:
    """``permessage-deflate`` and its parameters; an offer always names ``client_max_window_bits``
    (that the client can take a limit), an answer only a limit below 15."""
    parts = [EXTENSION]
    if offer:
        parts.append("client_max_window_bits" if client_bits == 15 else "client_max_window_bits=%d" % client_bits)
    elif client_bits != 15:
        parts.append("client_max_window_bits=%d" % client_bits)
    if server_no_takeover:
        parts.append("server_no_context_takeover")
    if client_no_takeover:
        parts.append("client_no_context_takeover")
    if server_bits != 15:
        parts.append("server_max_window_bits=%d" % server_bits)
    return "; ".join(parts)


def parse_header(value: str) -> List[Tuple[str, Dict[str, Optional[str]]]]:
    """``Sec-WebSocket-Extensions`` as ``[(name, {param: value or None})]`` (RFC 6455 §9.1)."""
    offers = []
    for offer in value.split(","):
        items = [item.strip() for item in offer.split(";")]
        if not items[0]:
            continue
        params: Dict[str, Optional[str]] = {}
        for item in items[1:]:
            if not item:
                continue
            key, sep, val = item.partition("=")
            params[key.strip().lower()] = val.strip().strip('"') if sep else None
        offers.append((items[0].lower(), params))
    return offers


def _bits(value: Optional[str]) -> Optional[int]:
    if value is None or not value.isdigit() or not 8 <= int(value) <= 15:
        return None
    return int(value)


def negotiate(offers_header: str, options: DeflateOptions) -> Optional[Agreement]:
    """The server's answer to a client's offers: the first acceptable one, or ``None``."""
    for name, params in parse_header(offers_header):
        if name != EXTENSION:
            continue
        known = {"server_no_context_takeover", "client_no_context_takeover", "server_max_window_bits",
                 "client_max_window_bits"}
        if set(params) - known:
            continue
        server_bits = options.server_max_window_bits
        if "server_max_window_bits" in params:
            asked = _bits(params["server_max_window_bits"])
            if asked is None or asked < 9:
                continue  # zlib cannot compress with an 8-bit window
            server_bits = min(server_bits, asked)
        client_bits = 15
        if "client_max_window_bits" in params:
            offered = params["client_max_window_bits"]
            limit = 15 if offered is None else _bits(offered)
            if limit is None:
                continue
            client_bits = max(min(limit, options.client_max_window_bits), 9)
        if params.get("client_no_context_takeover", "") not in (None, ""):
            continue
        if params.get("server_no_context_takeover", "") not in (None, ""):
            continue
        return Agreement(
            server_no_context_takeover=options.server_no_context_takeover or "server_no_context_takeover" in params,
            client_no_context_takeover=options.client_no_context_takeover or "client_no_context_takeover" in params,
            server_max_window_bits=server_bits,
            client_max_window_bits=client_bits,
        )
    return None


def client_offer(options: DeflateOptions) -> str:
    """The client's ``Sec-WebSocket-Extensions`` offer."""
    return _header(options.server_no_context_takeover, options.client_no_context_takeover,
                   options.server_max_window_bits, options.client_max_window_bits, offer=True)


def accept(response_header: Optional[str], options: DeflateOptions) -> Optional[Agreement]:
    """The client's reading of the server's answer (``None``: not negotiated).

    Raises:
        HandshakeError: the server answered with an extension or parameters we did not offer.
    """
    if not response_header:
        return None
    answers = parse_header(response_header)
    if len(answers) != 1 or answers[0][0] != EXTENSION:
        raise HandshakeError("the server accepted extensions we did not offer: %s" % response_header)
    params = answers[0][1]
    server_bits = 15
    client_bits = options.client_max_window_bits
    for key, value in params.items():
        if key in ("server_no_context_takeover", "client_no_context_takeover") and value is None:
            continue
        bits = _bits(value)
        if key == "server_max_window_bits" and bits is not None:
            server_bits = bits
            continue
        if key == "client_max_window_bits" and bits is not None:
            client_bits = min(client_bits, bits)
            continue
        raise HandshakeError("invalid permessage-deflate answer: %s" % response_header)
    return Agreement(server_no_context_takeover="server_no_context_takeover" in params or options.server_no_context_takeover,
                     client_no_context_takeover="client_no_context_takeover" in params or options.client_no_context_takeover,
                     server_max_window_bits=server_bits, client_max_window_bits=max(client_bits, 9))


class PerMessageDeflate:
    """One connection's compressor and decompressor.

    Args:
        agreement: what was negotiated.
        is_server: which side this is (it compresses with the ``server_*`` settings).
        options: threshold, level and memory level.
        max_message_size: largest inflated message (``None``: unlimited).
    """

    def __init__(self, agreement: Agreement, is_server: bool, options: DeflateOptions,
                 max_message_size: Optional[int]) -> None:
        if is_server:
            self._send_bits, self._send_reset = agreement.server_max_window_bits, agreement.server_no_context_takeover
            self._recv_bits, self._recv_reset = agreement.client_max_window_bits, agreement.client_no_context_takeover
        else:
            self._send_bits, self._send_reset = agreement.client_max_window_bits, agreement.client_no_context_takeover
            self._recv_bits, self._recv_reset = agreement.server_max_window_bits, agreement.server_no_context_takeover
        self.threshold = options.threshold
        self._level = options.level
        self._mem_level = options.mem_level
        self._max = max_message_size
        self._compressor: Any = None
        self._decompressor: Any = None

    def compress(self, payload: bytes) -> bytes:
        """Deflate one message's payload (RFC 7692 §7.2.1: without the final empty block's tail)."""
        if self._compressor is None:
            self._compressor = zlib.compressobj(self._level, zlib.DEFLATED, -self._send_bits, self._mem_level)
        data: bytes = self._compressor.compress(payload) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        if self._send_reset:
            self._compressor = None
        return data[:-4] if data.endswith(_TAIL) else data

    def decompress(self, payload: bytes) -> bytes:
        """Inflate one message's payload, never past the size limit.

        Raises:
            MessageTooBig: the message inflates past ``max_message_size`` (1009).
            ProtocolError: the data is not valid deflate (1007).
        """
        if self._decompressor is None:
            self._decompressor = zlib.decompressobj(-self._recv_bits)
        limit = 0 if self._max is None else self._max + 1
        try:
            data: bytes = self._decompressor.decompress(payload + _TAIL, limit)
        except zlib.error as exc:
            raise ProtocolError("invalid compressed data: %s" % exc, close_code=1007) from None
        if self._max is not None and (len(data) > self._max or self._decompressor.unconsumed_tail):
            raise MessageTooBig("message inflates past %d bytes" % self._max)
        if self._recv_reset:
            self._decompressor = None
        return data


__all__ = ["Agreement", "DeflateOptions", "PerMessageDeflate", "accept", "client_offer", "negotiate",
           "options_from", "parse_header"]
