"""The admin API's OpenAPI document is valid and matches the routes actually served."""

from __future__ import annotations

import re

from openapi_spec_validator import validate
from starlette.routing import Route

from proxy.admin.openapi import admin_openapi
from proxy.admin.routes import build_admin_app
from proxy.app import create_app
from proxy.config.loading import settings_from_dict
from tests.support.engines import RecordingEngine

SETTINGS = settings_from_dict({"queues": [{"name": "q", "target": "http://127.0.0.1:9"}]})


def test_document_is_valid_openapi() -> None:
    """The served document validates as OpenAPI 3.1."""
    validate(admin_openapi())


def test_every_route_is_documented_and_every_documented_path_served() -> None:
    """Paths and methods in the document are exactly the admin app's routes."""
    app = build_admin_app(create_app(SETTINGS, engine=RecordingEngine()).state.runtime)
    served = set()
    for route in app.routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                served.add((route.path, method.lower()))
    documented = {
        (path, method) for path, item in admin_openapi()["paths"].items() for method in item
    }
    assert documented | {("/openapi.json", "get")} == served


def test_guarded_operations_declare_bearer_auth() -> None:
    """Every operation that shows tasks or changes state declares the bearer scheme."""
    for path, item in admin_openapi()["paths"].items():
        for method, operation in item.items():
            guarded = method != "get" or re.search(r"/(tasks|dead-letters|spool)", path)
            assert ("security" in operation) == bool(guarded), (path, method)
