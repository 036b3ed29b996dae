"""Rendering of REST answers: partial responses, defaults, numbers (no server)."""

from __future__ import annotations

import json

import pytest
from google.cloud import tasks_v2 as t

from proxy.cloudtasks_server.rest_request import BadRequestError, SystemParameters
from proxy.cloudtasks_server.rest_response import parse_selection, render


def test_selection_syntax() -> None:
    """a,b(c,d),e/f and repeated mentions merge into one tree; a whole field wins."""
    assert parse_selection("name, rateLimits(maxBurstSize,maxDispatchesPerSecond),a/b/c") == {
        "name": None,
        "rateLimits": {"maxBurstSize": None, "maxDispatchesPerSecond": None},
        "a": {"b": {"c": None}},
    }
    assert parse_selection("a/b,a(c),a/b/d") == {"a": {"b": None, "c": None}}
    assert parse_selection("a/b,a") == {"a": None}
    for bad in ("", "a,", "a(b", "a)b", "a//b"):
        with pytest.raises(BadRequestError):
            parse_selection(bad)


def _json(message: object, **params: object) -> object:
    body, _ = render(message, SystemParameters(**params))  # type: ignore[arg-type]
    return json.loads(body)


def test_partial_response_of_a_list() -> None:
    """A selection under a repeated field applies to each element; absent fields stay out."""
    listed = t.ListQueuesResponse(
        queues=[t.Queue(name="a", state=t.Queue.State.PAUSED), t.Queue(name="b")],
        next_page_token="tok",
    )
    assert _json(listed, fields="queues(name,state)") == {
        "queues": [{"name": "a", "state": "PAUSED"}, {"name": "b"}]
    }
    assert _json(listed, fields="nextPageToken,queues/*") == {
        "nextPageToken": "tok",
        "queues": [{"name": "a", "state": "PAUSED"}, {"name": "b"}],
    }


def test_selection_must_name_response_fields() -> None:
    """Names are checked against the response message, even where the data has none."""
    for bad in ("tasks", "queues/bogus", "nextPageToken/x"):
        with pytest.raises(BadRequestError):
            _json(t.ListQueuesResponse(), fields=bad)


def test_defaults_left_out_and_whole_numbers() -> None:
    """Default values are not printed; whole-number doubles print as integers, others not."""
    queue = t.Queue(
        name="q", rate_limits=t.RateLimits(max_dispatches_per_second=2.5, max_burst_size=0)
    )
    assert _json(queue) == {"name": "q", "rateLimits": {"maxDispatchesPerSecond": 2.5}}
    body, _ = render(t.RateLimits(max_dispatches_per_second=500), SystemParameters())
    assert body == b'{\n  "maxDispatchesPerSecond": 500\n}\n'
    assert _json(None) == {}
