"""Settings: TOML file, env vars and flags, validated with errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.config.durations import parse_duration
from proxy.config.loading import load_settings, settings_from_dict
from proxy.errors import ConfigError
from proxy.limits import default_burst

TARGET = "http://127.0.0.1:9000"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    return path


def test_flags_alone_make_a_default_queue() -> None:
    """--target and --rate alone give one queue named 'default' and a catch-all route."""
    settings = load_settings(flags={"target": TARGET, "rate": "5"})
    [queue] = settings.queues
    assert (queue.name, queue.target, queue.rate) == ("default", TARGET, 5.0)
    assert queue.effective_burst == 1
    assert [(r.prefix, r.queue) for r in settings.effective_routes] == [("/", "default")]
    assert settings.engine == "local"


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    """Flags win over env vars, which win over the file; unset layers leave values alone."""
    path = _write(
        tmp_path,
        f"""
        [server]
        port = 7000
        admin_port = 7001
        [[queues]]
        name = "main"
        target = "{TARGET}"
        rate = 3
        """,
    )
    settings = load_settings(path, env={"INGEST_PROXY_PORT": "7100", "INGEST_PROXY_RATE": "4"})
    assert (settings.server.port, settings.server.admin_port) == (7100, 7001)
    assert settings.queue("main").rate == 4.0
    settings = load_settings(
        path, env={"INGEST_PROXY_PORT": "7100"}, flags={"port": "7200", "rate": None}
    )
    assert settings.server.port == 7200
    assert settings.queue("main").rate == 3.0


def test_config_path_from_env_and_port_from_cloud_run(tmp_path: Path) -> None:
    """INGEST_PROXY_CONFIG names the file; PORT (Cloud Run) sets the ingress port."""
    path = _write(tmp_path, f'[[queues]]\nname = "q"\ntarget = "{TARGET}"\n')
    settings = load_settings(env={"INGEST_PROXY_CONFIG": str(path), "PORT": "8888"})
    assert settings.queues[0].name == "q"
    assert settings.server.port == 8888


def test_full_file(tmp_path: Path) -> None:
    """Every section of the TOML layout is read, durations with units included."""
    path = _write(
        tmp_path,
        f"""
        engine = "cloudtasks"
        default_queue = "b"
        [cloudtasks]
        project = "my-project"
        location = "europe-west1"
        service_account_email = "invoker@my-project.iam.gserviceaccount.com"
        enqueue_deadline = "1500ms"
        [limits]
        max_body_bytes = 2048
        max_header_count = 50
        [local]
        db = "/tmp/x.db"
        dedup_window = "2h"
        [[queues]]
        name = "a"
        target = "{TARGET}/api"
        dispatch_deadline = "2m"
        [queues.retry]
        max_attempts = 5
        min_backoff = "10s"
        max_backoff = "5m"
        max_doublings = 3
        max_retry_duration = "1h"
        [[queues]]
        name = "b"
        target = "https://backend.example.run.app"
        audience = "https://backend.example.run.app"
        [[routes]]
        prefix = "/a"
        queue = "a"
        forward_authorization = true
        """,
    )
    settings = load_settings(path)
    a = settings.queue("a")
    assert a.dispatch_deadline == 120
    assert (a.retry.max_attempts, a.retry.min_backoff, a.retry.max_backoff) == (5, 10, 300)
    assert (a.retry.max_doublings, a.retry.max_retry_duration) == (3, 3600)
    assert settings.cloudtasks.enqueue_deadline == 1.5
    assert settings.local.dedup_window == 7200
    assert settings.limits.max_body_bytes == 2048
    assert settings.limits.max_header_count == 50
    assert [r.queue for r in settings.effective_routes] == ["a", "b"]
    assert settings.routes[0].forward_authorization is True
    assert settings.queue("b").target_origin == "https://backend.example.run.app"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({}, "queues"),
        ({"engine": "kafka", "queues": [{"name": "q", "target": TARGET}]}, "engine"),
        ({"queues": [{"name": "bad_name", "target": TARGET}]}, "queues[0].name"),
        ({"queues": [{"name": "q", "target": "ftp://x"}]}, "queues[0].target"),
        ({"queues": [{"name": "q", "target": TARGET + "/?a=1"}]}, "queues[0].target"),
        ({"queues": [{"name": "q"}]}, "queues[0].target"),
        ({"queues": [{"name": "q", "target": TARGET, "rate": 501}]}, "queues[0].rate"),
        ({"queues": [{"name": "q", "target": TARGET, "rate": "fast"}]}, "queues[0].rate"),
        ({"queues": [{"name": "q", "target": TARGET, "concurrency": 0}]}, "queues[0].concurrency"),
        (
            {"queues": [{"name": "q", "target": TARGET, "dispatch_deadline": "5s"}]},
            "queues[0].dispatch_deadline",
        ),
        (
            {"queues": [{"name": "q", "target": TARGET, "retry": {"max_attempts": 0}}]},
            "queues[0].retry.max_attempts",
        ),
        (
            {"queues": [{"name": "q", "target": TARGET, "retry": {"min_backoff": "-1s"}}]},
            "queues[0].retry.min_backoff",
        ),
        (
            {"queues": [{"name": "q", "target": TARGET, "retyr": {}}]},
            "queues[0].retyr",
        ),
        (
            {"queues": [{"name": "q", "target": TARGET}, {"name": "q", "target": TARGET}]},
            "queues[1].name",
        ),
        (
            {
                "queues": [{"name": "q", "target": TARGET}],
                "routes": [{"prefix": "/a", "queue": "z"}],
            },
            "routes[0].queue",
        ),
        (
            {
                "queues": [{"name": "q", "target": TARGET}],
                "routes": [{"prefix": "a", "queue": "q"}],
            },
            "routes[0].prefix",
        ),
        ({"queues": [{"name": "q", "target": TARGET}], "default_queue": "z"}, "default_queue"),
        ({"queues": [{"name": "q", "target": TARGET}], "server": {"port": 70000}}, "server.port"),
        (
            {
                "queues": [{"name": "q", "target": TARGET}],
                "server": {"trusted_proxies": "10.0.0.1, lb"},
            },
            "server.trusted_proxies",
        ),
        (
            {
                "queues": [{"name": "q", "target": TARGET}],
                "server": {"trusted_proxies": "10.0.0.0/33"},
            },
            "server.trusted_proxies",
        ),
        (
            {
                "queues": [{"name": "q", "target": TARGET}],
                "server": {"trusted_proxies": "*, 10.0.0.1"},
            },
            "server.trusted_proxies",
        ),
        (
            {"queues": [{"name": "q", "target": TARGET}], "limits": {"max_body_bytes": 0}},
            "limits.max_body_bytes",
        ),
        (
            {"queues": [{"name": "q", "target": TARGET}], "limits": {"max_header_count": 0}},
            "limits.max_header_count",
        ),
        (
            {"queues": [{"name": "q", "target": TARGET}], "limits": {"max_header_count": 10_001}},
            "limits.max_header_count",
        ),
        (
            {"queues": [{"name": "q", "target": TARGET}], "engine": "cloudtasks"},
            "cloudtasks.project",
        ),
        (
            {
                "queues": [{"name": "q", "target": TARGET}],
                "engine": "cloudtasks",
                "cloudtasks": {"project": "p"},
            },
            "cloudtasks.location",
        ),
        (
            {"queues": [{"name": "q", "target": TARGET}], "local": {"delivery_processes": 17}},
            "local.delivery_processes",
        ),
        (
            {"queues": [{"name": "q", "target": TARGET}], "local": {"delivery_processes": -1}},
            "local.delivery_processes",
        ),
        ({"queues": [{"name": "q", "target": TARGET}], "surprise": 1}, "surprise"),
        ({"queues": {"name": "q"}}, "queues"),
    ],
)
def test_each_mistake_names_its_key(data: dict[str, object], key: str) -> None:
    """Every kind of config mistake raises ConfigError naming the offending key."""
    with pytest.raises(ConfigError) as info:
        settings_from_dict(data)
    assert info.value.key == key
    assert info.value.reason


def test_missing_and_broken_files_are_config_errors(tmp_path: Path) -> None:
    """A missing file or invalid TOML is a ConfigError on --config, not a traceback."""
    with pytest.raises(ConfigError) as missing:
        load_settings(tmp_path / "nope.toml")
    assert missing.value.key == "--config"
    with pytest.raises(ConfigError) as broken:
        load_settings(_write(tmp_path, "queues = [ [ "))
    assert broken.value.key == "--config"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (5, 5.0),
        (0.1, 0.1),
        ("100ms", 0.1),
        ("30s", 30.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    """Durations are seconds, as numbers or strings with ms, s, m, h or d."""
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["-1", -1, "1w", True, None, "nan", float("inf")])
def test_parse_duration_refuses_junk(value: object) -> None:
    """Negative, infinite, unknown-unit or non-numeric durations are refused."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(("rate", "burst"), [(500, 100), (1, 10), (20, 4), (5, 1), (0.5, 1)])
def test_default_burst_follows_cloud_tasks(rate: float, burst: int) -> None:
    """max_burst_size is derived from the rate as Cloud Tasks does (10 at 1/s, else rate/5)."""
    assert default_burst(rate) == burst


def test_max_header_count_defaults_to_a_hundred() -> None:
    """limits.max_header_count is 100 unless configured (Apache's and Envoy's default)."""
    settings = settings_from_dict({"queues": [{"name": "q", "target": TARGET}]})
    assert settings.limits.max_header_count == 100


def test_a_queue_sends_id_tokens_when_it_names_an_identity_or_asks_for_them() -> None:
    """``service_account_email`` alone turns OIDC on; ``auth = "none"`` turns it off;
    ``auth = "oidc"`` alone uses the proxy's own identity. The audience defaults to the
    target's origin."""

    def queue(**extra: object) -> Any:
        return settings_from_dict({"queues": [{"name": "q", "target": TARGET + "/x", **extra}]})

    email = "invoker@p.iam.gserviceaccount.com"
    assert queue(service_account_email=email).queues[0].oidc
    assert not queue(service_account_email=email, auth="none").queues[0].oidc
    assert queue(auth="oidc").queues[0].oidc
    assert not queue().queues[0].oidc
    assert queue(auth="oidc").queues[0].oidc_audience == TARGET
    assert queue(auth="oidc", audience="https://a").queues[0].oidc_audience == "https://a"
    with pytest.raises(ConfigError) as caught:
        queue(auth="basic")
    assert caught.value.key == "queues[0].auth"


def test_an_oauth_queue_has_a_scope_and_a_scope_needs_oauth() -> None:
    """auth = "oauth" takes the cloud-platform scope unless another is given; a scope
    on a queue that is not OAuth is refused; on the Cloud Tasks engine a token needs a
    service account."""
    base = {"name": "q", "target": "https://tasks.googleapis.com/v2"}
    oauth = settings_from_dict({"queues": [{**base, "auth": "oauth"}]}).queues[0]
    assert (oauth.oauth, oauth.oidc) == (True, False)
    assert oauth.oauth_scope == "https://www.googleapis.com/auth/cloud-platform"
    with pytest.raises(ConfigError) as caught:
        settings_from_dict({"queues": [{**base, "scope": "https://x"}]})
    assert caught.value.key == "queues[0].scope"
    cloudtasks = {"project": "p", "location": "l"}
    with pytest.raises(ConfigError) as caught:
        settings_from_dict(
            {
                "engine": "cloudtasks",
                "cloudtasks": cloudtasks,
                "queues": [{**base, "auth": "oauth"}],
            }
        )
    assert caught.value.key == "queues[0].service_account_email"
