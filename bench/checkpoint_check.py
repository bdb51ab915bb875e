"""Checkpoint check cost on Azurite: `streamops checkpoint check` against one recursive listing.

Builds a checkpoint of BATCHES batches on a private Azurite (offsets/N, commits/N, metadata,
sources/0/0 and a state folder of one operator, in Spark 4's file formats, uploaded in parallel
with azure-storage-blob), then times `streamops.checkpoint.checks.check` (the function the CLI
calls) against a bare `fs.find` of the same folder, interleaved in the same run, REPEAT times each
with fresh adlfs instances. Storage requests are counted at the HTTP layer by wrapping azure-core's
`AioHttpTransport.send` (what adlfs' async clients send through; every request, retries included).
Writes bench/results/checkpoint_check.{json,md}.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

BATCHES = 10_000
PARTITIONS = 4  # state store partitions of the one operator
RETAINED = 100  # state versions kept (Spark's minBatchesToRetain default)
SNAPSHOT_EVERY = 10
REPEAT = 5
TOPIC = "insurance.claims"

REQUESTS: Counter[str] = Counter()


def _count_requests() -> None:
    from azure.core.pipeline.transport import AioHttpTransport

    real_send = AioHttpTransport.send

    async def counting_send(self: Any, request: Any, **kwargs: Any) -> Any:
        url = urlparse(request.url)
        kind = "list" if "comp=list" in url.query else "read" if request.method == "GET" else "meta"
        REQUESTS[f"{request.method} {kind}"] += 1
        return await real_send(self, request, **kwargs)

    AioHttpTransport.send = counting_send  # type: ignore[method-assign]


def _files() -> dict[str, bytes]:
    """The checkpoint's files (path -> content) in Spark 4's formats."""
    out: dict[str, bytes] = {"metadata": json.dumps({"id": str(uuid.uuid4())}).encode()}
    out["sources/0/0"] = b"v1\n" + json.dumps({TOPIC: {str(p): 0 for p in range(4)}}).encode()
    conf = {"spark.sql.shuffle.partitions": str(PARTITIONS),
            "spark.sql.streaming.stateStore.providerClass":
            "org.apache.spark.sql.execution.streaming.state.HDFSBackedStateStoreProvider"}  # fmt: skip
    t0 = 1_764_000_000_000
    for n in range(BATCHES):
        meta = {"batchWatermarkMs": t0 + n * 1000 - 60_000, "batchTimestampMs": t0 + n * 1000,
                "conf": conf}  # fmt: skip
        src = {TOPIC: {str(p): (n + 1) * 150 + p for p in range(4)}}
        out[f"offsets/{n}"] = f"v1\n{json.dumps(meta)}\n{json.dumps(src)}".encode()
        out[f"commits/{n}"] = b'v1\n{"nextBatchWatermarkMs":' + str(t0 + n * 1000).encode() + b"}"
    out["state/0/_metadata/metadata"] = (
        b'v1\n{"operatorId":0,"stateStoreNames":["default"]}'  # content is not read by the check
    )
    for p in range(PARTITIONS):
        for v in range(BATCHES - RETAINED + 1, BATCHES + 1):  # version N+1 belongs to batch N
            out[f"state/0/{p}/{v}.delta"] = bytes(64)
            if v % SNAPSHOT_EVERY == 0:
                out[f"state/0/{p}/{v}.snapshot"] = bytes(256)
    return out


def _upload(conn: str, container: str, prefix: str, files: dict[str, bytes]) -> float:
    from azure.storage.blob import BlobServiceClient

    svc = BlobServiceClient.from_connection_string(conn)
    cc = svc.get_container_client(container)
    cc.create_container()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=64) as pool:
        list(pool.map(lambda kv: cc.upload_blob(f"{prefix}/{kv[0]}", kv[1], overwrite=True),
                      files.items()))  # fmt: skip
    return time.perf_counter() - t0


def _fresh() -> None:
    import adlfs

    adlfs.AzureBlobFileSystem.clear_instance_cache()


def _timed(fn: Any) -> tuple[float, Counter[str]]:
    _fresh()
    REQUESTS.clear()
    t0 = time.perf_counter()
    fn()
    took = time.perf_counter() - t0
    return took, Counter(REQUESTS)


def main() -> None:
    from streamops.checkpoint.checks import check
    from streamops.localstack import LocalStack

    _count_requests()
    state = Path(tempfile.mkdtemp(prefix="bench-ck-", dir=ROOT / ".cache"))
    stack = LocalStack(ROOT / ".cache", state_dir=state)
    try:
        stack.up(services=("azurite",))
        az = stack.azurite()
        opts = az.adlfs_options()
        container = f"bench{uuid.uuid4().hex[:8]}"
        files = _files()
        upload_s = _upload(az.connection_string, container, "ck/claims_hourly", files)
        url = f"abfs://{container}/ck/claims_hourly"
        print(f"uploaded {len(files)} files in {upload_s:.1f} s")

        import adlfs

        def run_check() -> None:
            report = check(url, opts)
            assert report.exit_code == 0, report.render()
            assert report.last_committed == BATCHES - 1

        def run_find() -> None:
            fs = adlfs.AzureBlobFileSystem(**opts)
            found = fs.find(f"{container}/ck/claims_hourly", withdirs=False, detail=True)
            assert len(found) == len(files), len(found)

        asyncio.set_event_loop(asyncio.new_event_loop())
        run_check()  # warm-up: imports, connection pool
        run_find()
        checks: list[tuple[float, Counter[str]]] = []
        finds: list[tuple[float, Counter[str]]] = []
        for _ in range(REPEAT):
            checks.append(_timed(run_check))
            finds.append(_timed(run_find))
    finally:
        stack.down()
        shutil.rmtree(state, ignore_errors=True)

    def summary(runs: list[tuple[float, Counter[str]]]) -> dict[str, Any]:
        times = [t for t, _ in runs]
        reqs = runs[-1][1]
        return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
                "times_s": times, "requests": sum(reqs.values()),
                "requests_by_kind": dict(sorted(reqs.items())),
                "requests_same_each_run": len({sum(r.values()) for _, r in runs}) == 1}  # fmt: skip

    c, f = summary(checks), summary(finds)
    result = {
        "batches": BATCHES, "files": len(files), "upload_s": upload_s, "repeat": REPEAT,
        "check": c, "find": f, "time_ratio": c["median_s"] / f["median_s"],
        "request_ratio": c["requests"] / f["requests"],
        "request_counting": "azure-core AioHttpTransport.send wrapped (every HTTP request)",
    }  # fmt: skip
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoint_check.json").write_text(json.dumps(result, indent=2) + "\n")

    def by_kind(s: dict[str, Any]) -> str:
        return ", ".join(f"{k}: {v}" for k, v in s["requests_by_kind"].items())

    md = f"""# Checkpoint check on Azurite (same run)

A synthetic Spark 4 checkpoint of {BATCHES:,} batches ({len(files):,} files: offsets/N,
commits/N, metadata, sources/0/0, one state operator with {PARTITIONS} partitions and the last
{RETAINED} versions), uploaded in {upload_s:.1f} s. Median of {REPEAT} interleaved runs each,
fresh adlfs instances (no listing cache carried over). Requests are counted by wrapping
azure-core's `AioHttpTransport.send`, i.e. every HTTP request adlfs sends (retries included).

| what | median s | min s | max s | storage requests | by kind |
|---|---:|---:|---:|---:|---|
| `check` (rules.check, what the CLI runs) | {c["median_s"]:.3f} | {c["min_s"]:.3f} | {c["max_s"]:.3f} | {c["requests"]} | {by_kind(c)} |
| `fs.find` (one recursive listing) | {f["median_s"]:.3f} | {f["min_s"]:.3f} | {f["max_s"]:.3f} | {f["requests"]} | {by_kind(f)} |

Time ratio check / find: **{result["time_ratio"]:.2f}x**; request ratio:
**{result["request_ratio"]:.2f}x** ({c["requests"] - f["requests"]} requests more than the listing).
"""
    (out / "checkpoint_check.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
