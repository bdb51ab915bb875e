"""What the data-path benchmarks share: a bench-own local broker, the shipped bundle pointed at a
claims topic on it, the claims events produced once, and the peak RSS of this process tree.

Imported by bench/pipeline.py and bench/source_throughput.py (run as scripts, so this folder is
on sys.path). Everything lives under <project>/.cache/bench/<name>, removed at the end.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
JOB = "claims_hourly"
SOURCE = "claims"
START = "2026-11-24T00:00:00Z"
# Events are generated and produced in slices, so the generator never holds a million events
# (its memory would count in every variant's peak RSS).
SLICE = 50_000


@dataclasses.dataclass(frozen=True)
class Workspace:
    """A bench run's folder, its broker's state dir and the broker's pid (kept out of the RSS)."""

    root: Path
    stack_dir: Path
    broker_pid: int


@contextmanager
def workspace(name: str) -> Iterator[Workspace]:
    """A fresh folder under .cache/bench and a broker of its own; both gone at the end.

    Sets $STREAMOPS_LOCAL_STACK_DIR (so a bundle loaded afterwards means this broker by
    'embedded') and $STREAMOPS_JVM_DIR (bundles are re-rooted into the folder, see claims_bundle).
    """
    from streamops.bundle.resolved import ENV_JVM_DIR, ENV_LOCAL_STACK
    from streamops.localstack import LocalStack

    root = CACHE / "bench" / f"{name}-{os.getpid()}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    stack = LocalStack(CACHE, state_dir=root / "stack")
    saved = {k: os.environ.get(k) for k in (ENV_LOCAL_STACK, ENV_JVM_DIR)}
    try:
        (broker,) = stack.up(services=("broker",))
        os.environ[ENV_LOCAL_STACK] = str(stack.state_dir)
        os.environ[ENV_JVM_DIR] = str(CACHE / "jvm")
        yield Workspace(root, stack.state_dir, broker.pid)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        stack.down()
        shutil.rmtree(root, ignore_errors=True)


def claims_bundle(root: Path, topic: str, partitions: int, max_offsets: int | None) -> Any:
    """bundle.yml's local target (as tests/integration/helpers.local_bundle builds it) with tables,
    checkpoints, metrics and pages under `root`, and the claims source on `topic`."""
    from streamops.bundle import load
    from streamops.localstack import local_broker

    bundle = load(ROOT / "bundle.yml", "local", local_broker=local_broker)
    spec = bundle.spec
    target = spec.targets["local"].model_copy(update={"storage_root": str(root / "data")})
    src = spec.sources[SOURCE].model_copy(update={"topic": topic, "partitions": partitions})
    job = spec.jobs[JOB].model_copy(update={"max_offsets_per_trigger": max_offsets})
    spec = spec.model_copy(update={
        "targets": {**spec.targets, "local": target}, "sources": {**spec.sources, SOURCE: src},
        "jobs": {**spec.jobs, JOB: job}})  # fmt: skip
    # cache_dir is <bundle dir>/.cache: re-rooting keeps the job's metrics and pages in `root`.
    root.mkdir(parents=True, exist_ok=True)
    (root / "bundle.yml").write_text("")
    return dataclasses.replace(bundle, spec=spec, path=root / "bundle.yml")


def produce_claims(bundle: Any, events: int, malformed_pct: float = 0.0) -> int:
    """Produce `events` claims (streamops.demo.sample's shape, `malformed_pct` % malformed) in
    event-time order at the source's events_per_second; return how many are malformed."""
    from streamops.demo.sample import ensure_topic, generate, produce, utc

    job = bundle.job(JOB)
    src = bundle.source(job)
    conf = bundle.runtime.kafka_for(SOURCE).librdkafka()
    ensure_topic(conf, src.topic, src.partitions)
    per_event = timedelta(seconds=1 / src.events_per_second)
    start, bad = utc(START), 0
    for first in range(0, events, SLICE):
        # A slice is a multiple of the partition count, so the round-robin carries on evenly.
        n = min(SLICE, events - first)
        m = round(n * malformed_pct / 100)
        sample = generate(job, partitions=src.partitions, start=start + per_event * first,
                          span=per_event * n, n=n, malformed=m, seed=first, first_index=first)  # fmt: skip
        produce(conf, src.topic, sample)
        bad += m
    return bad


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # ppid is the 2nd field after the parenthesised command name (which may hold spaces).
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakRss:
    """Samples VmRSS of this process and its descendants (the Spark JVM), except `exclude`
    (the broker), in a background thread; `mark()` starts a new peak, `peak_mb()` reads it.

    The process tree is re-read every `tree_every` samples only: walking /proc costs CPU that
    the measured variants share on a 2-core machine.
    """

    def __init__(self, exclude: int, interval_s: float = 0.1, tree_every: int = 20):
        self.exclude = exclude
        self.interval_s = interval_s
        self.tree_every = tree_every
        self._pids: list[int] = []
        self._samples = 0
        self._peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _tree(self) -> list[int]:
        children, pids, todo = _children(), [], [os.getpid()]
        while todo:
            pid = todo.pop()
            if pid != self.exclude:
                pids.append(pid)
                todo.extend(children.get(pid, []))
        return pids

    def _sample(self, refresh: bool = False) -> int:
        with self._lock:
            if refresh or self._samples % self.tree_every == 0:
                self._pids = self._tree()
            self._samples += 1
            now = sum(_rss_kb(pid) for pid in self._pids)
            self._peak = max(self._peak, now)
            return now

    def mark(self) -> int:
        """Start a new peak; returns the RSS now, in MB."""
        with self._lock:
            self._peak = 0
        return round(self._sample(refresh=True) / 1024)

    def peak_mb(self) -> int:
        self._sample(refresh=True)
        return round(self._peak / 1024)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()


def _ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    # utime, stime, cutime, cstime (fields 14-17; the list starts at field 3)
    return sum(int(f) for f in fields[11:15])


def _busy_ticks() -> int:
    cpu = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(cpu) - cpu[3] - cpu[4]  # all but idle and iowait


class Neighbours:
    """CPU time that processes outside this one's tree (the broker is inside) used since
    `start()`, in core-seconds: how much a shared machine took from a measured variant."""

    def __init__(self) -> None:
        self._busy = self._ours = 0

    def _ours_now(self) -> int:
        tree, total, todo = _children(), 0, [os.getpid()]
        while todo:
            pid = todo.pop()
            total += _ticks(pid)
            todo.extend(tree.get(pid, []))
        return total

    def start(self) -> None:
        self._busy, self._ours = _busy_ticks(), self._ours_now()

    def cpu_s(self) -> float:
        busy, ours = _busy_ticks() - self._busy, self._ours_now() - self._ours
        return max(0, busy - ours) / os.sysconf("SC_CLK_TCK")


def others_running() -> bool:
    """Whether another pytest runs on this machine (its load would distort the figures)."""
    out = subprocess.run(["pgrep", "-f", "pytest"], capture_output=True, text=True)
    return bool(out.stdout.strip())


def machine() -> dict[str, Any]:
    """Cores and memory of this machine."""
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return {"cores": os.cpu_count(), "memory_gb": round(mem_kb / 2**20, 1)}
