"""Store definitions follow their type's schema; secrets inside allowed fields are found.

Given a real cloud; when a store carries what the issue found let through (a presigned
URL, an Authorization header, options ``key``/``auth``/``pass``, a URL-encoded
``PWD%3D``); then it is refused with one line naming the field (a secret, or an
unknown field with a pointer to ``dmg credentials set``) and nothing is saved; the
stores the README, the tests and the benchmarks define are still accepted.
"""

from __future__ import annotations

from typing import Any

import pytest

from dmg.cloud.client import CloudClient
from dmg.errors import BadInput
from tests.cloud.conftest import unique

SECRETS_MESSAGE = "secrets are set from inside the site, not in the cloud"


@pytest.mark.parametrize(("store", "field"), [
    ({"type": "s3", "location": "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4&X-Amz-Signature=ab12"},
     "location"),
    ({"type": "s3", "location": "https://b.s3.amazonaws.com/k?X-Amz-Security-Token=FQoGZX"}, "location"),
    ({"type": "s3", "location": "s3://b", "options": {"endpoint_url": "https://h/?X-Amz-Credential=AKIA%2F1"}},
     "options.endpoint_url"),
    ({"type": "sql", "location": "Driver=x;Server=db;UID=etl;PWD%3Dhunter2"}, "location"),
    ({"type": "sql", "location": "postgresql://etl@db/sales?password%253Dhunter2"}, "location"),
    ({"type": "sql", "location": "postgresql://etl%3Ahunter2%40db/sales"}, "location"),
    ({"type": "azureblob", "location": "https://a.blob.core.windows.net/c?sv=2022&sig%3Dabc"}, "location"),
])
def test_secrets_in_allowed_fields_are_refused(user: CloudClient, store: dict[str, Any], field: str) -> None:
    name = unique("s")
    with pytest.raises(BadInput) as refused:
        user.add_store({"name": name, **store})
    assert refused.value.message == SECRETS_MESSAGE
    assert f"'{field}'" in refused.value.hint and "dmg credentials set" in refused.value.hint
    assert "hunter2" not in str(refused.value)
    assert name not in [s["name"] for s in user.list_stores()]


@pytest.mark.parametrize(("options", "field"), [
    ({"headers": {"Authorization": "Bearer abc"}}, "headers"),
    ({"key": "AKIAIOSFODNN7EXAMPLE"}, "key"),
    ({"auth": "etl:hunter2"}, "auth"),
    ({"pass": "hunter2"}, "pass"),
])
def test_fields_outside_the_schema_are_refused_with_a_pointer(user: CloudClient, options: dict[str, Any],
                                                              field: str) -> None:
    name = unique("s")
    with pytest.raises(BadInput) as refused:
        user.add_store({"name": name, "type": "s3", "location": "s3://b/p", "options": options})
    text = str(refused.value)
    assert "\n" not in text and "hunter2" not in text
    assert f"'{field}'" in refused.value.message or refused.value.message == SECRETS_MESSAGE
    assert f"dmg credentials set {name}" in refused.value.hint or "dmg credentials set" in refused.value.hint
    assert name not in [s["name"] for s in user.list_stores()]


def test_an_unknown_top_level_field_names_itself_and_points_to_credentials(user: CloudClient) -> None:
    name = unique("s")
    with pytest.raises(BadInput) as refused:
        user.add_store({"name": name, "type": "file", "location": "/x", "optoins": {}})
    assert "'optoins'" in refused.value.message and "did you mean 'options'" in str(refused.value)
    assert f"dmg credentials set {name}" in refused.value.hint


@pytest.mark.parametrize("store", [  # what README, tests/ and bench/ define
    {"type": "file", "location": "/data/in"},
    {"type": "file", "location": "/mnt/share", "options": {"credential": "share", "shared": True}},
    {"type": "s3", "location": "s3://bucket/out", "options": {"region": "us-east-1"}},
    {"type": "s3", "location": "s3://bucket/p", "options": {"endpoint_url": "http://127.0.0.1:9000",
                                                            "addressing_style": "path"}},
    {"type": "azureblob", "location": "azureblob://container/prefix",
     "options": {"account_url": "http://127.0.0.1:10000/devstoreaccount1"}},
    {"type": "sql", "location": "postgresql://etl@db:5432/sales",
     "options": {"schema": "orders", "queries": {"daily": "select * from t where d = :day"}}},
])
def test_plain_definitions_still_pass(user: CloudClient, store: dict[str, Any]) -> None:
    assert user.add_store({"name": unique("s"), **store})["type"] == store["type"]
