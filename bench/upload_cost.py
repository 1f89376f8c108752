"""Benchmark: a node's own CPU to upload to S3 (moto) and Azure Blob (Azurite), per GiB
and per small file, without the gateway around it.

    .venv/bin/python bench/upload_cost.py [--large-mib 256] [--small-count 1000] [--repeat 3]
        [--stores s3,azure]

The connector's writer (what a worker's copy calls: ``open_write``, 1 MiB ``write`` s,
``commit``) uploads one large object and ``--small-count`` objects of 8 KiB, in this
process; the row ``file ... (engine)`` copies the same large object from a local file
through the copy engine (``copy_entries``, what a shard runs: a file up to the store's
``upload_cutoff`` goes in one request streamed from the file, checksums included); the
row ``split ...`` (S3) does what the part shards of a split object do, part after part (the
upload step :mod:`workers.run.part` picks, then the one commit);
the server runs in a child process (moto's server module; Azurite from
``tests/emulators``), so this process's CPU (user + system, every thread) is the node's
part alone, and the server's CPU is printed beside it. CPU figures hardly depend on the
machine's load; seconds do. To compare with another revision, run the same command with
``PYTHONPATH`` pointing at that revision's checkout (the writers' API is unchanged).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # after PYTHONPATH: another revision can be measured

MiB = 1024 * 1024


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_of(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def start_moto(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    from dmg.procs import free_port, wait_for_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port("127.0.0.1", port, timeout=60, proc=proc, what="moto")
    return proc, f"http://127.0.0.1:{port}"


def s3_store(endpoint: str, bucket: str, extra: dict[str, Any]) -> Any:
    import boto3
    from botocore.config import Config

    from dmg.connectors.base import StoreSpec
    from dmg.connectors.s3 import S3Connector

    keys = {"access_key_id": "bench", "secret_access_key": "bench-secret"}
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                 aws_secret_access_key="bench-secret",
                 config=Config(request_checksum_calculation="when_required")).create_bucket(Bucket=bucket)
    return S3Connector(StoreSpec("s3", "s3", f"s3://{bucket}/cost", {"endpoint_url": endpoint,
                                                                    "region": "us-east-1", **extra}),
                        credential=keys)


def azure_store(workdir: Path, extra: dict[str, Any]) -> tuple[Any, Any]:
    from azure.storage.blob import BlobServiceClient

    from dmg.connectors.azureblob import AzureBlobConnector
    from dmg.connectors.base import StoreSpec
    from tests.servers.azurite import AZURITE_BLOB, AzuriteProcess, AzuriteServer

    if not AZURITE_BLOB.exists():
        raise SystemExit("Azurite is missing: npm ci --prefix tests/emulators --no-audit --no-fund")
    process = AzuriteProcess(workdir).start()
    server = AzuriteServer(process.port)
    BlobServiceClient.from_connection_string(server.connection_string).create_container("cost")
    store = AzureBlobConnector(StoreSpec("az", "azureblob", "azureblob://cost/cost",
                                         {"account_url": server.account_url, **extra}),
                               credential=server.credential)
    return store, process


def upload(store: Any, path: str, data: bytes, *, chunk: int = MiB) -> None:
    writer = store.open_write(path, staging_id="cost:1")
    for start in range(0, len(data), chunk):
        writer.write(data[start:start + chunk])
    writer.commit()


_copies = iter(range(1_000_000))


def copy_file(store: Any, source_dir: Path) -> None:
    from dmg.connectors.base import StoreSpec
    from dmg.connectors.file import FileConnector
    from dmg.transfer import CopyOptions, copy_entries

    source = FileConnector(StoreSpec("src", "file", str(source_dir)))
    result = copy_entries(source, store, list(source.list()), source_prefix="",
                          sink_prefix=f"engine{next(_copies)}", staging_id="cost.1",
                          options=CopyOptions.from_json({}))
    failed = [f.error for f in result.files if f.status != "copied"]
    if failed:
        raise SystemExit(f"the engine's copy failed: {failed}")


def split_parts(store: Any, source_dir: Path, *, part_mib: int) -> None:
    """What the part shards of a split object do on their nodes, one after the other here:
    each part's upload step as :func:`workers.run.part.run_part` picks it (from the file, or
    a ranged read streamed, by revision), then the one commit."""
    from dmg.connectors.base import StoreSpec
    from dmg.connectors.file import FileConnector
    from dmg.shards import PartSpec
    from dmg.transfer import Throttle
    from dmg.transfer.split import part_ranges
    from workers.run import part as runner

    source = FileConnector(StoreSpec("src", "file", str(source_dir)))
    [entry] = list(source.list())
    target = f"split{next(_copies)}/{entry.path}"
    handle = store.begin_distributed(target, size=entry.size)
    throttle = Throttle.fixed(0)
    results = []
    for number, offset, length in part_ranges(entry.size, part_mib * MiB):
        part = PartSpec("obj", entry, target, number, 0, offset, length, handle)
        send = getattr(runner, "_send_part_from_file", None)
        if send is not None:
            results.append(send(source, store, part, throttle, abandoned=lambda: False))
        else:
            results.append(runner._write_part(source, store, part, throttle, abandoned=lambda: False))
    store.commit_distributed(target, handle, results, size=entry.size)


def timed(run: Callable[[], None], server_pid: int) -> tuple[float, float, float]:
    """(seconds, this process's CPU s, the server's CPU s) of ``run()``."""
    c0, s0, t0 = cpu_self(), cpu_of(server_pid), time.perf_counter()
    run()
    return time.perf_counter() - t0, cpu_self() - c0, cpu_of(server_pid) - s0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--large-mib", type=int, default=256)
    parser.add_argument("--small-count", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stores", default="s3,azure")
    parser.add_argument("--split-part-mib", type=int, default=64,
                        help="the parts of the 'split' row (what split_part_size makes: 64 MiB)")
    parser.add_argument("--upload-cutoff", type=int, default=None,
                        help="the stores' upload_cutoff in MiB (0: parts/blocks only; default: theirs)")
    args = parser.parse_args()
    extra = {} if args.upload_cutoff is None else {"upload_cutoff": args.upload_cutoff * MiB}
    large = os.urandom(args.large_mib * MiB)
    small = [os.urandom(8 * 1024) for _ in range(args.small_count)]
    import dmg.connectors.s3 as s3_module

    print(f"code: {Path(s3_module.__file__).resolve().parent.parent.parent}; load before: "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'store':<6} {'dataset':<26} {'seconds':>8} {'node CPU s':>11} {'server CPU s':>13}  per unit")
    with tempfile.TemporaryDirectory(prefix="dmg-upload-cost-") as tmp:
        work = Path(tmp)
        (work / "src").mkdir()
        (work / "src" / "large.bin").write_bytes(large)
        for kind in [s for s in args.stores.split(",") if s]:
            if kind == "s3":
                proc, endpoint = start_moto(work)
                store, pid, stop = s3_store(endpoint, "cost", extra), proc.pid, proc.terminate
            else:
                store, azurite = azure_store(work, extra)
                assert azurite.proc is not None
                pid, stop = azurite.proc.pid, azurite.stop
            try:
                def upload_large(store: Any = store) -> None:
                    upload(store, "large.bin", large)

                def upload_small(store: Any = store) -> None:
                    for i, data in enumerate(small):
                        upload(store, f"s/{i:06d}.bin", data)

                def engine_large(store: Any = store) -> None:
                    copy_file(store, work / "src")

                def split_large(store: Any = store) -> None:
                    split_parts(store, work / "src", part_mib=args.split_part_mib)

                datasets = [(f"1 x {args.large_mib} MiB", upload_large, args.large_mib / 1024, "GiB"),
                            (f"split {args.large_mib} MiB ({args.split_part_mib} MiB parts)", split_large,
                             args.large_mib / 1024 if kind == "s3" else 0, "GiB"),
                            (f"file {args.large_mib} MiB (engine)", engine_large, args.large_mib / 1024,
                             "GiB"),
                            (f"{args.small_count} x 8 KiB", upload_small, args.small_count / 1000,
                             "1000 files")]
                for name, run, units, unit in [d for d in datasets if d[2] > 0]:
                    samples = [timed(run, pid) for _ in range(args.repeat)]
                    secs, node, server = (statistics.median(s[k] for s in samples) for k in range(3))
                    print(f"{kind:<6} {name:<26} {secs:8.2f} {node:11.2f} {server:13.2f}  "
                          f"node {node / units:.2f} CPU s / {unit}, server {server / units:.2f}")
            finally:
                stop()
    print(f"load after: {os.getloadavg()[0]:.1f}; medians of {args.repeat}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
