"""Pure tests of crossws_sync.wire.codec: JSON / MessagePack, zstd above a threshold, signed frames,
format detection, limits and option validation."""
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from crossws_sync.errors import ConfigError, EnvelopeError
from crossws_sync.wire import codec as wire_codec
from crossws_sync.wire import envelope as env
from crossws_sync.wire import events as protocol
from crossws_sync.wire.codec import EnvelopeCodec
from crossws_sync.wire.signing import sign

JSON = EnvelopeCodec("json", compress_threshold=None)
MSGPACK = EnvelopeCodec("msgpack", compress_threshold=None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 53, 2 ** 53) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


def test_detect_format():
    assert wire_codec.detect_format(b'{"a":1}') == "json"
    assert wire_codec.detect_format(b"\x81\xa1a\x01") == "msgpack"
    assert wire_codec.detect_format(zstandard.ZstdCompressor().compress(b"{}")) == "zstd"
    assert wire_codec.detect_format(sign(b"k", "c", b"{}")) == "signed"


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_zstd_only_above_threshold_and_readable_by_every_codec(codec):
    small = {"data": {"event": "e", "payload": "x" * 10}}
    big = {"data": {"event": "e", "payload": "y" * 5000}}
    encoder = EnvelopeCodec(codec, compress_threshold=1000)
    assert wire_codec.detect_format(encoder.encode(small)) == codec
    packed = encoder.encode(big)
    assert wire_codec.detect_format(packed) == "zstd"
    assert len(packed) < 1000
    for decoder in (JSON, MSGPACK, encoder):
        assert decoder.decode(packed) == big
        assert decoder.decode(encoder.encode(small)) == small


def test_threshold_none_never_compresses():
    assert wire_codec.detect_format(JSON.encode({"p": "z" * 100000})) == "json"


def test_zstd_bomb_is_refused():
    codec = EnvelopeCodec("json", compress_threshold=0, max_decompressed_size=1000)
    bomb = zstandard.ZstdCompressor().compress(b'{"a":"' + b"a" * 100000 + b'"}')
    with pytest.raises(EnvelopeError, match="limit"):
        codec.decode(bomb)
    streamed = zstandard.ZstdCompressor(write_content_size=False).compress(b'{"a":"' + b"a" * 100000 + b'"}')
    with pytest.raises(EnvelopeError, match="limit"):
        codec.decode(streamed)


def test_signed_messages_round_trip_and_are_bound_to_the_channel():
    signer = EnvelopeCodec("msgpack", compress_threshold=10, signing_key=b"secret")
    raw = signer.encode({"data": {"event": "e", "payload": "p" * 100}}, "csbp:server_bridge")
    assert raw[0] == 0xC1
    assert signer.decode(raw, "csbp:server_bridge") == {"data": {"event": "e", "payload": "p" * 100}}
    with pytest.raises(EnvelopeError, match="bad signature"):
        signer.decode(raw, "other")
    with pytest.raises(EnvelopeError, match="bad signature"):
        EnvelopeCodec("json", signing_key=b"other-secret").decode(raw, "csbp:server_bridge")
    tampered = raw[:-1] + bytes([raw[-1] ^ 1])
    with pytest.raises(EnvelopeError):
        signer.decode(tampered, "csbp:server_bridge")


def test_unsigned_refused_when_signing_and_signed_refused_without_key():
    signer = EnvelopeCodec("json", signing_key=b"secret")
    with pytest.raises(EnvelopeError, match="unsigned"):
        signer.decode(b'{"a":1}', "c")
    with pytest.raises(EnvelopeError, match="no signing_key"):
        JSON.decode(signer.encode({"a": 1}, "c"), "c")


@pytest.mark.parametrize("garbage", [b"", b"hello", b"{not json", b"\xc1", b"\x28\xb5\x2f\xfdxxxx", b"\x92\x01"])
def test_garbage_raises_envelope_error(garbage):
    with pytest.raises(EnvelopeError):
        JSON.decode(garbage)


def test_unencodable_message_raises_envelope_error():
    with pytest.raises(EnvelopeError):
        JSON.encode({"x": object()})
    with pytest.raises(EnvelopeError):
        MSGPACK.encode({"x": object()})


def test_codec_options_are_validated():
    with pytest.raises(ConfigError):
        EnvelopeCodec("pickle")
    with pytest.raises(ConfigError):
        EnvelopeCodec("json", compress_threshold=-1)
    with pytest.raises(ConfigError):
        EnvelopeCodec("json", signing_key=b"")
    assert "secret" not in repr(EnvelopeCodec("json", signing_key=b"secret"))


def test_original_compression_option_maps_to_plain_codecs():
    on = wire_codec.codec_from_options(enable_redis_data_compression=True)
    off = wire_codec.codec_from_options(enable_redis_data_compression=False, redis_codec="msgpack")
    assert (on.codec, on.compress_threshold) == ("msgpack", None)
    assert (off.codec, off.compress_threshold) == ("json", None)
    default = wire_codec.codec_from_options()
    # the original's default (enableRedisDataCompression: true); zstd is opt-in: Node nodes cannot read it
    assert (default.codec, default.compress_threshold) == ("msgpack", None)
    assert EnvelopeCodec().codec == "msgpack"


@pytest.mark.parametrize("backend", ["default", "ujson"])
def test_json_envelopes_write_null_for_nan_and_infinity(backend, monkeypatch):
    if backend == "ujson":
        monkeypatch.setenv("CROSSWS_JSON", "ujson")
        monkeypatch.setattr(protocol, "dumps", protocol._make_dumps()[0])
    message = env.bridge_request("e", "A", {"x": float("nan"), "y": [float("inf"), -float("inf"), 1.5]}, [])
    raw = EnvelopeCodec("json").encode(message)
    assert b"NaN" not in raw and b"Infinity" not in raw
    assert JSON.decode(raw)["data"]["payload"] == {"x": None, "y": [None, None, 1.5]}
    # MessagePack carries floats natively, NaN included, as notepack.io does.
    packed = MSGPACK.decode(MSGPACK.encode({"x": float("nan")}))["x"]
    assert packed != packed


@settings(max_examples=150, deadline=None)
@given(payload=json_values, threshold=st.sampled_from([None, 0, 64]), codec=st.sampled_from(["json", "msgpack"]))
def test_any_json_payload_round_trips_across_codecs(payload, threshold, codec):
    message = env.bridge_request("evt", "nodeA", payload, ["nodeB"], "id")
    encoded = EnvelopeCodec(codec, compress_threshold=threshold).encode(message)
    assert JSON.decode(encoded) == message
    assert MSGPACK.decode(encoded) == message
