"""Property-based fuzzing of the cloud API with schemathesis, from its own OpenAPI document.

Given a real cloud (uvicorn on a free port, SQLite in a temp dir) with a gateway, a
node and a queued run; when schemathesis sends generated requests (valid and
invalid) to every operation with the user token and with the node's token; then no
answer is a 5xx and every answer conforms to the document: its status is listed,
its content type is declared, its body fits the schema (errors included).

Bounded: :data:`EXAMPLES` examples per operation and token, no shrinking; about a
minute on a shared 2-core machine (17 s with 12 examples, 69 s with 60, load 3).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.cloud.conftest import Cloud, launch, make_pipeline, make_site

EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Cloud, dict[str, str]]]:
    server = launch(tmp_path_factory.mktemp("fuzz"))
    try:
        with server.user() as user:
            site = make_site(user, nodes=("n1",))
            user.run_pipeline(make_pipeline(user, site.gateway))
        yield server, {"user": server.process.api_token, "node": site.tokens["n1"]}
    finally:
        server.stop()


FUZZ = settings(max_examples=EXAMPLES, deadline=None, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck), database=None)


def _call(case: Any, token: str) -> None:
    if case.path == "/api/v1/dispatch/claim" and isinstance(case.body, dict) and "wait" in case.body:
        case.body["wait"] = 0  # a long-poll would only wait: the fuzzer learns nothing from it
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS, timeout=30)


def _fuzz(cloud: Cloud, token: str) -> list[str]:
    """Every operation, valid and invalid requests; -> what failed, one entry per operation
    and mode (the pytest plugin's lazy loading does not run under pytest 9 with
    schemathesis 4.32, so the operations are walked here)."""
    schema = schemathesis.openapi.from_url(cloud.url + "/openapi.json")
    found = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                _call(case, token)

            try:
                run()
            except Unsatisfiable:
                continue  # nothing to make invalid (an operation without inputs)
            except (Exception, BaseExceptionGroup) as exc:  # collected, asserted below
                found.append(f"{operation.method.upper()} {operation.path} ({mode.value}): "
                             + " | ".join(line.strip() for line in str(exc).splitlines()[:8] if line.strip()))
    return found


def test_with_the_user_token(fuzzed: tuple[Cloud, dict[str, str]]) -> None:
    cloud, tokens = fuzzed
    found = _fuzz(cloud, tokens["user"])
    assert not found, "\n".join(found)


def test_with_a_node_token(fuzzed: tuple[Cloud, dict[str, str]]) -> None:
    cloud, tokens = fuzzed
    found = _fuzz(cloud, tokens["node"])
    assert not found, "\n".join(found)
