"""The options each store type takes: one pydantic model per type, the schema the cloud
checks a store definition against (:mod:`dmg.definitions`).

No SDK is imported here, so the cloud checks ``s3`` or ``azureblob`` options without
boto3 or azure installed. Each connector's module docstring says what an option
does; this module says which names exist and which values they take. Every store
may name the credentials-file entry holding its secret (``credential``, see
:mod:`dmg.credentials.rules`) and say that every node reaches it the same way
(``shared``, see :mod:`dmg.cloud.service.localpaths`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

MiB = 1024 * 1024

Seconds = Annotated[float, Field(gt=0, le=3600)]
Concurrency = Annotated[int, Field(ge=1, le=64)]
Retries = Annotated[int, Field(ge=0, le=20)]
Text = Annotated[str, Field(max_length=4096)]


class StoreOptions(BaseModel):
    """Options every store type takes."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    credential: Annotated[str, Field(max_length=64)] | None = None
    shared: StrictBool = False  # every node reaches the location the same way (no node-local warning)


class FileOptions(StoreOptions):
    fsync: StrictBool = False


class S3Options(StoreOptions):
    endpoint_url: Annotated[str, Field(max_length=2048, pattern=r"^https?://")] | None = None
    region: Annotated[str, Field(max_length=64)] | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    multipart_threshold: Annotated[int, Field(ge=5 * MiB, le=5 * 1024 * MiB)] = 8 * MiB
    multipart_chunksize: Annotated[int, Field(ge=5 * MiB, le=5 * 1024 * MiB)] = 8 * MiB
    max_concurrency: Concurrency = 4
    part_checksum: Literal["crc32", "md5"] = "crc32"
    upload_cutoff: Annotated[int, Field(ge=0, le=5 * 1024 * MiB)] = 200 * MiB
    sign_payload: StrictBool = False
    max_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    connect_timeout: Seconds = 10
    read_timeout: Seconds = 60


class AzureBlobOptions(StoreOptions):
    account_url: Annotated[str, Field(max_length=2048, pattern=r"^https?://")] | None = None
    block_size: Annotated[int, Field(ge=1, le=4000 * MiB)] = 4 * MiB
    upload_cutoff: Annotated[int, Field(ge=0, le=5000 * MiB)] = 200 * MiB
    max_concurrency: Concurrency = 4
    retry_total: Retries = 3
    connection_timeout: Seconds = 10
    read_timeout: Seconds = 60


class SqlOptions(StoreOptions):
    format: Literal["csv", "jsonl"] = "csv"
    queries: Annotated[dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=65536)]],
                       Field(max_length=256)] = Field(default_factory=dict)
    schema_: Annotated[str, Field(max_length=64)] | None = Field(default=None, alias="schema")
    shard_key: Annotated[str, Field(max_length=64)] | None = None
    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    rows_per_shard: Annotated[int, Field(ge=0, le=2**40)] = 0
    connect_timeout: Annotated[int, Field(ge=1, le=3600)] = 10
    create_table: StrictBool = False


#: The options model of each store type.
STORE_OPTIONS: dict[str, type[StoreOptions]] = {
    "file": FileOptions,
    "s3": S3Options,
    "azureblob": AzureBlobOptions,
    "sql": SqlOptions,
}


def option_names(store_type: str) -> list[str]:
    """The option names a store of ``store_type`` takes (as written in a definition)."""
    model = STORE_OPTIONS[store_type]
    return sorted(field.alias or name for name, field in model.model_fields.items())
