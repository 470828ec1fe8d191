"""Retry hints: the 1012 close reason's ``retry=<s>s`` and the ``Retry-After`` header (pure)."""
import pytest

from crossws_sync.wire.retry import MAX_HINT_SECONDS, MAX_REASON_BYTES, parse_retry_after, retry_hint, with_retry_hint


def test_round_trip():
    reason = with_retry_hint("service restart", 2.7344)
    assert reason == "service restart retry=2.734s"
    assert retry_hint(reason) == 2.734
    assert with_retry_hint("", 0) == "retry=0.000s" and retry_hint("retry=0.000s") == 0.0


def test_long_reasons_are_cut_to_fit_a_close_frame():
    reason = with_retry_hint("\u00e9" * 200, 12.5)
    assert len(reason.encode("utf-8")) <= MAX_REASON_BYTES
    assert reason.endswith(" retry=12.500s") and retry_hint(reason) == 12.5


def test_hint_bounds():
    assert retry_hint(with_retry_hint("x", -3)) == 0.0
    assert retry_hint(with_retry_hint("x", 1e9)) == MAX_HINT_SECONDS


@pytest.mark.parametrize("reason", ["", "server shutdown", "retry=abc", "noretry=1s", "retry=1", "retry=-1s", None])
def test_no_hint(reason):
    assert retry_hint(reason) is None


@pytest.mark.parametrize("value, seconds", [("3", 3.0), (" 120 ", 120.0), ("0", 0.0), (None, None), ("", None),
                                            ("1.5", None), ("-1", None), ("Wed, 21 Oct 2015 07:28:00 GMT", None),
                                            ("99999999", None)])
def test_parse_retry_after(value, seconds):
    assert parse_retry_after(value) == seconds
