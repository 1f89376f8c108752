"""Benchmark: file → Azure Blob (Azurite) through the dmg gateway vs ``rclone copy``.

    .venv/bin/python bench/copy_azure.py [--large-count 4 --large-mib 256] [--small-count 10000
        --small-kib 8] [--nodes 2] [--repeat 1] [--tools rclone,dmg] [--json]

The same two datasets as ``copy_s3.py``, uploaded by each tool, in the same run, to its
own container on one Azurite (``tests/emulators``: ``npm ci --prefix tests/emulators
--no-audit --no-fund``; in-memory, a child process on a free 127.0.0.1 port, stopped by
pid at the end):

* ``rclone``: ``rclone copy`` to an ``azureblob`` remote (an account SAS URL of
  Azurite's development account; defaults: 4 transfers, 4 MiB blocks, 16 blocks of a file
  in flight);
* ``dmg``: an embedded site, one pipeline with one activity ``file`` store → ``azureblob``
  store (option ``account_url``), the connection string in the site's credentials file.

``azcopy`` (Microsoft's own tool) is not packaged on any registry this machine reaches,
so rclone is the only peer. Azurite's development account is public knowledge, not a
secret. Outputs are checked (names and total size for every tool; dmg's blobs byte for
byte: the Content-MD5 dmg sets against the source's MD5), then deleted so Azurite's
memory does not grow across rows.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datetime import UTC

from common import (
    KIB,
    MIB,
    ROOT,
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

TOOLS = ("rclone", "dmg")
GOALS = [("rclone", "large", 1.0), ("rclone", "small", 1.0)]


def write_rclone_config(path: Path, account_url: str) -> None:
    """An ``azureblob`` remote by account SAS URL: rclone 1.60 builds ``https://<account>.<endpoint>``
    from ``account`` + ``endpoint``, which cannot name Azurite's ``http://host:port/<account>``."""
    from datetime import datetime, timedelta

    from azure.storage.blob import AccountSasPermissions, ResourceTypes, generate_account_sas

    from tests.servers.azurite import ACCOUNT, ACCOUNT_KEY

    sas = generate_account_sas(ACCOUNT, ACCOUNT_KEY, ResourceTypes(service=True, container=True, object=True),
                               AccountSasPermissions(read=True, write=True, delete=True, list=True, add=True,
                                                     create=True),
                               expiry=datetime.now(UTC) + timedelta(hours=12))
    path.write_text(f"[azurite]\ntype = azureblob\nsas_url = {account_url}?{sas}\n")
    path.chmod(0o600)


def write_site_credentials(site: Any, stores: list[str], connection_string: str) -> Path:
    path = Path(getattr(site.settings, "credentials_path", site.data_dir / "credentials.toml"))
    text = "".join(f'[stores."{name}"]\nconnection_string = "{connection_string}"\n\n' for name in stores)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(text)
    return path


def source_files(dataset: Dataset) -> dict[str, Path]:
    return {p.relative_to(dataset.root).as_posix(): p for p in dataset.root.rglob("*") if p.is_file()}


def md5_of(path: Path) -> bytes:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(8 * MIB):
            digest.update(chunk)
    return digest.digest()


def verify_container(service: Any, dataset: Dataset, files: dict[str, Path], container: str, prefix: str, *,
                     byte_compare: bool) -> str:
    """The blobs under ``prefix`` are the dataset's paths with its sizes; optionally every
    blob's Content-MD5 equals its source's MD5."""
    client = service.get_container_client(container)
    blobs = {b.name[len(prefix) + 1:]: b for b in client.list_blobs(name_starts_with=prefix + "/")}
    if set(blobs) != set(files):
        missing, extra = sorted(set(files) - set(blobs)), sorted(set(blobs) - set(files))
        raise AssertionError(f"{container}/{prefix}: {len(missing)} missing {missing[:3]}, "
                             f"{len(extra)} extra {extra[:3]}")
    size = sum(int(b.size) for b in blobs.values())
    if size != dataset.bytes:
        raise AssertionError(f"{container}/{prefix}: {size} bytes, expected {dataset.bytes}")
    if not byte_compare:
        return "names+bytes"
    different, read_back = [], 0
    for rel, blob in sorted(blobs.items()):
        stored = bytes(blob.content_settings.content_md5 or b"")
        if not stored:  # a blob committed from part shards has no Content-MD5: read it back
            digest = hashlib.md5(usedforsecurity=False)
            for chunk in client.download_blob(blob.name).chunks():
                digest.update(chunk)
            stored, read_back = digest.digest(), read_back + 1
        if stored != md5_of(files[rel]):
            different.append(rel)
    if different:
        raise AssertionError(f"{container}/{prefix}: {len(different)} blobs differ {different[:3]}")
    return "content-md5" if not read_back else f"content-md5, {read_back} read back"


def delete_prefix(service: Any, container: str, prefix: str) -> None:
    client = service.get_container_client(container)
    names = [b.name for b in client.list_blobs(name_starts_with=prefix + "/")]
    for i in range(0, len(names), 256):
        client.delete_blobs(*names[i:i + 256])


def main() -> int:
    args, tools = copy_arguments(__doc__.split("\n\n")[0], TOOLS)
    sys.path.insert(0, str(ROOT))
    from azure.storage.blob import BlobServiceClient

    from tests.servers.azurite import ACCOUNT, ACCOUNT_KEY, AZURITE_BLOB, AzuriteProcess

    if not AZURITE_BLOB.exists():
        print(f"error: Azurite is not installed ({AZURITE_BLOB}); "
              "run: npm ci --prefix tests/emulators --no-audit --no-fund", file=sys.stderr)
        return 2
    rclone = tool_path("rclone")
    large_bytes = args.large_count * args.large_mib * MIB
    small_bytes = args.small_count * args.small_kib * KIB
    tmp_parent = args.tmp or Path(tempfile.gettempdir())
    check_free_space(tmp_parent, 2 * (large_bytes + small_bytes))
    logging.getLogger("azure").setLevel(logging.WARNING)

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="dmg-bench-azure-", dir=tmp_parent) as tmp:
        work = Path(tmp)
        azurite = AzuriteProcess(work).start()
        try:
            account_url = f"http://127.0.0.1:{azurite.port}/{ACCOUNT}"
            connection = (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                          f"BlobEndpoint={account_url};")
            service = BlobServiceClient.from_connection_string(connection)
            for tool in tools:
                service.create_container(f"bench-{tool}")
            rclone_conf = work / "rclone.conf"
            write_rclone_config(rclone_conf, account_url)

            print(f"generating data in {work} ...", file=sys.stderr)
            datasets = [make_large(work / "src" / "large", count=args.large_count, size=args.large_mib * MIB),
                        make_small(work / "src" / "small", count=args.small_count, size=args.small_kib * KIB)]
            files = {d.name: source_files(d) for d in datasets}
            warm_cache(*(d.root for d in datasets))
            settle()
            meta: dict[str, Any] = {
                "machine": machine(), "nodes": args.nodes, "repeat": args.repeat,
                "azure": f"Azurite 3.35.0 {account_url}",
                "versions": {"rclone": tool_version([rclone or "rclone", "version"])},
                "peers not available": "azcopy (on no registry this machine reaches)",
                "cache": "warm (source read once before the first tool)"}

            def upload_with(tool: str, dataset: Dataset, copier: DmgCopier | None,
                            i: int) -> tuple[float, str]:
                container, prefix = f"bench-{tool}", f"{dataset.name}-{i}"
                settle()
                try:
                    if tool == "rclone":
                        seconds = run_timed([str(rclone), "copy", "--config", str(rclone_conf),
                                             str(dataset.root), f"azurite:{container}/{prefix}"])
                    else:
                        assert copier is not None
                        source = copier.store(f"src-{dataset.name}", "file", str(dataset.root))
                        sink = copier.store(f"az-{dataset.name}-{i}", "azureblob",
                                            f"azureblob://{container}/{prefix}", {"account_url": account_url})
                        seconds, summary = copier.copy(f"{dataset.name}-{i}", source, sink)
                        rows[-1].extra.setdefault("runs", []).append(summary)
                    return seconds, verify_container(service, dataset, files[dataset.name], container, prefix,
                                                     byte_compare=tool == "dmg")
                finally:
                    delete_prefix(service, container, prefix)

            def run_all(copier: DmgCopier | None) -> None:
                measure_each(rows, datasets, tools,
                             lambda tool, dataset, i: upload_with(tool, dataset, copier, i),
                             repeat=args.repeat)

            if "dmg" in tools:
                with dmg_site(work / "dmg-data", nodes=args.nodes, concurrency=args.concurrency,
                              tls=args.tls) as site:
                    meta["node_slots"] = node_limits(site)
                    write_site_credentials(site, [f"az-{d.name}-{i}" for d in datasets
                                                  for i in range(args.repeat)], connection)
                    run_all(DmgCopier(site))
            else:
                run_all(None)
        finally:
            azurite.stop()

    title = (f"file -> Azure Blob (Azurite on 127.0.0.1): large = {args.large_count} x {args.large_mib} MiB, "
             f"small = {args.small_count} x {args.small_kib} KiB")
    emit(rows, title=title, meta=meta, goals=[g for g in GOALS if g[0] in tools and "dmg" in tools],
         as_json=args.json)
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
