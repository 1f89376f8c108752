"""An encrypted site (``EmbeddedSite(tls=True)``, what ``dmg up --tls`` runs): Redis on TLS
only with a password, the cloud on HTTPS, every client checking both against the site's
throw-away CA; each process holding only the secrets it needs; the gateway's encryption
mode and its rules.

One site for the module (2 nodes and Flower); each test reads it, none hurts it.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from dmg import registration as local_registration
from dmg.cloud.client import CloudClient
from dmg.embedded.faults import SiteUnderTest
from dmg.errors import Conflict
from dmg.version import __version__
from settings import process_environ, settings_environ
from settings.redistls import password_file
from tests.conftest import require
from tests.ha.sitekit import (
    all_nodes,
    assert_copied_exactly,
    ha_settings,
    online,
    require_redis,
    running_site,
    throttled_copy,
    wait_for,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteUnderTest]:
    require_redis()
    tls_site = SiteUnderTest(ha_settings(tmp_path_factory.mktemp("tls")), nodes=2, node_concurrency=2,
                             flower=True, startup_timeout=90, tls=True)
    with running_site(tls_site):
        yield tls_site


def redis_port(site: SiteUnderTest) -> int:
    return int(site.settings.redis_url.rsplit(":", 1)[1].split("/")[0])


def redis_cli(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("redis-cli")
    require(found is not None, "redis-cli is not installed (Debian package redis-tools)")
    assert found is not None
    return subprocess.run([found, *args], capture_output=True, text=True, timeout=15, check=False)


def dmg_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dmg.cli", *args], env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``error:`` line of a failed command (and no traceback)."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    return errors[0]


def test_a_copy_runs_over_tls_only_redis_and_https(site: SiteUnderTest, tmp_path: Path) -> None:
    assert site.settings.redis_url.startswith("rediss://")
    assert site.settings.cloud_url.startswith("https://")
    with site.client() as client:
        wait_for(lambda: all_nodes(client, site, online), timeout=30, what="both nodes Online")
        copy = throttled_copy(client, site, tmp_path, files=12, bandwidth=10 * 1024 * 1024, name="tls-copy")
        run_id = client.run_pipeline(copy.pipeline)["id"]
        wait_for(lambda: client.run(run_id)["status"] in ("Succeeded", "Failed"), timeout=90,
                 what="the copy over TLS to end")
        assert_copied_exactly(client, run_id, copy)
        nodes = {row["name"]: row for row in client.list_nodes(site.gateway)}
    assert {row["encryption"] for row in nodes.values()} == {"tls"}, nodes


def test_redis_refuses_plain_text_and_clients_without_the_password(site: SiteUnderTest) -> None:
    port = str(redis_port(site))
    plain = redis_cli("-h", "127.0.0.1", "-p", port, "ping")
    assert "PONG" not in plain.stdout, plain
    ca = site.settings.redis_tls_ca
    anonymous = redis_cli("--tls", "--cacert", ca, "-h", "127.0.0.1", "-p", port, "ping")
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr, anonymous
    password = password_file(site.settings).read_text().strip()
    assert oct(password_file(site.settings).stat().st_mode & 0o777) == oct(0o600)
    env = {**os.environ, "REDISCLI_AUTH": password}
    found = shutil.which("redis-cli")
    assert found is not None
    authed = subprocess.run([found, "--tls", "--cacert", ca, "-h", "127.0.0.1", "-p", port, "ping"],
                            capture_output=True, text=True, timeout=15, env=env, check=False)
    assert authed.stdout.strip() == "PONG", authed


def test_no_secret_on_a_command_line_nor_in_another_process_environment(site: SiteUnderTest) -> None:
    data_dir = site.data_dir
    admin = (data_dir / "cloud" / "api-token").read_text().strip()
    redis_password = password_file(site.settings).read_text().strip()
    flower_password = (data_dir / "flower-password").read_text().strip()
    node_tokens = {name: local_registration.load(data_dir, name).token for name in site.node_names}
    for path in (data_dir / "tls" / "ca-key.pem", data_dir / "tls" / "server-key.pem",
                 site.data_dir / "redis" / "redis.conf", data_dir / "flower-password"):
        assert path.stat().st_mode & 0o077 == 0, path
    secrets = {"admin token": admin, "redis password": redis_password, "flower password": flower_password,
               **{f"{name} token": token for name, token in node_tokens.items()}}

    flower = {p for c in site.children() if c.name == "flower" for p in [c.proc.pid]}
    owner: dict[int, str] = {pid: "flower" for pid in flower}
    for name in site.node_names:
        owner.update({pid: name for pid in site.node_pids(name)})
    every = site.pids()
    assert len(every) >= 2 + 2 * 3 + 1, every  # redis, cloud, 2 x (node, worker, pool), flower
    for pid in every:
        try:
            process = psutil.Process(pid)
            args = " ".join(process.cmdline())
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        except (psutil.NoSuchProcess, FileNotFoundError):
            continue  # a pool process replaced meanwhile
        for what, secret in secrets.items():
            assert secret not in args, f"{what} on the command line of {pid}: {args}"
            allowed = what == "flower password" and owner.get(pid) == "flower"
            assert allowed or secret not in environ, f"{what} in the environment of {pid} ({args})"
    assert any(owner.get(pid) == "flower" for pid in every)
    logs = [*site.log_dir.glob("*.log"), data_dir / "redis" / "redis.log"]
    assert len(logs) >= 4, logs
    for log in logs:
        text = log.read_text(errors="replace")
        for what, secret in secrets.items():
            assert secret not in text, f"{what} in {log}"


def test_flower_serves_https_with_its_own_password(site: SiteUnderTest) -> None:
    assert site.flower_url.startswith("https://"), site.flower_url
    password = (site.data_dir / "flower-password").read_text().strip()
    wanted = {f"{name}@{site.gateway}" for name in site.node_names}
    with httpx.Client(verify=ssl.create_default_context(cafile=site.settings.cloud_ca), timeout=10) as http:
        assert http.get(site.flower_url + "api/workers").status_code == 401

        def workers() -> set[str]:
            answer = http.get(site.flower_url + "api/workers?refresh=1", auth=(site.flower_user, password))
            assert answer.status_code == 200, answer.text
            return set(answer.json())

        wait_for(lambda: workers() == wanted, timeout=30, what="Flower to see both workers over TLS")


def test_the_cli_checks_the_clouds_certificate(site: SiteUnderTest) -> None:
    base = process_environ({"DMG_DATA_DIR": str(site.data_dir), "DMG_CLOUD_URL": site.settings.cloud_url})
    base.pop("DMG_CLOUD_CA", None)
    trusted = dmg_cli(["gateway", "show", site.gateway, "--json"],
                      {**base, "DMG_CLOUD_CA": site.settings.cloud_ca})
    assert trusted.returncode == 0, trusted.stderr
    assert '"encryption": "tls"' in trusted.stdout, trusted.stdout
    untrusted = one_error_line(dmg_cli(["gateway", "show", site.gateway], base))
    assert "not signed by a CA this client trusts" in untrusted and "DMG_CLOUD_CA" in untrusted, untrusted
    with pytest.raises(httpx.TransportError):  # and the cloud speaks no plain HTTP
        httpx.get(site.settings.cloud_url.replace("https://", "http://") + "/api/v1/health", timeout=5)


def test_the_encryption_mode_changes_only_with_one_node(site: SiteUnderTest) -> None:
    refusal = dmg_cli(["gateway", "encryption", site.gateway, "--mode", "none"], cli_environ(site))
    line = one_error_line(refusal)
    assert line.startswith("error: gateway 'site' has 2 nodes; its encryption mode can change only while it "
                           "has one node (remove every node but one"), line
    with site.client() as client:
        with pytest.raises(Conflict) as refused:
            client.set_encryption(site.gateway, "none")
        assert "can change only while it has one node" in str(refused.value), refused.value
        assert "remove every node but one" in str(refused.value), refused.value
        assert client.gateway(site.gateway)["encryption"] == "tls"

        client.create_gateway("solo")
        keys = client.gateway_keys("solo")
        first = register(site, keys["key1"], "solo1")
        changed = dmg_cli(["gateway", "encryption", "solo", "--mode", "tls"], cli_environ(site))
        assert changed.returncode == 0, changed.stderr  # one node: allowed
        assert changed.stdout.strip() == "gateway solo: encryption mode tls", changed.stdout
        assert client.set_encryption("solo", "none")["encryption"] == "none"
        second = register(site, keys["key1"], "solo2")
        with pytest.raises(Conflict):
            client.set_encryption("solo", "tls")
        client.set_encryption("solo", "none")  # the mode it has: a no-op at any size

        # solo1 reaches Redis in plain text, as its gateway does; solo2 uses TLS: Inactive
        beat(site, first, "none")
        beat(site, second, "tls")
        rows = {row["name"]: row for row in client.list_nodes("solo")}
        assert rows["solo1"]["status"] == "Online", rows["solo1"]
        assert rows["solo2"]["status"] == "Inactive", rows["solo2"]
        assert rows["solo2"]["reasons"] == [
            "encryption mode differs: the node uses TLS to the site broker (tls), the gateway's mode "
            "is none (set DMG_REDIS_TLS_* and DMG_REDIS_URL to match, or change the gateway's mode "
            "with `dmg gateway encryption`)"], rows["solo2"]
        gateway = client.gateway("solo")
        assert gateway["status"] == "Limited" and any("solo2: Inactive" in r for r in gateway["reasons"])


def cli_environ(site: SiteUnderTest) -> dict[str, str]:
    return process_environ({"DMG_DATA_DIR": str(site.data_dir), "DMG_CLOUD_URL": site.settings.cloud_url,
                            "DMG_CLOUD_CA": site.settings.cloud_ca})


def register(site: SiteUnderTest, key: str, name: str) -> str:
    with CloudClient(site.settings.cloud_url, ca=site.settings.cloud_ca) as client:
        return str(client.register_node(key=key, name=name, version=__version__)["token"])


def beat(site: SiteUnderTest, token: str, mode: str) -> dict[str, Any]:
    with CloudClient(site.settings.cloud_url, token=token, ca=site.settings.cloud_ca) as node:
        return node.heartbeat({"version": __version__, "role": "worker", "limit": 1, "encryption": mode})


def test_a_node_given_the_wrong_ca_stops_with_one_line(site: SiteUnderTest, tmp_path: Path) -> None:
    from dmg.embedded.tls import make_ca

    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(make_ca("not the site's CA").cert_pem)
    env = process_environ(settings_environ(site.settings.replace(redis_tls_ca=str(other_ca))))
    line = one_error_line(dmg_cli(["node", "start", "--name", site.node_names[0]], env))
    assert line.startswith("error: TLS to the site broker at 127.0.0.1:") and "wrong CA" in line, line
