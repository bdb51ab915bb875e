"""The bundle loads and validates without the optional extras installed.

A DAG parse, CI or a laptop validating bundle.yml must not need Spark, Delta, Airflow, the
Databricks SDK, the Azure clients or librdkafka: those are imported only where a run uses them.
Each check runs a fresh interpreter whose import system refuses those packages, so a heavy
import at module level anywhere on the path fails the test. (The static side of the same rule is
the `bundle-without-extras` import-linter contract in pyproject.toml, run by `make lint`.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.unit.helpers import PROJECT, SHIPPED, edited, line_of, write

OPTIONAL = ("pyspark", "delta", "deltalake", "airflow", "databricks", "azure", "confluent_kafka")

# Runs first in the child: refuse every optional package, and record each attempt, so the test
# sees an import that some `except ImportError` swallowed as well as one that crashed.
BLOCK_OPTIONAL = f"""
import atexit, importlib.abc, json, sys

OPTIONAL = {OPTIONAL!r}
already = sorted(m for m in sys.modules if m.partition(".")[0] in OPTIONAL)
assert not already, f"imported before the blocker was installed: {{already}}"
attempted = []


class RefuseOptional(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in OPTIONAL:
            attempted.append(name)
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, RefuseOptional())
atexit.register(lambda: print("ATTEMPTED " + json.dumps(attempted), file=sys.stderr))
"""


@dataclass(frozen=True)
class Child:
    code: int
    stdout: str
    stderr: str

    @property
    def attempted(self) -> list[str]:
        """The optional packages the child tried to import."""
        line = next(x for x in self.stderr.splitlines() if x.startswith("ATTEMPTED "))
        return json.loads(line.removeprefix("ATTEMPTED "))


def without_extras(code: str, *args: str | Path) -> Child:
    """Run `code` (after BLOCK_OPTIONAL) in a fresh interpreter, in the project folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMOPS_")}
    proc = subprocess.run(
        [sys.executable, "-c", BLOCK_OPTIONAL + code, *map(str, args)],
        capture_output=True, text=True, env=env, cwd=PROJECT, timeout=120,
    )  # fmt: skip
    return Child(proc.returncode, proc.stdout, proc.stderr)


LOAD_EVERY_TARGET = """
import streamops.bundle

for target in ("local", "dev", "prod"):
    bundle = streamops.bundle.load(sys.argv[1], target)
    print(json.dumps({"target": target, "jobs": len(bundle.jobs),
                      "warnings": [w.render() for w in bundle.warnings]}))
"""

VALIDATE = """
from streamops.cli import main

sys.argv = ["streamops", "validate", "--bundle", sys.argv[1], "--target", sys.argv[2]]
main()
"""


def test_the_shipped_bundle_loads_for_every_target_without_the_extras() -> None:
    child = without_extras(LOAD_EVERY_TARGET, SHIPPED)
    assert child.code == 0, child.stderr
    loaded = [json.loads(line) for line in child.stdout.splitlines()]
    assert [x["target"] for x in loaded] == ["local", "dev", "prod"]
    assert all(x["jobs"] == 3 for x in loaded), loaded
    assert child.attempted == []


def test_streamops_validate_passes_on_prod_without_the_extras() -> None:
    child = without_extras(VALIDATE, "bundle.yml", "prod")
    assert child.code == 0, child.stderr
    assert "bundle.yml: valid for target 'prod'" in child.stderr
    assert "Traceback" not in child.stderr
    assert child.attempted == []


def test_without_the_databricks_sdk_job_settings_are_a_warning_naming_the_extra(
    tmp_path: Path,
) -> None:
    # Hand-written Jobs API settings are checked with databricks-sdk's models; without the SDK
    # the check cannot run, which must be said, not crash validation (deploy still refuses).
    text = edited(
        ("  prod:", "      airflow_conn_id: databricks_prod\n",
         "      airflow_conn_id: databricks_prod\n      job_settings: {max_concurrent_runs: 1}\n"),
    )  # fmt: skip
    path = write(tmp_path, text)
    child = without_extras(VALIDATE, path, "prod")
    assert child.code == 0, child.stderr
    (warning,) = [x for x in child.stdout.splitlines() if "job_settings" in x]
    line = line_of(text, "job_settings:")
    assert warning.startswith(f"{path}:{line}: warning: targets.prod.databricks.job_settings: ")
    assert "databricks-sdk is not installed" in warning
    assert "Fix: pip install 'streamops[databricks]'" in warning
    assert child.attempted and {a.partition(".")[0] for a in child.attempted} == {"databricks"}


RESOLVE_WITHOUT_THE_STACK = """
import streamops.bundle

for target in ("local", "dev", "prod"):
    bundle = streamops.bundle.load(sys.argv[1], target)
    bundle.runtime.storage(bundle.checkpoint_root).adlfs()
    if target != "local":
        bundle.runtime.kafka_for("claims")
print(json.dumps(sorted(m for m in sys.modules if m.startswith("streamops.localstack"))))
"""


def test_the_bundle_resolves_its_settings_without_importing_the_local_stack() -> None:
    # The local stack's broker lookup is handed in by whoever runs clients (jobs, CLI, DAG
    # tasks): config never depends on the process manager (also the `stages` contract).
    child = without_extras(RESOLVE_WITHOUT_THE_STACK, SHIPPED)
    assert child.code == 0, child.stderr
    assert json.loads(child.stdout) == []
    assert child.attempted == []


# --- the adapters: dags/, plugins/, jobs/ reach streamops through one entry module --------------
# import-linter sees only the package; these files live outside it, so their imports are read here.

ADAPTER_DIRS = ("dags", "plugins", "jobs")
ENTRY = "streamops.entry"


def _streamops_imports(path: Path) -> list[tuple[int, str, str | None]]:
    """(line, module, name) of every import of streamops in `path` (name None for `import m`)."""
    import ast

    found: list[tuple[int, str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module, a.name) for a in node.names]
    return [(ln, m, n) for ln, m, n in found if m == "streamops" or m.startswith("streamops.")]


def test_the_adapters_import_only_the_entry_module() -> None:
    import streamops.entry

    files = sorted(f for d in ADAPTER_DIRS for f in (PROJECT / d).rglob("*.py"))
    assert files, "no adapter files found"
    wrong = [
        f"{f.relative_to(PROJECT)}:{line}: {module}" + (f".{name}" if name else "")
        for f in files
        for line, module, name in _streamops_imports(f)
        if module != ENTRY or name not in streamops.entry.__all__
    ]
    assert not wrong, (
        f"dags/, plugins/ and jobs/ may import only the names of {ENTRY} (add a name there "
        "rather than reaching into the package):\n" + "\n".join(wrong)
    )


def test_every_entry_name_resolves() -> None:
    import streamops.entry

    missing = [n for n in streamops.entry.__all__ if getattr(streamops.entry, n, None) is None]
    assert not missing
    assert sorted(streamops.entry._WHERE) == sorted(streamops.entry.__all__)


def test_the_entry_module_imports_a_name_s_module_only_when_it_is_taken() -> None:
    """A DAG file imports `load` at parse time: that must not import compaction, deploy..."""
    child = without_extras(
        "from streamops.entry import default_target, load\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(('streamops.compaction', "
        "'streamops.deploy', 'streamops.checkpoint', 'streamops.runner', "
        "'streamops.monitoring')))\n"
        "print(json.dumps(heavy))\n"
    )
    assert child.code == 0, child.stderr
    assert json.loads(child.stdout.splitlines()[-1]) == []
