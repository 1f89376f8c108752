"""One settings object for every dmg process.

Built once from ``DMG_*`` environment variables and an optional TOML file
(``DMG_CONFIG``, else ``<data dir>/dmg.toml`` when it exists). Environment wins
over the file; the file wins over the defaults in :mod:`settings.defaults`.
This package is the only place that reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from settings import defaults

__all__ = ["Settings", "SettingsError", "load", "process_environ", "proxy_in_environment", "secrets_of"]


class SettingsError(ValueError):
    """A setting has a value dmg cannot use; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path(defaults.DATA_DIR)
    redis_url: str = defaults.REDIS_URL
    redis_master_name: str = defaults.REDIS_MASTER_NAME
    #: The site broker's password (``DMG_REDIS_PASSWORD``); else the one in the URL, else
    #: the one ``dmg up`` generated into ``<data dir>/redis-password`` (settings.redistls).
    redis_password: str = ""
    #: TLS to the site broker: the CA that signed its certificate, and this client's own
    #: certificate and key when the server asks for one (settings.redistls).
    redis_tls_ca: str = ""
    redis_tls_cert: str = ""
    redis_tls_key: str = ""
    cloud_url: str = defaults.CLOUD_URL
    cloud_bind: str = defaults.CLOUD_BIND
    cloud_db: str = ""
    #: ``DMG_CLOUD_WORKERS``: processes serving the cloud's port (more than one needs
    #: PostgreSQL: SQLite has one writer; dmg.cloud.workers).
    cloud_workers: int = defaults.CLOUD_WORKERS
    #: The CA that signed the cloud's HTTPS certificate (nodes and the CLI check it).
    cloud_ca: str = ""
    #: ``dmg cloud serve`` over HTTPS: its certificate and key (``--tls-cert/--tls-key``).
    cloud_tls_cert: str = ""
    cloud_tls_key: str = ""
    api_token: str = ""
    node_name: str = ""
    #: The gateway whose Redis namespace this process uses (``dmg:<gateway>:``); set by
    #: ``dmg node start`` from the node's registration, empty for a process of no gateway.
    gateway: str = ""
    node_concurrency: int = 0
    heartbeat_interval: float = defaults.HEARTBEAT_INTERVAL
    offline_after: float = defaults.OFFLINE_AFTER
    lease_ttl: float = defaults.LEASE_TTL
    broker_visibility_timeout: float = defaults.BROKER_VISIBILITY_TIMEOUT
    shard_max_worker_deaths: int = defaults.SHARD_MAX_WORKER_DEATHS
    claim_wait: float = defaults.CLAIM_WAIT
    shard_max_files: int = defaults.SHARD_MAX_FILES
    shard_max_bytes: int = defaults.SHARD_MAX_BYTES
    max_queued_per_node: int = defaults.MAX_QUEUED_PER_NODE
    max_carried_per_message: int = defaults.MAX_CARRIED_PER_MESSAGE
    max_nodes_per_gateway: int = defaults.MAX_NODES_PER_GATEWAY
    cloud_max_body: int = defaults.CLOUD_MAX_BODY
    #: Seconds of node-metrics history the cloud keeps (dmg.cloud.service.history).
    cloud_history_retention: float = defaults.CLOUD_HISTORY_RETENTION
    #: Seconds an ended run is kept, with its shards, attempts and file results (0: forever;
    #: dmg.cloud.service.runretention).
    cloud_run_retention: float = defaults.CLOUD_RUN_RETENTION
    #: ``DMG_CLOUD_METRICS``: count the cloud's requests and SQL statements and serve them
    #: at ``GET /api/v1/debug/metrics`` (benchmarks; off by default).
    cloud_metrics: bool = False
    flower_port: int = defaults.FLOWER_PORT
    flower_user: str = defaults.FLOWER_USER
    flower_password: str = ""
    log_level: str = defaults.LOG_LEVEL
    #: ``text`` (default) or ``json``: one JSON object per log line (dmg.logformat).
    log_format: str = defaults.LOG_FORMAT
    #: ``/metrics`` open to anyone (a Prometheus without a token); else the API token only.
    cloud_metrics_public: bool = False
    credentials_file: str = ""
    store_check_interval: float = defaults.STORE_CHECK_INTERVAL
    autoscale_min: int = defaults.AUTOSCALE_MIN
    autoscale_max: int = defaults.AUTOSCALE_MAX
    autoscale_interval: float = defaults.AUTOSCALE_INTERVAL
    #: What a node asked to upgrade runs once drained and stopped (workers.agent.upgrade):
    #: "" re-executes the node's own command (the installed version starts), ``exit``
    #: exits for an orchestrator to start the new image, anything else is run first.
    upgrade_command: str = ""
    #: Seconds an upgrading node waits for its running shards before it stops anyway.
    upgrade_drain_timeout: float = defaults.UPGRADE_DRAIN_TIMEOUT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cloud_db_url(self) -> str:
        """The cloud database URL: ``DMG_CLOUD_DB`` or SQLite in the data dir."""
        if self.cloud_db:
            return self.cloud_db
        return f"sqlite:///{(self.data_dir / 'cloud' / 'cloud.db').resolve()}"

    @property
    def credentials_path(self) -> Path:
        """Store secrets of this site: ``DMG_CREDENTIALS_FILE`` or ``<data dir>/credentials.toml``."""
        if self.credentials_file:
            return Path(self.credentials_file).expanduser()
        return self.data_dir / "credentials.toml"

    @property
    def default_node_name(self) -> str:
        return self.node_name or socket.gethostname().split(".")[0]

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _coerce(name: str, raw: Any, kind: type) -> Any:
    try:
        if kind is Path:
            return Path(str(raw)).expanduser()
        if kind is bool:
            return str(raw).lower() in {"1", "true", "yes", "on"}
        return kind(raw)
    except (TypeError, ValueError) as exc:
        raise SettingsError(
            f"DMG_{name.upper()}={raw!r} is not a valid {kind.__name__}; "
            "fix the variable or the TOML file"
        ) from exc


_KINDS: dict[str, type] = {
    "data_dir": Path,
    "node_concurrency": int,
    "heartbeat_interval": float,
    "offline_after": float,
    "lease_ttl": float,
    "broker_visibility_timeout": float,
    "shard_max_worker_deaths": int,
    "claim_wait": float,
    "shard_max_files": int,
    "shard_max_bytes": int,
    "max_queued_per_node": int,
    "max_carried_per_message": int,
    "max_nodes_per_gateway": int,
    "cloud_max_body": int,
    "cloud_workers": int,
    "cloud_metrics_public": bool,
    "cloud_history_retention": float,
    "cloud_run_retention": float,
    "cloud_metrics": bool,
    "flower_port": int,
    "store_check_interval": float,
    "autoscale_min": int,
    "autoscale_max": int,
    "autoscale_interval": float,
    "upgrade_drain_timeout": float,
}


def load(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Build the settings from the environment, the TOML file and ``overrides``.

    Raises :class:`SettingsError` when a value cannot be used.
    """
    env = dict(os.environ if environ is None else environ)
    names = [f.name for f in fields(Settings) if f.name != "extra"]
    values: dict[str, Any] = {}

    data_dir = Path(env.get("DMG_DATA_DIR", defaults.DATA_DIR)).expanduser()
    config_path = env.get("DMG_CONFIG") or str(data_dir / "dmg.toml")
    if Path(config_path).is_file():
        import tomllib  # only when there is a file: a short CLI command saves its import

        try:
            with open(config_path, "rb") as fh:
                from_file = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{config_path} is not valid TOML: {exc}") from exc
        unknown = sorted(set(from_file) - set(names))
        if unknown:
            raise SettingsError(f"{config_path}: unknown settings {', '.join(unknown)}")
        values.update(from_file)
    elif env.get("DMG_CONFIG"):
        raise SettingsError(f"DMG_CONFIG={config_path} does not exist")

    for name in names:
        key = f"DMG_{name.upper()}"
        if key in env:
            values[name] = env[key]
    values.update({k: v for k, v in overrides.items() if v is not None})
    for name, raw in list(values.items()):
        values[name] = _coerce(name, raw, _KINDS.get(name, str))
    return Settings(**values)


#: Settings that are secrets a child process must be handed on purpose, never inherited:
#: the users' API token, Flower's password and the cloud's database URL (which may hold
#: a database password). The Redis password is the site's: every process that talks to
#: Redis needs it.
PRIVATE = ("api_token", "flower_password", "cloud_db")


def secrets_of(settings: Settings) -> list[str]:
    """The secret values ``settings`` holds (the :data:`PRIVATE` ones, the Redis password,
    passwords inside the Redis and database URLs): what no log line may show."""
    from urllib.parse import urlsplit

    values = [settings.api_token, settings.flower_password, settings.redis_password]
    for url in (settings.cloud_db, settings.redis_url):
        for part in url.replace(";", " ").split():
            try:
                password = urlsplit(part).password
            except ValueError:
                password = None
            if password:
                values.append(password)
    return [v for v in values if v]


#: The variables through which an HTTP client (httpx, urllib) finds a proxy for an
#: ``http://`` URL, in any case.
HTTP_PROXY_VARIABLES = ("http_proxy", "all_proxy")


def proxy_in_environment() -> bool:
    """Whether this process's environment names a proxy for ``http://`` URLs (``HTTP_PROXY``,
    ``ALL_PROXY``, any case): httpx then goes through it, and the CLI's plain client
    (:mod:`dmg.cloud.plainhttp`) steps aside."""
    return any(value and name.lower() in HTTP_PROXY_VARIABLES for name, value in os.environ.items())


def process_environ(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: this process's own (PATH, HOME, locale,
    virtualenv: what a child needs to run at all) without the :data:`PRIVATE` secrets,
    plus ``overrides``, which carry every dmg setting the child gets."""
    private = {f"DMG_{name.upper()}" for name in PRIVATE}
    env = {k: v for k, v in os.environ.items() if k not in private}
    env.update(overrides or {})
    return env


def settings_environ(settings: Settings, *, private: tuple[str, ...] = ()) -> dict[str, str]:
    """``settings`` as the ``DMG_*`` variables that make :func:`load` rebuild it in a
    child process (paths made absolute, so a child in another directory agrees).

    The :data:`PRIVATE` secrets are left out unless named in ``private``: a node, its
    worker and Flower never see the users' API token."""
    env: dict[str, str] = {}
    for f in dataclasses.fields(settings):
        if f.name == "extra" or (f.name in PRIVATE and f.name not in private):
            continue
        value = getattr(settings, f.name)
        if isinstance(value, Path):
            value = value.resolve()
        if f.name == "redis_password" and not value:
            continue
        env[f"DMG_{f.name.upper()}"] = str(value)
    return env
