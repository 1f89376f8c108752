"""What a node may be given (``GET /nodes/stores``) and the ``\\\\localhost`` trap warnings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dmg.cloud.client import CloudClient
from dmg.errors import Unauthorized
from tests.cloud.conftest import Cloud, Site, launch, make_site, unique


@pytest.fixture(scope="module")
def own_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """A cloud of this module's own: ``add_store`` warns by the gateways that exist."""
    server = launch(tmp_path_factory.mktemp("cloud"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def two_nodes(own_cloud: Cloud) -> Site:
    with own_cloud.user() as client:
        return make_site(client, nodes=("n1", "n2"))


def pipeline(client: CloudClient, gateway: str, source: str, sink: str) -> dict[str, object]:
    return client.create_pipeline({"name": unique("pl"), "gateway": gateway, "activities": [
        {"name": "copy", "source": {"store": source, "path": "in"}, "sink": {"store": sink, "path": ""}}]})


def test_a_node_lists_the_stores_of_its_gateways_pipelines(cloud: Cloud, user: CloudClient) -> None:
    site, other = make_site(user, nodes=("n1",)), make_site(user, nodes=("n1",))
    mine = [unique("a"), unique("b"), unique("c")]
    theirs = unique("d")
    for name in [*mine, theirs]:
        user.add_store({"name": name, "type": "s3", "location": f"s3://{name}",
                        "options": {"region": "eu-west-1"}})
    pipeline(user, site.gateway, mine[0], mine[1])
    pipeline(user, site.gateway, mine[1], mine[2])
    pipeline(user, other.gateway, theirs, mine[0])

    with cloud.node(site.tokens["n1"]) as node:
        stores = node.node_stores()

    assert [s["name"] for s in stores] == sorted(mine)
    assert stores[0]["type"] == "s3" and stores[0]["options"] == {"region": "eu-west-1"}
    assert set(stores[0]) >= {"name", "type", "location", "options"}


def test_a_gateway_without_pipelines_gives_no_store(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user, nodes=("n1",))
    with cloud.node(site.tokens["n1"]) as node:
        assert node.node_stores() == []


def test_only_nodes_may_list_their_stores(cloud: Cloud) -> None:
    for token in ("", "not-a-node-token"):
        with cloud.node(token) as client, pytest.raises(Unauthorized):
            client.node_stores()


@pytest.mark.parametrize("location,options,warned", [
    ("/data/in", {}, True),
    ("~/exports", {}, True),
    ("file:///srv/share", {}, True),
    ("C:\\data\\in", {}, True),
    ("\\\\localhost\\share", {}, True),
    ("\\\\127.0.0.1\\share", {}, True),
    ("/mnt/share", {"shared": True}, False),
    ("\\\\ServerName\\share", {}, False),
    ("//fileserver/share", {}, False),
])
def test_a_local_path_on_a_multi_node_gateway_is_warned_about(
        own_cloud: Cloud, two_nodes: Site, location: str, options: dict[str, object], warned: bool) -> None:
    site = two_nodes
    with own_cloud.user() as client:
        name, sink = unique("f"), unique("dst")
        added = client.add_store({"name": name, "type": "file", "location": location, "options": options})
        client.add_store({"name": sink, "type": "s3", "location": "s3://b"})
        created = pipeline(client, site.gateway, name, sink)
        run = client.run_pipeline(str(created["name"]))

    for answer in (added, created, run):
        warnings = answer["warnings"]
        assert isinstance(warnings, list)
        if not warned:
            assert warnings == []
            continue
        assert len(warnings) == 1, warnings
        text = warnings[0]
        assert f"store {name!r}: local path {location!r} may not be visible to every node" in text
        assert "\\\\ServerName\\share rather than \\\\localhost" in text and '"shared": true' in text
    if warned:
        assert f"of gateway {site.gateway!r} (2 nodes)" in created["warnings"][0]


def test_a_single_node_gateway_gets_no_warning(cloud: Cloud, user: CloudClient) -> None:
    site = make_site(user, nodes=("n1",))
    source, sink = unique("src"), unique("dst")
    user.add_store({"name": source, "type": "file", "location": "/data/in"})
    user.add_store({"name": sink, "type": "file", "location": "/data/out"})
    created = pipeline(user, site.gateway, source, sink)
    run = user.run_pipeline(str(created["name"]))
    assert created["warnings"] == run["warnings"] == []
