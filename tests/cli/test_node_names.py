"""A node name unique across the cloud's gateways needs no --gateway.

Given a cloud holding two gateways (and others from other tests), when a command taking a
NODE name (`dmg scale`, `dmg node drain | undrain | remove`) runs without --gateway on a
machine where that node is not registered, then it finds the node's gateway by itself; a
name in two gateways is one line naming both, an unknown name one line too.
"""

from __future__ import annotations

import redis as redis_lib

from dmg.cloud.client import CloudClient
from dmg.cloud.server import CloudProcess
from dmg.site.state import SiteState
from dmg.version import __version__
from tests.cli.conftest import DmgRunner, assert_one_line_error
from tests.cli.test_errors import unique


def two_gateways(cloud: CloudProcess) -> tuple[str, str, dict[str, str]]:
    """Gateways A and B; node names: "a" in A only, "b" in B only, "both" in A and B."""
    first, second = unique("gw-a"), unique("gw-b")
    names = {"a": unique("node-a"), "b": unique("node-b"), "both": unique("node-both")}
    with CloudClient(cloud.url, token=cloud.api_token) as user:
        for gateway, nodes in ((first, ("a", "both")), (second, ("b", "both"))):
            user.create_gateway(gateway)
            key = str(user.gateway_keys(gateway)["key1"])
            for node in nodes:
                user.register_node(key=key, name=names[node], version=__version__)
    return first, second, names


def test_a_node_name_finds_its_gateway(dmg: DmgRunner, cli_cloud: CloudProcess, redis_url: str,
                                       redis_client: redis_lib.Redis) -> None:
    first, second, names = two_gateways(cli_cloud)
    dmg.env["DMG_REDIS_URL"] = redis_url

    drained = dmg("node", "drain", names["b"], "--no-wait")
    assert drained.returncode == 0, drained.stderr
    assert SiteState(redis_client, second).drained() == {names["b"]: "drain"}
    assert SiteState(redis_client, first).drained() == {}
    undrained = dmg("node", "undrain", names["b"])
    assert undrained.returncode == 0 and "takes work again" in undrained.stdout, undrained.stderr

    scaled = dmg("scale", names["a"], "--concurrency", "8", "--timeout", "0.5", "--json")
    assert scaled.returncode == 1  # no worker runs it: "no answer", but sent to the right worker
    assert '"no answer"' in scaled.stdout and names["a"] in scaled.stdout

    removed = dmg("node", "remove", names["a"])
    assert removed.returncode == 0, removed.stderr
    assert f"node {names['a']} removed from gateway {first}" in removed.stdout
    assert [n["name"] for n in dmg.json("node", "list", "--gateway", first)] == [names["both"]]


def test_a_name_in_two_gateways_or_in_none_is_one_line(dmg: DmgRunner, cli_cloud: CloudProcess,
                                                       redis_url: str) -> None:
    first, second, names = two_gateways(cli_cloud)
    dmg.env["DMG_REDIS_URL"] = redis_url
    for command in (("scale", names["both"], "--concurrency", "8"), ("node", "drain", names["both"]),
                    ("node", "undrain", names["both"]), ("node", "remove", names["both"])):
        line = assert_one_line_error(dmg(*command), contains=f"node {names['both']!r} is in several gateways")
        assert f"{first}, {second}" in line and "--gateway" in line, command
    for command in (("scale", "ghost-node", "--concurrency", "8"), ("node", "undrain", "ghost-node")):
        assert_one_line_error(dmg(*command), contains="no gateway has a node 'ghost-node'")
    both = dmg("node", "remove", names["both"], "--gateway", second)
    assert both.returncode == 0, both.stderr
    assert [n["name"] for n in dmg.json("node", "list", "--gateway", first)] == [names["a"], names["both"]]
