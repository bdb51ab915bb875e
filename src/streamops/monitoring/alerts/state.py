"""Open alerts, kept in a small JSON file under the cache folder, so a breach pages once and a
recovery resolves once, across batches, processes and the watchdog."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from streamops.monitoring.alerts.rules import Finding


def state_file(cache_dir: Path) -> Path:
    return cache_dir / "alerts" / "open_alerts.json"


@dataclass
class SyncResult:
    triggered: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class OpenAlerts:
    """dedup_key -> what was paged. Guarded by an exclusive file lock while it is changed."""

    def __init__(self, path: Path):
        self.path = path

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with (self.path.parent / (self.path.name + ".lock")).open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = (
                    json.loads(self.path.read_text(encoding="utf-8")) if self.path.exists() else {}
                )
            except json.JSONDecodeError:
                data = {}  # a torn file: start over; PagerDuty dedups by key anyway
            yield data
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
            tmp.replace(self.path)

    def read(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return {}
        return data if isinstance(data, dict) else {}

    def sync(
        self,
        findings: Iterable[Finding],
        target: str,
        *,
        trigger: Callable[[Finding, str], None],
        resolve: Callable[[Finding, str], None],
        now: str,
    ) -> SyncResult:
        """Page breaches not yet open; resolve open ones that are no longer breached.

        A finding that is not evaluated (no data for it) leaves its alert as it is. A failed
        send keeps the previous state, so the next evaluation tries again.
        """
        res = SyncResult()
        with self._locked() as data:
            for f in findings:
                key = f.dedup_key(target)
                try:
                    if f.breached and key not in data:
                        trigger(f, key)
                        data[key] = {
                            "rule": f.rule,
                            "job": f.job,
                            "query": f.query,
                            "since": now,
                            "value": f.value,
                            "threshold": f.threshold,
                        }
                        res.triggered.append(key)
                    elif not f.breached and key in data:
                        resolve(f, key)
                        del data[key]
                        res.resolved.append(key)
                except Exception:
                    res.failed.append(key)
        return res


def silent_file(cache_dir: Path) -> Path:
    return cache_dir / "alerts" / "silent_since.json"


Key = tuple[str, str]  # (job, query)


def silent_since(
    path: Path, started: dict[Key, datetime], last_batch: dict[Key, datetime]
) -> dict[Key, datetime]:
    """For each started query, its first start that no batch followed, remembered in `path`.

    The deploy record keeps a query's latest start only; a job that fails before its first batch
    and is restarted (a continuous job, every minute) would look freshly started at each round
    and never stalled. Remembered across watchdog rounds, it stays silent since its first start.
    """
    try:
        memory = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except json.JSONDecodeError:
        memory = {}  # a torn file: forget; at worst one crash loop is paged a round later
    out: dict[Key, datetime] = {}
    for key, start in started.items():
        text = memory.get("\t".join(key)) if isinstance(memory, dict) else None
        first = datetime.fromisoformat(text) if isinstance(text, str) else None
        last = last_batch.get(key)
        quiet = first is not None and first <= start and (last is None or last < first)
        out[key] = first if quiet and first is not None else start
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    body = {"\t".join(k): v.isoformat() for k, v in sorted(out.items())}
    tmp.write_text(json.dumps(body, indent=1), encoding="utf-8")
    tmp.replace(path)
    return out
