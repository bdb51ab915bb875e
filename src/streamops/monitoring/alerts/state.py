"""Open alerts, kept in a small JSON file under the cache folder, so a breach pages once and a
recovery resolves once, across batches, processes and the watchdog."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
