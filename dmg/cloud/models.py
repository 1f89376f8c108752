"""The cloud's tables (SQLAlchemy 2 declarative models).

Times are POSIX seconds (UTC, float), as every dmg process reports them.
Secrets never reach a column in plaintext: gateway keys are Fernet-encrypted with
a sha256 lookup hash beside them, node tokens are stored as their sha256 only.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from dmg.shards.status import CLOUD_PLANNED

# Activity run and run statuses.
QUEUED = "Queued"
IN_PROGRESS = "InProgress"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
CANCELLED = "Cancelled"

# Shard statuses (planned by the dispatcher, then reported by nodes): dmg.shards.status.


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Gateway(Base):
    __tablename__ = "gateways"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    key1_encrypted: Mapped[str] = mapped_column(Text)
    key1_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key2_encrypted: Mapped[str] = mapped_column(Text)
    key2_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: The dispatcher epoch the cloud issued last (:mod:`dmg.cloud.service.leader`).
    max_epoch: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    # The gateway key's public half ("" until the first dispatcher makes it; the private
    # half never leaves the site), and a counter `dmg credentials sync` bumps.
    credential_key: Mapped[str] = mapped_column(String(64), default="", server_default="")
    credential_sync: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: The cloud-side dispatcher lease: the node that holds ``max_epoch``, the site lease
    #: epoch it presented, and until when no other node may take over (server time).
    leader_node_id: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    leader_site_epoch: Mapped[int] = mapped_column(BigInteger, default=0)
    leader_until: Mapped[float] = mapped_column(Float, default=0.0)
    #: Node-to-node (Redis) traffic: "tls" or "none" (dmg.status.ENCRYPTION_MODES).
    encryption_mode: Mapped[str] = mapped_column(String(8), default="none", server_default="none")
    #: The HTTP proxy every node applies to its cloud and cloud-store traffic ("" for none);
    #: may hold the proxy's credentials: shown only redacted (dmg.fingerprint.redact_url).
    proxy: Mapped[str] = mapped_column(Text, default="", server_default="")

    nodes: Mapped[list[Node]] = relationship(back_populates="gateway", cascade="all, delete-orphan",
                                             order_by="Node.name")
    credentials: Mapped[list[Credential]] = relationship(
        back_populates="gateway", cascade="all, delete-orphan", order_by="Credential.store")


class Node(Base):
    __tablename__ = "nodes"
    __table_args__ = (UniqueConstraint("gateway_id", "name", name="uq_nodes_gateway_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    version: Mapped[str] = mapped_column(String(32))
    registered_at: Mapped[float] = mapped_column(Float)
    # From the last heartbeat:
    role: Mapped[str] = mapped_column(String(32), default="")
    running: Mapped[int] = mapped_column(Integer, default=0)
    limit: Mapped[int] = mapped_column(Integer, default=0)
    cpu_percent: Mapped[float] = mapped_column(Float, default=0.0)
    memory_available: Mapped[int] = mapped_column(BigInteger, default=0)
    network_in: Mapped[float] = mapped_column(Float, default=0.0)
    network_out: Mapped[float] = mapped_column(Float, default=0.0)
    problems: Mapped[list[Any]] = mapped_column(JSON, default=list)
    credential_status: Mapped[str] = mapped_column(String(64), default="")
    stores_unreachable: Mapped[list[Any]] = mapped_column(JSON, default=list)
    draining: Mapped[bool] = mapped_column(Boolean, default=False)
    config_fingerprint: Mapped[str] = mapped_column(String(128), default="")
    # Its last beat said it stopped cleanly / its worker pool runs / its lease epoch as dispatcher.
    stopped: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    pool_running: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # What set its concurrent-job limit: cgroup, host, setting or scaled ("" if unsaid).
    sized_by: Mapped[str] = mapped_column(String(16), default="", server_default="")
    #: Its own encryption mode ("tls"/"none"; "" before its first beat that said it).
    encryption: Mapped[str] = mapped_column(String(8), default="", server_default="")
    #: The named parts of its configuration fingerprint (dmg.fingerprint); {} from an older node.
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=dict)
    #: The other nodes whose heartbeat it sees in the site broker; None: not known (an older
    #: node, or its broker unreachable).
    peers_seen: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True, default=None)
    #: Its own process tree's CPU % and memory, and the bytes its copies read and wrote.
    proc_cpu_percent: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    proc_mem_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    moved_in_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    moved_out_bytes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    last_heartbeat: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: An upgrade asked of it: "" none, "requested", "upgrading" (dmg.cloud.service.upgrades).
    upgrade: Mapped[str] = mapped_column(String(16), default="", server_default="")
    # When the dispatcher saw every process of the node lose its broker connection
    # (dmg.site.presence); Offline until a heartbeat newer than that.
    gone_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The node's own public key (X25519, base64) and the credential versions it holds.
    public_key: Mapped[str] = mapped_column(String(64), default="", server_default="")
    credentials_held: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    gateway: Mapped[Gateway] = relationship(back_populates="nodes")


class Credential(Base):
    """A store's credential in a gateway: its version and, sealed to the gateway key where
    it was typed, its ciphertext (the cloud cannot open it)."""

    __tablename__ = "credentials"
    __table_args__ = (UniqueConstraint("gateway_id", "store", name="uq_credentials_gateway_store"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"), index=True)
    store: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    sealed: Mapped[str] = mapped_column(Text)
    sealed_to: Mapped[str] = mapped_column(String(64))
    set_at: Mapped[float] = mapped_column(Float)

    gateway: Mapped[Gateway] = relationship(back_populates="credentials")


class Store(Base):
    __tablename__ = "stores"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    type: Mapped[str] = mapped_column(String(16))
    location: Mapped[str] = mapped_column(Text)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float)


class Pipeline(Base):
    __tablename__ = "pipelines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id", ondelete="RESTRICT"), index=True)
    # [{name, source: {store, path}, sink: {store, path}, options}]
    activities: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)

    gateway: Mapped[Gateway] = relationship()


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    pipeline_id: Mapped[int] = mapped_column(ForeignKey("pipelines.id", ondelete="CASCADE"), index=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Counters (dmg.cloud.service.counters): activity runs by status, files and bytes.
    activities_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    activities_queued: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    activities_in_progress: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    activities_succeeded: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    activities_failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    activities_cancelled: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    files_done: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    pipeline: Mapped[Pipeline] = relationship()
    gateway: Mapped[Gateway] = relationship()
    activity_runs: Mapped[list[ActivityRun]] = relationship(
        back_populates="run", cascade="all, delete-orphan", order_by="ActivityRun.position")


class ActivityRun(Base):
    __tablename__ = "activity_runs"
    __table_args__ = (Index("ix_activity_runs_gateway_status", "gateway_id", "status"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    gateway_id: Mapped[int] = mapped_column(ForeignKey("gateways.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    # {name, source: {store, path}, sink: {store, path}, options} as the pipeline said it
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    error: Mapped[str] = mapped_column(Text, default="")
    failed_by_dispatcher: Mapped[bool] = mapped_column(Boolean, default=False)
    planned: Mapped[bool] = mapped_column(Boolean, default=False)
    claim_epoch: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    claimed_by: Mapped[str] = mapped_column(String(64), default="")
    queued_at: Mapped[float] = mapped_column(Float)
    claimed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    cancelled_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # by a user
    # Counters (dmg.cloud.service.counters): shards by outcome, the lowest failed shard.
    shards_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    shards_succeeded: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    shards_failed: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    first_failed_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    files_done: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    run: Mapped[Run] = relationship(back_populates="activity_runs")
    shards: Mapped[list[Shard]] = relationship(
        back_populates="activity_run", cascade="all, delete-orphan", order_by="Shard.index")


class Shard(Base):
    __tablename__ = "shards"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    activity_run_id: Mapped[str] = mapped_column(ForeignKey("activity_runs.id", ondelete="CASCADE"),
                                                 index=True)
    index: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=CLOUD_PLANNED)
    node: Mapped[str] = mapped_column(String(64), default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    files_planned: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_planned: Mapped[int] = mapped_column(BigInteger, default=0)
    files: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    files_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    queued_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    wait_reason: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(Text, default="")

    activity_run: Mapped[ActivityRun] = relationship(back_populates="shards")


# Per-file results of a shard (the per-file report of an activity run).
FILE_STATUSES = ("copied", "skipped", "failed")


class FileRecord(Base):
    """One file of an activity run as its shard's latest attempt reported it."""

    __tablename__ = "file_results"
    __table_args__ = (UniqueConstraint("shard_id", "path_key", name="uq_file_results_shard_path"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    activity_run_id: Mapped[str] = mapped_column(ForeignKey("activity_runs.id", ondelete="CASCADE"),
                                                 index=True)
    shard_id: Mapped[str] = mapped_column(ForeignKey("shards.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(Text)  # in the sink
    path_key: Mapped[str] = mapped_column(Text)  # dmg.cloud.service.files.path_key: in path order
    source: Mapped[str] = mapped_column(Text, default="")
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    checksum: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16))
    verified: Mapped[str] = mapped_column(String(64), default="")
    error: Mapped[str] = mapped_column(Text, default="")
    node: Mapped[str] = mapped_column(String(64), default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    tries: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    recorded_at: Mapped[float] = mapped_column(Float)


class ShardAttempt(Base):
    """One attempt of a shard, as the dispatcher's and the worker's reports told it.

    ``outcome`` is "" while the attempt is open, else how it ended
    (:mod:`dmg.attempt_ends`); ``error`` is the worker's error of a failed attempt.
    """

    __tablename__ = "shard_attempts"
    __table_args__ = (UniqueConstraint("shard_id", "attempt", name="uq_shard_attempts_shard_attempt"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    activity_run_id: Mapped[str] = mapped_column(ForeignKey("activity_runs.id", ondelete="CASCADE"),
                                                 index=True)
    shard_id: Mapped[str] = mapped_column(ForeignKey("shards.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    node: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16))  # the last status reported: placed .. failed
    outcome: Mapped[str] = mapped_column(String(64), default="")
    error: Mapped[str] = mapped_column(Text, default="")
    wait_reason: Mapped[str] = mapped_column(Text, default="")
    files: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    placed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class PortalSession(Base):
    """A signed-in browser: the cookie's sha256, deleted at ``/logout`` (or once expired)."""

    __tablename__ = "portal_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class NodeSample(Base):
    """One point of a node's metrics history (:mod:`dmg.cloud.service.history`).

    ``resolution`` 0 is a heartbeat as received; 60 and 600 are averages over a bucket
    of that many seconds starting at ``at``, of ``samples`` heartbeats."""

    __tablename__ = "node_samples"
    __table_args__ = (Index("ix_node_samples_node_resolution_at", "node_id", "resolution", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    resolution: Mapped[int] = mapped_column(Integer)
    at: Mapped[float] = mapped_column(Float)
    samples: Mapped[int] = mapped_column(Integer, default=1)
    cpu_percent: Mapped[float] = mapped_column(Float, default=0.0)
    memory_available: Mapped[float] = mapped_column(Float, default=0.0)
    running: Mapped[float] = mapped_column(Float, default=0.0)
    limit: Mapped[float] = mapped_column(Float, default=0.0)
    network_in: Mapped[float] = mapped_column(Float, default=0.0)
    network_out: Mapped[float] = mapped_column(Float, default=0.0)


class NodeRequest(Base):
    """What a user asked of a node from the portal (:mod:`dmg.cloud.service.noderequests`):
    a new concurrent-job limit, drain or undrain. The node gets it in its heartbeat's
    answer and applies it inside the site; the row goes once its beats show it done."""

    __tablename__ = "node_requests"

    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True)
    limit: Mapped[int | None] = mapped_column(Integer, nullable=True)
    drain: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    requested_at: Mapped[float] = mapped_column(Float)
