"""Live job vs the bundle's job: what a deploy would do, and whether the live job drifted.

Each deployed job carries a fingerprint of its settings in the tag `streamops_spec`. When the
live settings no longer match their own fingerprint, someone edited the job outside the bundle:
that is drift, and a deploy refuses to overwrite it unless forced.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from databricks.sdk.service import jobs

SPEC_TAG = "streamops_spec"
# Filled in by the server, or changed by operations (stop pauses a continuous job): not drift.
_SERVER_KEYS = ("format", "run_as", "deployment", "edit_mode", "parent_path")


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in ({}, [], None)}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def normalize(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings as the sdk models them, minus server-filled keys, empties and our tag."""
    from databricks.sdk.service import jobs

    # as_dict() shares nested dicts with its input: work on a copy.
    d = jobs.JobSettings.from_dict(copy.deepcopy(settings)).as_dict()
    for k in _SERVER_KEYS:
        d.pop(k, None)
    d.get("tags", {}).pop(SPEC_TAG, None)
    d.get("continuous", {}).pop("pause_status", None)
    pruned: dict[str, Any] = _prune(d)
    return pruned


def fingerprint(settings: dict[str, Any]) -> str:
    text = json.dumps(normalize(settings), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_fingerprint(settings: jobs.JobSettings) -> jobs.JobSettings:
    """A copy of `settings` tagged with its own fingerprint (what deploy sends)."""
    from databricks.sdk.service import jobs

    d = settings.as_dict()
    d.setdefault("tags", {})[SPEC_TAG] = fingerprint(d)
    return jobs.JobSettings.from_dict(d)


@dataclass(frozen=True)
class Plan:
    job_name: str
    action: Literal["create", "update", "unchanged"]
    job_id: int | None = None
    drift: bool = False
    drift_reason: str = ""
    diff: list[str] = field(default_factory=list)

    def render(self) -> str:
        head = {
            "create": f"job '{self.job_name}' does not exist: it will be created",
            "update": f"job '{self.job_name}' (id {self.job_id}) will be updated",
            "unchanged": f"job '{self.job_name}' (id {self.job_id}) is up to date: nothing to do",
        }[self.action]
        lines = [head]
        if self.drift:
            lines.append(f"DRIFT: {self.drift_reason}")
        lines += self.diff
        return "\n".join(lines)


def make_plan(
    desired: jobs.JobSettings, live: dict[str, Any] | None, job_id: int | None = None
) -> Plan:
    """Compare the bundle's settings with the live job's (`None`: no such job)."""
    name = desired.name or ""
    want = normalize(desired.as_dict())
    if live is None:
        return Plan(name, "create", diff=_diff({}, want, "(none)"))
    have = normalize(live)
    tag = (live.get("tags") or {}).get(SPEC_TAG)
    drift, reason = False, ""
    if tag is None:
        drift, reason = (
            True,
            f"the live job has no '{SPEC_TAG}' tag: it was not deployed by streamops",
        )
    elif tag != fingerprint(live):
        drift, reason = True, "the live job was edited outside bundle.yml since the last deploy"
    if have == want:
        return Plan(name, "unchanged", job_id, drift, reason)
    return Plan(name, "update", job_id, drift, reason, _diff(have, want, f"live job {job_id}"))


def _diff(have: dict[str, Any], want: dict[str, Any], label: str) -> list[str]:
    a = json.dumps(have, indent=2, sort_keys=True).splitlines() if have else []
    b = json.dumps(want, indent=2, sort_keys=True).splitlines()
    return list(difflib.unified_diff(a, b, label, "bundle.yml", lineterm=""))
