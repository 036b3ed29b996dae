"""Relay mode's settings ([cloudtasks] relay and the per-queue relay): what it needs, and
each mistake named by its key."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.config.loading import settings_from_dict
from proxy.config.settings import GOOGLE_CERTS_URL, GOOGLE_ISSUER, Settings
from proxy.errors import ConfigError

TARGET = "https://backend.example"
RELAY = {
    "project": "p",
    "location": "l",
    "relay": True,
    "relay_url": "https://proxy.example/_ingest-proxy/relay",
    "relay_service_account_email": "invoker@p.iam.gserviceaccount.com",
}


def _settings(cloudtasks: dict[str, Any], **queue: Any) -> Settings:
    return settings_from_dict(
        {
            "engine": "cloudtasks",
            "queues": [{"name": "q", "target": TARGET, **queue}],
            "cloudtasks": cloudtasks,
        }
    )


def test_defaults_are_googles_and_the_audience_is_the_relay_url() -> None:
    ct = _settings(RELAY).cloudtasks
    assert (ct.relay_issuer, ct.relay_certs_url) == (GOOGLE_ISSUER, GOOGLE_CERTS_URL)
    assert ct.relay_token_audience == RELAY["relay_url"]
    assert ct.relay_path == "/_ingest-proxy/relay"
    assert ct.relay_port is None


def test_a_queue_setting_wins_over_the_engine_wide_one() -> None:
    off = _settings(RELAY, relay=False)
    assert not off.cloudtasks.relays(off.queues[0])
    on = _settings({**RELAY, "relay": False}, relay=True)
    assert on.cloudtasks.relays(on.queues[0])
    plain = _settings({"project": "p", "location": "l"})
    assert not plain.cloudtasks.relays(plain.queues[0])


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"relay_url": None}, "cloudtasks.relay_url"),
        ({"relay_url": "ftp://proxy.example/r"}, "cloudtasks.relay_url"),
        ({"relay_url": "https://proxy.example/r?x=1"}, "cloudtasks.relay_url"),
        ({"relay_url": "https://proxy.example"}, "cloudtasks.relay_url"),  # no path, no port
        ({"relay_service_account_email": None}, "cloudtasks.relay_service_account_email"),
        ({"relay_port": 8080}, "cloudtasks.relay_port"),  # the ingress port
        ({"relay_port": 70000}, "cloudtasks.relay_port"),
        ({"relay_certs_url": "file:///etc/certs"}, "cloudtasks.relay_certs_url"),
    ],
)
def test_each_mistake_names_its_key(change: dict[str, Any], key: str) -> None:
    cloudtasks = {k: v for k, v in {**RELAY, **change}.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        _settings(cloudtasks)
    assert info.value.key == key


def test_an_own_port_needs_no_path_and_a_long_queue_name_is_refused() -> None:
    own = _settings({**RELAY, "relay_url": "https://relay.example", "relay_port": 8081})
    assert own.cloudtasks.relay_port == 8081
    with pytest.raises(ConfigError) as info:
        settings_from_dict(
            {
                "engine": "cloudtasks",
                "queues": [{"name": "q" * 90, "target": TARGET}],
                "cloudtasks": RELAY,
            }
        )
    assert info.value.key == "queues[0].name"
    assert "-dead-letters" in info.value.reason


def test_relay_settings_do_nothing_on_the_embedded_engine() -> None:
    """The embedded engine has no relay: the keys are read but not required."""
    settings = settings_from_dict(
        {"queues": [{"name": "q", "target": TARGET}], "cloudtasks": {"relay": True}}
    )
    assert settings.engine == "local"
