"""Which settings reach a child process, and how clients of the broker are configured
(:mod:`settings`, :mod:`settings.redistls`, :mod:`settings.celery`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from settings import Settings, SettingsError, process_environ, settings_environ
from settings.celery import celery_config
from settings.redistls import broker_password, broker_tls, client_url, encryption_mode


def test_a_child_gets_no_private_secret_unless_handed_it(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(api_token="admin-token", flower_password="flower-pw", cloud_db="postgresql://u:pw@h/db",
                        redis_password="redis-pw")
    env = settings_environ(settings)
    assert "DMG_API_TOKEN" not in env and "DMG_FLOWER_PASSWORD" not in env and "DMG_CLOUD_DB" not in env
    assert env["DMG_REDIS_PASSWORD"] == "redis-pw"  # every process that talks to Redis needs it
    assert settings_environ(settings, private=("api_token",))["DMG_API_TOKEN"] == "admin-token"
    monkeypatch.setenv("DMG_API_TOKEN", "inherited")
    monkeypatch.setenv("DMG_FLOWER_PASSWORD", "inherited")
    inherited = process_environ({"DMG_NODE_NAME": "n1"})
    assert "DMG_API_TOKEN" not in inherited and "DMG_FLOWER_PASSWORD" not in inherited
    assert inherited["DMG_NODE_NAME"] == "n1"


def test_the_password_comes_from_the_setting_the_url_or_the_data_dir(tmp_path: Path) -> None:
    assert broker_password(Settings(data_dir=tmp_path)) is None
    (tmp_path / "redis-password").write_text("from-file\n")
    assert broker_password(Settings(data_dir=tmp_path)) == "from-file"
    assert broker_password(Settings(data_dir=tmp_path, redis_password="given")) == "given"
    assert broker_password(Settings(data_dir=tmp_path, redis_url="redis://:inurl@h:1/0")) is None
    assert client_url("redis://h:1/0", tls=True, password="p w") == "rediss://:p%20w@h:1/0"
    assert client_url("redis://user@h:1/0", tls=False, password="p") == "redis://user:p@h:1/0"
    assert client_url("redis://:kept@h:1/0", tls=False, password="other") == "redis://:kept@h:1/0"


def test_tls_settings_turn_tls_on_for_celery_too(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    plain = Settings(data_dir=tmp_path)
    assert broker_tls(plain) is None and encryption_mode(plain) == "none"
    assert "broker_use_ssl" not in celery_config(plain)
    alone = Settings(data_dir=tmp_path, redis_url="rediss://h:1/0")  # the system's CA store
    config = celery_config(alone)
    assert config["broker_use_ssl"]["ssl_cert_reqs"] == config["redis_backend_use_ssl"]["ssl_cert_reqs"]
    assert "ssl_ca_certs" not in config["broker_use_ssl"] and config["broker_use_ssl"]["ssl_check_hostname"]
    with_ca = Settings(data_dir=tmp_path, redis_tls_ca=str(ca))
    assert celery_config(with_ca)["broker_url"].startswith("rediss://")
    assert celery_config(with_ca)["redis_backend_use_ssl"]["ssl_ca_certs"] == str(ca)
    assert encryption_mode(with_ca) == "tls"
    with pytest.raises(SettingsError, match=r"DMG_REDIS_TLS_CA=/nowhere\.pem does not exist"):
        broker_tls(Settings(redis_tls_ca="/nowhere.pem"))
    with pytest.raises(SettingsError, match="go together"):
        broker_tls(Settings(redis_tls_cert=str(ca)))
