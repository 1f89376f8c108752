"""Request bodies of the cloud API (pydantic models, shared by the API and the service).

Unknown fields are ignored, except in a store definition, where they are checked
for secrets and then refused. A body that does not fit is answered 400 naming the
field (see :func:`dmg.cloud.api.errors.validation_message`); every body first passes
:func:`dmg.definitions.check_shape` (depth, size, NUL, NaN). Store and pipeline
definitions then follow the rules of :mod:`dmg.definitions`.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ModelWrapValidatorHandler, field_validator, model_validator

from dmg.attempt_ends import REPLACED
from dmg.cloud.limits import MAX_BATCH_ITEMS, MAX_CLAIM_AGAIN, MAX_FILE_RESULTS
from dmg.definitions import check_shape, unknown_name
from dmg.shards.status import CLOUD_REPORTED

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
#: "1.2.3", also with a PEP 440 suffix ("1.2.3.dev1", "1.2.3+local"); compared numerically.
VERSION_PATTERN = r"^[0-9]+(\.[0-9]+)*([.+-]?[A-Za-z0-9.+-]*)?$"
NAME_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"

Name = Field(pattern=NAME_PATTERN, min_length=1, max_length=64)

STORE_TYPES = ("file", "s3", "azureblob", "sql")
SHARD_STATUSES = CLOUD_REPORTED  # the Literal of ShardReport.status spells them (pydantic needs literals)

#: The longest a dispatcher's long-poll may wait, in seconds.
MAX_CLAIM_WAIT = 60.0


#: Counters stored in 32-bit columns (jobs, limits, indexes, attempts).
Small = Annotated[int, Field(ge=0, le=2**31 - 1)]
#: A store (or credential) name, as a dict key.
StoreName = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=64)]
#: Counters stored in 64-bit columns (bytes, files, epochs).
Big = Annotated[int, Field(ge=0, le=2**62)]


#: An X25519 public key in base64 (32 bytes), or "" for none.
PUBLIC_KEY_PATTERN = r"^$|^[A-Za-z0-9+/]{43}=$"


class CredentialSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The secret sealed (base64) to the gateway key ``sealed_to`` where it was typed.
    sealed: str = Field(min_length=1, max_length=16 * 1024, pattern=r"^[A-Za-z0-9+/=]+$")
    sealed_to: str = Field(pattern=PUBLIC_KEY_PATTERN, min_length=44, max_length=44)


class GatewayKeyOffer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    public_key: str = Field(pattern=PUBLIC_KEY_PATTERN, min_length=44, max_length=44)


#: Set while a body's whole value is being validated after its shape was checked: the
#: bodies nested in it are inside that check (a batch of 5,000 file results was walked
#: once per nesting level and once per file: ~75 % of its validation).
_SHAPE_CHECKED: ContextVar[bool] = ContextVar("dmg_shape_checked", default=False)


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    @model_validator(mode="wrap")
    @classmethod
    def _only_storable(cls, data: Any, handler: ModelWrapValidatorHandler[Body]) -> Body:
        if _SHAPE_CHECKED.get():  # nested in a body whose whole value was checked
            return handler(data)
        check_shape(data)  # before pydantic walks it: a hostile nesting is refused cheaply
        token = _SHAPE_CHECKED.set(True)
        try:
            return handler(data)
        finally:
            _SHAPE_CHECKED.reset(token)


class GatewayCreate(Body):
    name: str = Name


class KeyRegenerate(Body):
    key: Literal["key1", "key2"]


class NodeRegister(Body):
    key: str = Field(min_length=1, max_length=512)
    name: str = Name
    version: str = Field(pattern=VERSION_PATTERN, max_length=32)
    #: The node's X25519 public key (base64), for credentials sealed to it.
    public_key: str = Field(default="", pattern=PUBLIC_KEY_PATTERN, max_length=64)
    #: The gateway id (``gateway_id`` of an earlier registration) the data dir already belongs
    #: to: a key of another gateway is refused, and nothing is registered.
    expect_gateway_id: str = Field(default="", max_length=64)


ConfigPart = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z_]+$")]
ConfigValue = Annotated[str, Field(max_length=256)]
NodeName = Annotated[str, Field(min_length=1, max_length=64)]


class Heartbeat(Body):
    role: str = Field(default="", max_length=32)
    running: Small = 0
    limit: Small = 0
    cpu_percent: float = Field(default=0.0, ge=0, le=1e6)
    memory_available: Big = 0
    network_in: float = Field(default=0.0, ge=0, le=1e18)
    network_out: float = Field(default=0.0, ge=0, le=1e18)
    version: str = Field(default="", pattern=f"^$|{VERSION_PATTERN}", max_length=32)
    problems: list[str] = Field(default_factory=list, max_length=64)
    credential_status: str = Field(default="", max_length=64)
    stores_unreachable: list[str] = Field(default_factory=list, max_length=256)
    draining: bool = False
    config_fingerprint: str = Field(default="", max_length=128)
    #: The node stopped cleanly (its last beat); its worker pool runs; its lease epoch
    #: while it is the dispatcher (0 otherwise).
    stopped: bool = False
    pool_running: bool = True
    epoch: Small = 0
    #: The credential versions the node holds, by store; its public key (dmg.credentials).
    credentials: dict[StoreName, Small] | None = Field(default=None, max_length=1024)
    public_key: str = Field(default="", pattern=PUBLIC_KEY_PATTERN, max_length=64)
    #: Does the node reach the site broker over TLS ("" from a node too old to say).
    encryption: Literal["", "tls", "none"] = ""
    #: What set the node's concurrent-job limit (workers.agent.sizing): the container's
    #: cgroup limits, the host's size, DMG_NODE_CONCURRENCY, or a runtime scale ("" if unsaid).
    sized_by: Literal["", "cgroup", "host", "setting", "scaled"] = ""
    #: The node took up an upgrade asked of it: draining, then restarting (dmg.cloud.service.upgrades).
    upgrading: bool = False
    #: The named parts of its configuration fingerprint (dmg.fingerprint: each safe to show;
    #: ``config_fingerprint`` is their hash).
    config: dict[ConfigPart, ConfigValue] = Field(
        default_factory=dict, max_length=32,
        description="named parts of the node's configuration that must match across the gateway "
                    "(encryption, proxy without credentials, heartbeat_interval, offline_after, lease_ttl, "
                    "...); config_fingerprint is their hash")
    #: The other nodes whose heartbeat it sees in the site broker; None: not known.
    peers_seen: list[NodeName] | None = Field(
        default=None, max_length=1024,
        description="the other nodes whose heartbeat this node sees in its site broker; null: unknown")
    #: Its own process tree (agent + worker + pool): CPU % (100 = one core) and resident bytes.
    proc_cpu_percent: float = Field(default=0.0, ge=0, le=1e6,
                                    description="CPU % of the node's own process tree (100 = one core)")
    proc_mem_bytes: Big = Field(default=0, description="resident bytes of the node's own process tree")
    #: Bytes its copies read (in) and wrote (out) since the node started.
    moved_in_bytes: Big = Field(default=0, description="bytes the node's copies read")
    moved_out_bytes: Big = Field(default=0, description="bytes the node's copies wrote")


class ProxyChange(Body):
    """The gateway's HTTP proxy (``http(s)://[user:password@]host[:port]``; "" clears it)."""

    url: str = Field(default="", max_length=2048)


class EncryptionChange(Body):
    mode: Literal["tls", "none"]


class StoreCreate(Body):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    name: str = Name
    type: Literal["file", "s3", "azureblob", "sql"]
    location: str = Field(min_length=1, max_length=4096)
    options: dict[str, Any] = Field(default_factory=dict)


class Definition(Body):
    """A part of a pipeline definition: an unknown field is refused with a "did you mean"
    (a misspelt ``optoins`` must not be dropped silently)."""

    label: ClassVar[str] = "definition"

    @model_validator(mode="before")
    @classmethod
    def _only_known_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    raise ValueError(str(unknown_name(str(key), cls.model_fields, what=f"{cls.label} field")))
        return data


class Endpoint(Definition):
    label = "source/sink"
    store: str = Name
    path: str = Field(default="", max_length=4096)


class Activity(Definition):
    label = "activity"
    name: str = Name
    source: Endpoint
    sink: Endpoint
    options: dict[str, Any] = Field(default_factory=dict)


class PipelineCreate(Definition):
    label = "pipeline"
    name: str = Name
    gateway: str = Name
    activities: list[Activity] = Field(min_length=1, max_length=256)


class Claim(Body):
    epoch: Big
    wait: float = Field(default=0.0, ge=0, le=3600)
    limit: int = Field(default=16, ge=1, le=256)
    #: sent after a claim that failed: the ids the dispatcher holds claimed and unplanned;
    #: what else it claimed with this epoch and never planned is sent again
    again: list[Annotated[str, Field(max_length=128)]] | None = Field(default=None,
                                                                      max_length=MAX_CLAIM_AGAIN)


class PlannedShard(Body):
    id: str = Field(min_length=1, max_length=128)
    index: Small
    files: Big = 0
    bytes: Big = 0


class PlanShards(Body):
    epoch: Big
    shards: list[PlannedShard] = Field(max_length=100_000)


class NodesGone(Body):
    """Nodes of the reporter's gateway whose processes all lost their broker connection."""

    epoch: Big
    nodes: list[str] = Field(max_length=256)


class FailActivityRun(Body):
    epoch: Big
    error: str = Field(min_length=1, max_length=4096)


class ShardReport(Body):
    attempt: Small
    status: Literal["placed", "running", "succeeded", "failed"]
    node: str | None = Field(default=None, max_length=64)
    files: Big | None = None
    bytes: Big | None = None
    files_total: Big | None = None
    bytes_total: Big | None = None
    started_at: float | None = None
    ended_at: float | None = None
    error: str | None = Field(default=None, max_length=4096)
    wait_reason: str | None = Field(default=None, max_length=1024)
    #: ``placed`` reports only: when the dispatcher sent the attempt, and why (and when)
    #: the shard's previous attempt ended (:data:`dmg.attempt_ends.REPLACED`).
    placed_at: float | None = None
    previous_ended: str | None = Field(default=None, max_length=64)
    previous_ended_at: float | None = None
    #: ``placed`` reports only: the dispatcher's site lease epoch (:mod:`dmg.cloud.service.leader`).
    epoch: Big | None = None

    @field_validator("previous_ended")
    @classmethod
    def _known_ending(cls, value: str | None) -> str | None:
        if value is not None and value not in REPLACED:
            raise ValueError(str(unknown_name(value, REPLACED, what="attempt ending")))
        return value




# A file result's fields, once for both its forms (FileResultIn and FileRowIn).
FilePath = Annotated[str, Field(min_length=1, max_length=4096)]
SourcePath = Annotated[str, Field(max_length=4096)]
Checksum = Annotated[str, Field(max_length=64)]
FileStatus = Literal["copied", "skipped", "failed"]
Verified = Annotated[str, Field(max_length=64)]
FileError = Annotated[str, Field(max_length=4096)]


class FileResultIn(Body):
    """One file of a shard, as :class:`dmg.transfer.FileResult` reports it."""

    path: FilePath
    source: SourcePath = ""
    bytes: Big = 0
    checksum: Checksum = ""
    status: FileStatus
    verified: Verified = ""
    error: FileError = ""
    tries: Small = 0
    started: float | None = None
    ended: float | None = None


#: One file of a shard as a row: FileResultIn's fields in :data:`dmg.cloud.filerows.ROW_FIELDS`
#: order, each checked as there (a test keeps the two in step).
FileRowIn = tuple[FilePath, SourcePath, Big, Checksum, FileStatus, Verified, FileError, Small, float | None,
                  float | None]


class FileResults(Body):
    """A shard attempt's file results: as objects (``files``) and/or rows (``rows``,
    :mod:`dmg.cloud.filerows`); a path given twice counts as given last (rows after files)."""

    attempt: Small
    node: str | None = Field(default=None, max_length=64)
    files: list[FileResultIn] = Field(default_factory=list, max_length=MAX_FILE_RESULTS)
    rows: list[FileRowIn] = Field(default_factory=list, max_length=MAX_FILE_RESULTS)




class ActivityPlan(Body):
    """The plan of a claimed activity run, as an item of the dispatcher's report batch."""

    activity_run_id: str = Field(min_length=1, max_length=128)
    epoch: Big
    shards: list[PlannedShard] = Field(max_length=100_000)
    #: When the site queued the shards for placement (its clock); the cloud keeps it
    #: within [the claim, the plan's arrival]. None: when the plan arrives.
    queued_at: float | None = Field(default=None, ge=0, le=1e11)


class ReportItem(Body):
    """One item of a batch: a shard's file results and/or its report (files first), or
    (from the dispatcher) an activity run's plan, alone."""

    shard_id: str = Field(default="", max_length=128)
    report: ShardReport | None = None
    files: FileResults | None = None
    #: Sent by the dispatcher for a node the cloud removed (:mod:`dmg.cloud.service.relay`):
    #: the removed node's name and the dispatcher's site epoch.
    relayed_for: str | None = Field(default=None, min_length=1, max_length=64)
    epoch: int | None = Field(default=None, ge=0)
    plan: ActivityPlan | None = None

    @model_validator(mode="after")
    def _something(self) -> ReportItem:
        if self.plan is not None:
            if self.report is not None or self.files is not None or self.shard_id:
                raise ValueError("a plan item carries the plan alone (no shard_id, report or files)")
            return self
        if not self.shard_id:
            raise ValueError("shard_id: a report or file results item names its shard")
        if self.report is None and self.files is None:
            raise ValueError("an item carries a report, file results, or both")
        if self.relayed_for is not None and self.epoch is None:
            raise ValueError("a relayed item carries the dispatcher's epoch")
        return self


class ReportBatch(Body):
    """Shard reports and file results of a node, oldest first (``POST /nodes/reports``)."""

    items: list[ReportItem] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)
