"""The control headers: Idempotency-Key, X-Delay, X-Not-Before, X-Request-Id
(proxy/ingress/control.py)."""

from __future__ import annotations

import pytest

from proxy.errors import BadRequestError
from proxy.ingress.control import request_id_from, schedule_time_from, task_id_for_key

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("abc-123", "abc-123"), ("x" * 128, "x" * 128), ("x" * 129, None), ("a b", None), ("", None)],
)
def test_request_id_kept_only_when_well_formed(value: str, expected: str | None) -> None:
    """A client X-Request-Id is reused only when it is short and made of safe characters."""
    assert request_id_from(value) == expected


def test_idempotency_key_gives_a_stable_hashed_task_id() -> None:
    """The same key always maps to the same valid task id; different keys differ."""
    first = task_id_for_key("order-42")
    assert first == task_id_for_key("order-42")
    assert first != task_id_for_key("order-43")
    assert len(first) == 40
    assert all(c in "0123456789abcdef" for c in first)


@pytest.mark.parametrize("key", ["k" * 256, "caf\u00e9", "tab\there", ""])
def test_bad_idempotency_keys_are_refused(key: str) -> None:
    """Keys longer than 255 characters or with non-printable/non-ASCII characters: 400."""
    with pytest.raises(BadRequestError) as info:
        task_id_for_key(key)
    assert info.value.code == "invalid_idempotency_key"


@pytest.mark.parametrize(
    ("delay", "seconds"), [("10", 10), ("1.5", 1.5), ("30s", 30), ("5m", 300), ("2h", 7200)]
)
def test_x_delay_forms(delay: str, seconds: float) -> None:
    """X-Delay accepts seconds or a number with s, m or h."""
    assert schedule_time_from(delay, None, NOW) == NOW + seconds


@pytest.mark.parametrize("delay", ["soon", "-5", "5x", "31d", "1e9"])
def test_bad_x_delay_is_refused(delay: str) -> None:
    """Unparseable, negative or more-than-30-days delays are a 400."""
    with pytest.raises(BadRequestError) as info:
        schedule_time_from(delay, None, NOW)
    assert info.value.code == "invalid_delay"


def test_x_not_before_unix_and_rfc3339() -> None:
    """X-Not-Before takes Unix seconds or RFC 3339 with a zone; the past means now."""
    assert schedule_time_from(None, str(NOW + 60), NOW) == NOW + 60
    assert schedule_time_from(None, "2023-11-14T22:14:20Z", NOW) == NOW + 60
    assert schedule_time_from(None, "2023-11-14T23:14:20+01:00", NOW) == NOW + 60
    assert schedule_time_from(None, "1000", NOW) == NOW


@pytest.mark.parametrize(
    "value", ["tomorrow", "2023-11-14T22:14:20", "2023-11-14", str(NOW + 31 * 86400), "nan"]
)
def test_bad_x_not_before_is_refused(value: str) -> None:
    """Naive times, dates without a time, junk and times > 30 days ahead are a 400."""
    with pytest.raises(BadRequestError) as info:
        schedule_time_from(None, value, NOW)
    assert info.value.code == "invalid_not_before"


def test_both_schedule_headers_conflict() -> None:
    """Sending X-Delay and X-Not-Before together is a 400."""
    with pytest.raises(BadRequestError) as info:
        schedule_time_from("5", str(NOW), NOW)
    assert info.value.code == "conflicting_schedule"
