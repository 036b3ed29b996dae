"""Which route a request takes (proxy/ingress/routing.py)."""

from __future__ import annotations

from proxy.config.loading import settings_from_dict
from proxy.ingress.routing import Router

SETTINGS = settings_from_dict(
    {
        "queues": [
            {"name": "default", "target": "http://127.0.0.1:9/base/"},
            {"name": "orders", "target": "http://127.0.0.1:9"},
            {"name": "eu", "target": "http://127.0.0.1:9"},
        ],
        "routes": [
            {"prefix": "/orders/", "queue": "orders", "strip_prefix": True},
            {"prefix": "/", "queue": "eu", "host": "eu.example.com"},
        ],
    }
)


def test_a_prefix_takes_its_own_path_and_what_is_below_it_only() -> None:
    """``/orders`` and ``/orders/x`` take the orders route; ``/ordersx`` does not."""
    router = Router(SETTINGS)
    assert router.route("/orders", None).queue.name == "orders"
    assert router.route("/orders/42", None).queue.name == "orders"
    assert router.route("/ordersx", None).queue.name == "default"


def test_a_host_route_matches_its_host_in_any_case_and_with_a_port() -> None:
    """The Host name is compared in lower case, without the port."""
    router = Router(SETTINGS)
    assert router.route("/x", "EU.example.com:8080").queue.name == "eu"
    assert router.route("/x", "us.example.com").queue.name == "default"
    assert router.route("/x", None).queue.name == "default"


def test_the_catch_all_comes_last_and_knows_its_target_length() -> None:
    """The default queue's catch-all route is the last; a route knows the length of the
    target it appends paths to (its trailing slash left out)."""
    router = Router(SETTINGS)
    last = router.routes[-1]
    assert (last.prefix, last.queue.name) == ("", "default")
    assert last.target_length == len("http://127.0.0.1:9/base")
