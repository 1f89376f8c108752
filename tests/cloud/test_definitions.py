"""Hostile and mistaken definitions are refused at the API with one clear 4xx line.

Given a real cloud server, when a store or pipeline definition nests 300 levels
deep, is 10 MB, misspells an option, has a wrong type, a '..' path, an unknown store
type or a store that does not exist, then the answer is a 4xx ``{error, message,
hint}`` naming the problem, nothing is saved, and listing stores and pipelines still
works. A definition saved before these rules (written to the database directly) is
listed with the reason it is invalid, and its run fails alone at the claim, with that
reason, while the other runs of the claim batch are handed out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, update

from dmg.cloud.models import ActivityRun, Pipeline, Store
from tests.cli.conftest import DmgRunner, assert_one_line_error
from tests.cloud.conftest import Cloud, make_site, unique


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.fixture
def http(cloud: Cloud) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cloud.url + "/api/v1", timeout=30,
                      headers={"Authorization": f"Bearer {cloud.process.api_token}"}) as client:
        yield client


@pytest.fixture
def stores(http: httpx.Client) -> tuple[str, str]:
    source, sink = unique("src"), unique("dst")
    for name in (source, sink):
        added = http.post("/stores", json={"name": name, "type": "file", "location": "/data"})
        assert added.status_code == 201, added.text
    return source, sink


def refused(response: httpx.Response, status: int = 400) -> str:
    """The one-line message of a 4xx JSON error."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message", "hint"} and body["error"] == "bad_input", body
    assert "\n" not in body["message"] and "Traceback" not in response.text
    return f"{body['message']} ({body['hint']})"


def lists_work(http: httpx.Client) -> tuple[set[str], set[str]]:
    listed_stores, listed_pipelines = http.get("/stores"), http.get("/pipelines")
    assert listed_stores.status_code == 200 and listed_pipelines.status_code == 200
    return {s["name"] for s in listed_stores.json()}, {p["name"] for p in listed_pipelines.json()}


def pipeline(name: str, source: str, sink: str, *, options: Any = None, sink_path: str = "out",
             gateway: str = "") -> dict[str, Any]:
    return {"name": name, "gateway": gateway or unique("gw"), "activities": [
        {"name": "copy", "source": {"store": source, "path": "in"},
         "sink": {"store": sink, "path": sink_path}, "options": {} if options is None else options}]}


@pytest.mark.parametrize(("store", "words"), [
    ({"type": "file", "location": "/x", "options": nested(300)}, "nests deeper than 12 levels"),
    ({"type": "s3", "location": "s3://b", "options": {"regoin": "eu-west-1"}}, "did you mean 'region'"),
    ({"type": "s3", "location": "s3://b", "options": {"max_concurrency": "many"}}, "'max_concurrency'"),
    ({"type": "s3", "location": "s3://b", "options": {"max_concurrency": 0}}, "'max_concurrency'"),
    ({"type": "sql", "location": "postgresql://db/x", "options": {"format": "xml"}}, "'format'"),
    ({"type": "file", "location": "/x", "options": {"fsync": {"deep": True}}}, "'fsync'"),
    ({"type": "ftp", "location": "/x"}, "type"),
    ({"type": "file", "location": "/x", "options": {"ünïcødé ☃": "x"}},
     "unknown file store option 'ünïcødé ☃'"),
    ({"type": "file", "location": ["/x"]}, "location"),
    ({"type": "file", "locaton": "/x"}, "location"),
    ({"type": "file", "location": "/x", "optoins": {}},
     "unknown store field 'optoins' (did you mean 'options'?"),
])
def test_a_bad_store_is_refused_and_not_saved(http: httpx.Client, store: dict[str, Any], words: str) -> None:
    name = unique("bad")
    message = refused(http.post("/stores", json={"name": name, **store}))
    assert words in message, message
    names, _pipelines = lists_work(http)
    assert name not in names


def test_a_10_mb_definition_is_refused_before_it_is_read(http: httpx.Client, stores: tuple[str, str]) -> None:
    name = unique("huge")
    body = {"name": name, "type": "file", "location": "/x", "options": {"credential": "x" * 10_000_000}}
    assert "more than 65536" in refused(http.post("/stores", json=body), 413)
    big = pipeline(name, *stores, options={"include": ["*.csv"] * 1_000_000})
    assert "more than 1048576" in refused(http.post("/pipelines", json=big), 413)
    names, pipelines = lists_work(http)
    assert name not in names and name not in pipelines


def test_bad_pipelines_are_refused_and_not_saved(http: httpx.Client, cloud: Cloud,
                                                 stores: tuple[str, str]) -> None:
    with cloud.user() as user:
        gateway = make_site(user).gateway
    source, sink = stores
    cases: list[tuple[dict[str, Any], str]] = [
        ({"options": nested(300)}, "nests deeper than 12 levels"),
        ({"options": {"bandwith": "1M"}}, "unknown option 'bandwith' (did you mean 'bandwidth'?"),
        ({"options": {"bandwidth": "fast"}}, "'fast' is not a rate"),
        ({"options": {"parallel_files": [4]}}, "'parallel_files' must be an integer"),
        ({"options": {"split_part_size": 1}}, "'split_part_size' must be at least"),
        ({"options": {"overwrite": "sometimes"}}, "'overwrite'"),
        ({"options": {"ēxclude☃": ["*"]}}, "unknown option 'ēxclude☃'"),
        ({"options": "fast"}, "options"),
        ({"sink_path": "../../etc"}, "sink path '../../etc' has a '..' segment"),
        ({"sink_path": "a/../../b"}, "'..' segment"),
    ]
    misspelt: list[tuple[dict[str, Any], str]] = [
        ({"activites": []}, "unknown pipeline field 'activites' (did you mean 'activities'?"),
        ({"optoins": {}}, "unknown activity field 'optoins' (did you mean 'options'?"),
        ({"sink": {"store": sink, "pth": "x"}}, "unknown source/sink field 'pth' (did you mean 'path'?"),
    ]
    for change, words in misspelt:
        body = pipeline(unique("bad"), source, sink, gateway=gateway)
        if "activites" in change:
            body.update(change)
        else:
            body["activities"][0].update(change)
        message = refused(http.post("/pipelines", json=body))
        assert words in message, (change, message)
        assert body["name"] not in lists_work(http)[1]
    for change, words in cases:
        name = unique("bad")
        body = pipeline(name, source, sink, gateway=gateway, **change)
        message = refused(http.post("/pipelines", json=body))
        assert words in message, (change, message)
        _stores, pipelines = lists_work(http)
        assert name not in pipelines
    absent = unique("nostore")
    missing = http.post("/pipelines", json=pipeline(unique("bad"), source, absent, gateway=gateway))
    assert missing.status_code == 404 and absent in missing.json()["message"]
    good = pipeline(unique("good"), source, sink, gateway=gateway,
                    options={"bandwidth": "1M", "split_above": 0})
    assert http.post("/pipelines", json=good).status_code == 201


def test_the_cli_prints_the_clouds_one_line_error(cloud: Cloud, stores: tuple[str, str],
                                                  tmp_path: Path) -> None:
    with cloud.user() as user:
        gateway = make_site(user).gateway
    spec = tmp_path / "pipeline.json"
    name = unique("typo")
    spec.write_text(httpx.Response(200, json=pipeline(name, *stores, gateway=gateway,
                                                      options={"bandwith": "1M"})).text)
    misspelt = tmp_path / "misspelt.json"
    body = pipeline(name, *stores, gateway=gateway)
    body["activities"][0]["optoins"] = body["activities"][0].pop("options")
    misspelt.write_text(httpx.Response(200, json=body).text)
    dmg = DmgRunner(env={"DMG_CLOUD_URL": cloud.url, "DMG_API_TOKEN": cloud.process.api_token,
                         "DMG_DATA_DIR": str(tmp_path / "data")}, cwd=tmp_path)
    assert_one_line_error(dmg("pipeline", "create", str(spec)), contains="did you mean 'bandwidth'")
    assert_one_line_error(dmg("pipeline", "create", str(misspelt)), contains="did you mean 'options'")
    listed = dmg("pipeline", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert name not in listed.stdout


def test_a_definition_saved_before_the_rules_fails_its_run_alone(http: httpx.Client, cloud: Cloud,
                                                                 stores: tuple[str, str]) -> None:
    with cloud.user() as user:
        site = make_site(user)
    source, sink = stores
    poisoned, healthy = unique("poison"), unique("healthy")
    for name in (poisoned, healthy):
        created = http.post("/pipelines", json=pipeline(name, source, sink, gateway=site.gateway))
        assert created.status_code == 201, created.text
    runs = [http.post(f"/pipelines/{name}/runs").json() for name in (poisoned, healthy)]
    poisoned_store = unique("old")
    added = http.post("/stores", json={"name": poisoned_store, "type": "file", "location": "/x"})
    assert added.status_code == 201, added.text
    poison = {"name": "copy", "source": {"store": source, "path": "in"},
              "sink": {"store": sink, "path": ""}, "options": nested(300)}
    engine = create_engine(cloud.db_url)  # what an older dmg let in
    try:
        with engine.begin() as connection:
            connection.execute(update(Pipeline).where(Pipeline.name == poisoned).values(activities=[poison]))
            connection.execute(update(Store).where(Store.name == poisoned_store).values(options=nested(300)))
            queued = update(ActivityRun).where(ActivityRun.run_id == runs[0]["id"])
            connection.execute(queued.values(spec=poison))
    finally:
        engine.dispose()

    listed_stores = {s["name"]: s for s in http.get("/stores").json()}
    assert "nests deeper" in listed_stores[poisoned_store]["invalid"]
    listed = {p["name"]: p for p in http.get("/pipelines").json()}
    assert "nests deeper" in listed[poisoned]["invalid"] and "invalid" not in listed[healthy]
    assert "nests deeper" in refused(http.post(f"/pipelines/{poisoned}/runs"))

    node = {"Authorization": f"Bearer {site.tokens['n1']}"}
    claim = http.post("/dispatch/claim", json={"epoch": 1, "wait": 0, "limit": 16}, headers=node)
    assert claim.status_code == 200, claim.text
    # The poison is not handed out; the other run of the batch is.
    assert [a["run_id"] for a in claim.json()["activity_runs"]] == [runs[1]["id"]]
    failed = http.get(f"/runs/{runs[0]['id']}").json()
    assert failed["status"] == "Failed" and "nests deeper" in failed["activity_runs"][0]["error"]
    again = http.post("/dispatch/claim", json={"epoch": 2, "wait": 0, "limit": 16}, headers=node)
    assert again.status_code == 200, again.text  # a failover re-claims the unplanned one, not the poison
    assert [a["run_id"] for a in again.json()["activity_runs"]] == [runs[1]["id"]]
