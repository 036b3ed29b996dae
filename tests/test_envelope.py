"""The Envelope value (proxy/envelope.py)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from proxy.envelope import Envelope

FIELDS: dict[str, object] = {
    "id": "t1",
    "queue": "q",
    "method": "POST",
    "path": "/x",
    "query": "a=1",
    "headers": (("content-type", "text/plain"),),
    "body": b"hi",
    "received_at": 1.5,
}


def _envelope(**changes: object) -> Envelope:
    return Envelope(**FIELDS | changes)  # type: ignore[arg-type]


def test_hand_written_init_matches_the_declared_fields() -> None:
    """Envelope's own __init__ takes exactly the dataclass fields, with their defaults, and
    stores every one: a field added to the class but not to __init__ fails here."""
    parameters = inspect.signature(Envelope.__init__).parameters
    declared = {field.name: field.default for field in dataclasses.fields(Envelope)}
    assert {name: p.default for name, p in parameters.items() if name != "self"} == {
        name: inspect.Parameter.empty if default is dataclasses.MISSING else default
        for name, default in declared.items()
    }
    optional = {"schedule_time": 9.0, "idempotency_key": "k", "request_id": "r"}
    assert dataclasses.asdict(_envelope(**optional)) == FIELDS | optional


def test_envelope_is_immutable_and_compares_by_value() -> None:
    """Fields cannot be assigned; equal fields make equal envelopes; replace() works."""
    envelope = _envelope()
    with pytest.raises(dataclasses.FrozenInstanceError):
        envelope.id = "other"  # type: ignore[misc]
    assert envelope == _envelope()
    assert envelope != _envelope(body=b"other")
    assert dataclasses.replace(envelope, queue="q2").queue == "q2"
    assert envelope.schedule_time is None
    assert envelope.request_id == ""
