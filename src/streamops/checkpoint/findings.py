"""What `streamops checkpoint check` found: findings with stable codes, and the checks skipped."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Finding:
    """One problem in a checkpoint: a stable code, the file, what is wrong and the fix."""

    code: str
    file: str
    message: str
    fix: str
    severity: str = "error"  # "error" | "warning"

    def render(self) -> str:
        tag = "warning" if self.severity == "warning" else "error"
        return f"{self.code} {tag}: {self.file}: {self.message}. Fix: {self.fix}"


@dataclass
class Report:
    """Every finding of one check of one checkpoint location."""

    location: str
    findings: list[Finding] = field(default_factory=list)
    checks_run: list[str] = field(default_factory=list)
    checks_skipped: dict[str, str] = field(default_factory=dict)  # check -> why
    query_id: str | None = None
    last_batch: int | None = None
    last_committed: int | None = None
    unreadable: str | None = None  # why the location could not be read at all

    def add(self, code: str, file: str, message: str, fix: str, severity: str = "error") -> None:
        self.findings.append(Finding(code, file, message, fix, severity))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def exit_code(self) -> int:
        """0 healthy (warnings allowed), 1 problems found, 2 location unreadable."""
        if self.unreadable is not None:
            return 2
        return 1 if self.errors else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "location": self.location,
            "healthy": self.exit_code == 0,
            "exit_code": self.exit_code,
            "unreadable": self.unreadable,
            "query_id": self.query_id,
            "last_batch": self.last_batch,
            "last_committed": self.last_committed,
            "findings": [asdict(f) for f in self.findings],
            "checks_run": self.checks_run,
            "checks_skipped": self.checks_skipped,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, sort_keys=True)

    def render(self) -> str:
        lines = [f"checkpoint {self.location}"]
        if self.unreadable is not None:
            lines.append(f"  unreadable: {self.unreadable}")
            return "\n".join(lines)
        lines.append(
            f"  query id {self.query_id or '-'}, last batch {self.last_batch}, "
            f"last committed {self.last_committed}"
        )
        lines += [f"  {f.render()}" for f in self.findings]
        lines.append(f"  checks run: {', '.join(self.checks_run) or '-'}")
        for name, why in self.checks_skipped.items():
            lines.append(f"  skipped {name}: {why}")
        n = len(self.errors)
        lines.append("  healthy" if n == 0 else f"  {n} problem(s)")
        return "\n".join(lines)
