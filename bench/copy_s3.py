"""Benchmark: file → S3 (a moto server) through the dmg gateway vs ``aws s3 cp`` and ``rclone copy``.

    .venv/bin/python bench/copy_s3.py [--large-count 4 --large-mib 256] [--small-count 10000
        --small-kib 8] [--nodes 2] [--repeat 1] [--tools aws,rclone,dmg] [--json]
        [--store-options JSON] [--activity-options JSON]

The same two datasets as ``copy_local.py`` (``large``: 4 x 256 MiB, ``small``:
10,000 x 8 KiB), uploaded by each tool, in the same run, to its own bucket on one
moto ``ThreadedMotoServer`` on 127.0.0.1 (threads in this process):

* ``aws``: ``aws s3 cp --recursive`` (awscli from PyPI, the ``bench`` extra;
  defaults: 10 requests in flight, 8 MiB parts);
* ``rclone``: ``rclone copy`` to an ``s3`` remote, provider ``Other``, endpoint the
  moto URL, credentials from the environment only (``env_auth``; a config file in
  the temp dir; defaults: 4 transfers, multipart above 200 MiB in 5 MiB parts);
* ``dmg``: an embedded site, one pipeline with one activity ``file`` store → ``s3``
  store (option ``endpoint_url``); nodes get the keys from the site's credentials
  file (``dmg.credentials``, written 0600 into the data dir), or, on a dmg without
  one, through boto3's default chain from the environment they inherit.

Every tool gets the same credentials and an empty AWS config (``AWS_CONFIG_FILE``,
``AWS_SHARED_CREDENTIALS_FILE`` point into the temp dir). Outputs are checked (the
key set equals the source's relative paths, and the bytes add up; dmg's objects
byte for byte: MD5 against a plain-MD5 ETag, else downloaded and compared), then
deleted so moto's memory does not grow across rows.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    KIB,
    MIB,
    Dataset,
    DmgCopier,
    Row,
    check_free_space,
    copy_arguments,
    dmg_site,
    emit,
    machine,
    make_large,
    make_small,
    measure_each,
    node_limits,
    run_timed,
    settle,
    tool_path,
    tool_version,
    warm_cache,
)

TOOLS = ("aws", "rclone", "dmg")
GOALS = [("rclone", "large", 1.0), ("rclone", "small", 1.0)]
ACCESS_KEY = "bench-access-key"
SECRET_KEY = "bench-secret-key"
REGION = "us-east-1"


class MotoServer:
    """moto's ThreadedMotoServer on a free 127.0.0.1 port (as tests/servers/s3.py runs it)."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        from dmg.procs import free_port

        self.port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> MotoServer:
        from dmg.procs import wait_for_port

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server.start()
        wait_for_port("127.0.0.1", self.port, timeout=30, what="moto S3 server")
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()


def s3_client(url: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY,
                        config=Config(request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required",
                                      max_pool_connections=16))


def set_aws_environment(work: Path) -> None:
    """The credentials every tool (and the dmg nodes, which inherit it) uses; no AWS config."""
    os.environ.update({
        "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(work / "aws-config-none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(work / "aws-credentials-none"),
        # moto and other S3-compatible servers; dmg's connector sets the same in its Config.
        "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
        "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
    })
    # AWS_CA_BUNDLE (set on some machines) makes rclone's SDK refuse its own HTTP transport;
    # the endpoint is plain http on loopback, so no tool needs it.
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CA_BUNDLE"):
        os.environ.pop(name, None)


def write_site_credentials(site: Any, stores: list[str]) -> Path | None:
    """The site's credentials file (0600) with the keys for ``stores``, when this dmg has one
    (``dmg.credentials``); otherwise the nodes use boto3's chain (the environment)."""
    try:
        import dmg.credentials  # noqa: F401
    except ImportError:
        return None
    path = Path(getattr(site.settings, "credentials_path", site.data_dir / "credentials.toml"))
    text = "".join(f'[stores."{name}"]\naccess_key_id = "{ACCESS_KEY}"\n'
                   f'secret_access_key = "{SECRET_KEY}"\n\n' for name in stores)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


def write_rclone_config(path: Path, endpoint: str) -> None:
    path.write_text("[moto]\ntype = s3\nprovider = Other\nenv_auth = true\n"
                    f"endpoint = {endpoint}\nregion = {REGION}\nforce_path_style = true\n"
                    "no_check_bucket = true\n")


def list_objects(client: Any, bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for item in page.get("Contents", []):
            found[item["Key"][len(prefix) + 1:]] = item
    return found


def delete_prefix(client: Any, bucket: str, prefix: str) -> None:
    keys = [prefix + "/" + k for k in list_objects(client, bucket, prefix)]
    for i in range(0, len(keys), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                     "Quiet": True})


def source_files(dataset: Dataset) -> dict[str, Path]:
    return {p.relative_to(dataset.root).as_posix(): p for p in dataset.root.rglob("*") if p.is_file()}


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(8 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


def same_bytes(client: Any, bucket: str, key: str, path: Path) -> bool:
    body = client.get_object(Bucket=bucket, Key=key)["Body"]
    with open(path, "rb") as fh:
        for chunk in body.iter_chunks(MIB):
            if fh.read(len(chunk)) != chunk:
                return False
        return fh.read(1) == b""


def verify_bucket(client: Any, dataset: Dataset, files: dict[str, Path], bucket: str, prefix: str, *,
                  byte_compare: bool) -> str:
    """The keys under ``prefix`` are the dataset's paths with its sizes; optionally every byte."""
    objects = list_objects(client, bucket, prefix)
    if set(objects) != set(files):
        missing, extra = sorted(set(files) - set(objects)), sorted(set(objects) - set(files))
        raise AssertionError(f"s3://{bucket}/{prefix}: {len(missing)} missing {missing[:3]}, "
                             f"{len(extra)} extra {extra[:3]}")
    size = sum(int(o["Size"]) for o in objects.values())
    if size != dataset.bytes:
        raise AssertionError(f"s3://{bucket}/{prefix}: {size} bytes, expected {dataset.bytes}")
    if not byte_compare:
        return "keys+bytes"
    from concurrent.futures import ThreadPoolExecutor

    def check(rel: str) -> str | None:
        etag = str(objects[rel].get("ETag", "")).strip('"')
        if len(etag) == 32 and "-" not in etag:
            return None if etag == md5_of(files[rel]) else rel
        return None if same_bytes(client, bucket, f"{prefix}/{rel}", files[rel]) else rel

    with ThreadPoolExecutor(8) as pool:
        different = [rel for rel in pool.map(check, sorted(files)) if rel]
    if different:
        raise AssertionError(f"s3://{bucket}/{prefix}: {len(different)} objects differ {different[:3]}")
    return "byte-compare"


def add_dmg_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store-options", type=json.loads, default={},
                        help='JSON of the dmg s3 store\'s options, e.g. \'{"max_concurrency": 2}\'')
    parser.add_argument("--activity-options", type=json.loads, default={},
                        help='JSON of the dmg activity\'s options, e.g. \'{"split_above": 0}\'')


def main() -> int:
    args, tools = copy_arguments(__doc__.split("\n\n")[0], TOOLS, extra=add_dmg_options)
    aws, rclone = tool_path("aws"), tool_path("rclone")

    large_bytes = args.large_count * args.large_mib * MIB
    small_bytes = args.small_count * args.small_kib * KIB
    tmp_parent = args.tmp or Path(tempfile.gettempdir())
    check_free_space(tmp_parent, 3 * (large_bytes + small_bytes))  # source, moto spill, slack

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="dmg-bench-s3-", dir=tmp_parent) as tmp, MotoServer() as moto:
        work = Path(tmp)
        set_aws_environment(work)
        client = s3_client(moto.url)
        for tool in tools:
            client.create_bucket(Bucket=f"bench-{tool}")
        rclone_conf = work / "rclone.conf"
        write_rclone_config(rclone_conf, moto.url)

        print(f"generating data in {work} ...", file=sys.stderr)
        datasets = [make_large(work / "src" / "large", count=args.large_count, size=args.large_mib * MIB),
                    make_small(work / "src" / "small", count=args.small_count, size=args.small_kib * KIB)]
        files = {d.name: source_files(d) for d in datasets}
        warm_cache(*(d.root for d in datasets))
        settle()
        meta = {"machine": machine(), "nodes": args.nodes, "repeat": args.repeat, "s3": f"moto {moto.url}",
                "versions": {"rclone": tool_version([rclone or "rclone", "version"]),
                             "aws": tool_version([aws or "aws", "--version"])},
                "cache": "warm (source read once before the first tool)"}

        def upload_with(tool: str, dataset: Dataset, copier: DmgCopier | None, i: int) -> tuple[float, str]:
            bucket, prefix = f"bench-{tool}", f"{dataset.name}-{i}"
            settle()
            try:
                if tool == "aws":
                    seconds = run_timed([str(aws), "--endpoint-url", moto.url, "s3", "cp", "--recursive",
                                         "--only-show-errors", "--no-progress", str(dataset.root),
                                         f"s3://{bucket}/{prefix}"])
                elif tool == "rclone":
                    seconds = run_timed([str(rclone), "copy", "--config", str(rclone_conf),
                                         str(dataset.root), f"moto:{bucket}/{prefix}"])
                else:
                    assert copier is not None
                    source = copier.store(f"src-{dataset.name}", "file", str(dataset.root))
                    sink = copier.store(f"s3-{dataset.name}-{i}", "s3", f"s3://{bucket}/{prefix}",
                                        {"endpoint_url": moto.url, "region": REGION, **args.store_options})
                    seconds, summary = copier.copy(f"{dataset.name}-{i}", source, sink,
                                                   options=args.activity_options)
                    rows[-1].extra.setdefault("runs", []).append(summary)
                return seconds, verify_bucket(client, dataset, files[dataset.name], bucket, prefix,
                                              byte_compare=tool == "dmg")
            finally:
                delete_prefix(client, bucket, prefix)

        def run_all(copier: DmgCopier | None) -> None:
            measure_each(rows, datasets, tools,
                         lambda tool, dataset, i: upload_with(tool, dataset, copier, i),
                         repeat=args.repeat)

        if "dmg" in tools:
            with dmg_site(work / "dmg-data", nodes=args.nodes, concurrency=args.concurrency,
                          tls=args.tls) as site:
                meta["node_slots"] = node_limits(site)
                creds = write_site_credentials(site, [f"s3-{d.name}-{i}" for d in datasets
                                                      for i in range(args.repeat)])
                meta["dmg_credentials"] = f"site file {creds}" if creds else "environment (boto3 chain)"
                run_all(DmgCopier(site))
        else:
            run_all(None)

    title = (f"file -> S3 (moto on 127.0.0.1): large = {args.large_count} x {args.large_mib} MiB, "
             f"small = {args.small_count} x {args.small_kib} KiB")
    emit(rows, title=title, meta=meta, goals=[g for g in GOALS if g[0] in tools and "dmg" in tools],
         as_json=args.json)
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
