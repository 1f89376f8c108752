"""Stores (never a secret) and pipelines (validated against gateways and stores)."""

from __future__ import annotations

from typing import Any

import pytest

from dmg.cloud.client import CloudClient
from dmg.errors import BadInput, Conflict, NotFound
from tests.cloud.conftest import make_site, unique

SECRETS_MESSAGE = "secrets are set from inside the site, not in the cloud"


def test_add_and_list_stores(user: CloudClient) -> None:
    name = unique("lake")
    added = user.add_store({"name": name, "type": "azureblob", "location": "https://acct.blob.core/c",
                            "options": {"credential": "lake-cred", "block_size": 4194304}})
    assert added["name"] == name and added["type"] == "azureblob"
    assert added["options"] == {"credential": "lake-cred", "block_size": 4194304}
    listed = {s["name"]: s for s in user.list_stores()}
    assert listed[name]["location"] == "https://acct.blob.core/c"
    with pytest.raises(Conflict):
        user.add_store({"name": name, "type": "file", "location": "/data"})


@pytest.mark.parametrize("store,field", [
    ({"type": "file", "location": "/x"}, "name"),
    ({"name": "s", "location": "/x"}, "type"),
    ({"name": "s", "type": "ftp", "location": "/x"}, "type"),
    ({"name": "s", "type": "file"}, "location"),
    ({"name": "s", "type": "file", "location": ""}, "location"),
    ({"name": "s", "type": "file", "location": "/x", "options": [1]}, "options"),
    ({"name": "s", "type": "file", "location": "/x", "colour": "red"}, "colour"),
])
def test_invalid_stores_name_the_field(user: CloudClient, store: dict[str, Any], field: str) -> None:
    if "name" in store:
        store = {**store, "name": unique("s")}
    with pytest.raises(BadInput) as refused:
        user.add_store(store)
    assert field in refused.value.message


@pytest.mark.parametrize("store", [
    {"type": "sql", "location": "postgresql://etl@db/sales", "options": {"password": "hunter2"}},
    {"type": "s3", "location": "s3://b", "options": {"secret_access_key": "x"}},
    {"type": "s3", "location": "s3://b", "options": {"AccessKey": "x"}},
    {"type": "s3", "location": "s3://b", "options": {"session-token": "x"}},
    {"type": "azureblob", "location": "https://a.blob/c", "options": {"account_key": "x"}},
    {"type": "azureblob", "location": "https://a.blob/c", "options": {"sas": "sv=2020&sig=abc"}},
    {"type": "azureblob", "location": "https://a.blob/c?sv=2020-01-01&sig=abc"},
    {"type": "azureblob", "location": "x",
     "options": {"connection_string": "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc=="}},
    {"type": "sql", "location": "Server=db;Database=sales;User Id=etl;Password=hunter2;"},
    {"type": "sql", "location": "postgresql://etl:hunter2@db/sales"},
    {"type": "file", "location": "/x", "options": {"nested": {"api_key": "k"}}},
    {"type": "file", "location": "/x", "password": "top-level"},
])
def test_secrets_are_refused(user: CloudClient, store: dict[str, Any]) -> None:
    name = unique("s")
    with pytest.raises(BadInput) as refused:
        user.add_store({"name": name, **store})
    assert refused.value.message == SECRETS_MESSAGE
    assert "hunter2" not in str(refused.value)
    assert name not in [s["name"] for s in user.list_stores()]


def test_secret_free_definitions_pass(user: CloudClient) -> None:
    for store in (
        {"type": "sql", "location": "postgresql://etl@db:5432/sales", "options": {"schema": "orders"}},
        {"type": "s3", "location": "s3://bucket/prefix", "options": {"region": "eu-west-1",
                                                                     "endpoint_url": "http://minio:9000"}},
        {"type": "file", "location": "/mnt/share", "options": {"credential": "share-cred"}},
    ):
        assert user.add_store({"name": unique("s"), **store})["type"] == store["type"]


def _pipeline(gateway: str, source: str, sink: str, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": unique("pl"), "gateway": gateway,
        "activities": [{"name": "copy", "source": {"store": source, "path": "in"},
                        "sink": {"store": sink, "path": "out"}, "options": {"overwrite": True}}],
    }
    body.update(changes or {})
    return body


def test_create_and_list_pipelines(user: CloudClient) -> None:
    site = make_site(user)
    src, dst = unique("src"), unique("dst")
    user.add_store({"name": src, "type": "file", "location": "/in"})
    user.add_store({"name": dst, "type": "file", "location": "/out"})
    body = _pipeline(site.gateway, src, dst)
    created = user.create_pipeline(body)
    assert created["name"] == body["name"] and created["gateway"] == site.gateway
    assert created["activities"][0]["source"] == {"store": src, "path": "in"}
    assert body["name"] in [p["name"] for p in user.list_pipelines()]
    with pytest.raises(Conflict):
        user.create_pipeline(body)


def test_pipeline_errors_name_what_is_wrong(user: CloudClient) -> None:
    site = make_site(user)
    src = unique("src")
    user.add_store({"name": src, "type": "file", "location": "/in"})
    missing_store = unique("nostore")
    with pytest.raises(NotFound) as unknown_store:
        user.create_pipeline(_pipeline(site.gateway, src, missing_store))
    assert missing_store in unknown_store.value.message
    missing_gateway = unique("nogw")
    with pytest.raises(NotFound) as unknown_gateway:
        user.create_pipeline(_pipeline(missing_gateway, src, src))
    assert missing_gateway in unknown_gateway.value.message
    cases: list[tuple[dict[str, Any], str]] = [
        ({"activities": []}, "activities"),
        ({"gateway": None}, "gateway"),
        ({"activities": [{"name": "a", "source": {"store": src}}]}, "activities[0].sink"),
        ({"activities": [{"name": "a", "source": {"path": "x"}, "sink": {"store": src}}]},
         "activities[0].source.store"),
        ({"activities": [{"name": "a", "source": {"store": src}, "sink": {"store": src}},
                         {"name": "a", "source": {"store": src}, "sink": {"store": src}}]}, "'a'"),
    ]
    for change, field in cases:
        with pytest.raises(BadInput) as refused:
            user.create_pipeline(_pipeline(site.gateway, src, src, change))
        assert field in refused.value.message, refused.value.message
    with pytest.raises(BadInput) as no_name:
        user.create_pipeline({"gateway": site.gateway, "activities": []})
    assert "name" in no_name.value.message
