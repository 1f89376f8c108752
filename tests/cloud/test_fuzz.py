"""Property-based fuzzing of the cloud API with schemathesis, from its own OpenAPI document.

Given a real cloud (uvicorn on a free port, SQLite in a temp dir) with a gateway, a
node and a queued run; when schemathesis sends generated requests (valid and
invalid) to every operation with the user token and with the node's token; then no
answer is a 5xx and every answer conforms to the document: its status is listed,
its content type is declared, its body fits the schema (errors included).

Bounded: :data:`EXAMPLES` examples per operation, mode and token, no shrinking; an
operation of the other token's scope (``x-dmg-scope``: a node token on a user route, the
user token on a node route) is refused before it does anything, so it gets
:data:`REFUSED_EXAMPLES` (``tests/cloud/test_scopes.py`` checks every route with every
token). 311 s with 25 examples everywhere, load 12; see the README's "Test run time".
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
REFUSED_EXAMPLES = 5
#: The scope whose routes each token is refused on (user vs node; public and gateway-key
#: routes are fuzzed in full with both).
OTHER_SCOPE = {"user": "node", "node": "user"}
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


def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=list(HealthCheck), database=None)


def _call(case: Any, token: str) -> None:
    if case.path == "/api/v1/dispatch/claim" and isinstance(case.body, dict) and "wait" in case.body:
        case.body["wait"] = 0  # a long-poll would only wait: the fuzzer learns nothing from it
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS, timeout=30)


def _fuzz(cloud: Cloud, token: str, *, scope: str) -> list[str]:
    """Every operation, valid and invalid requests; -> what failed, one entry per operation
    and mode (the pytest plugin's lazy loading does not run under pytest 9 with
    schemathesis 4.32, so the operations are walked here)."""
    schema = schemathesis.openapi.from_url(cloud.url + "/openapi.json")
    found = []
    operations = [result.ok() for result in schema.get_all_operations()]
    refused = {(op.method, op.path) for op in operations
               if op.definition.raw.get("x-dmg-scope") == OTHER_SCOPE[scope]}
    assert len(operations) > 30 and 5 < len(refused) < len(operations) - 5, (len(operations), len(refused))
    for operation in operations:
        examples = REFUSED_EXAMPLES if (operation.method, operation.path) in refused else EXAMPLES
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @fuzz_settings(examples)
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
    found = _fuzz(cloud, tokens["user"], scope="user")
    assert not found, "\n".join(found)


def test_with_a_node_token(fuzzed: tuple[Cloud, dict[str, str]]) -> None:
    cloud, tokens = fuzzed
    found = _fuzz(cloud, tokens["node"], scope="node")
    assert not found, "\n".join(found)
