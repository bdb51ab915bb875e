"""The docs checker (docs/check.py, run by `make lint`): links, anchors and commands resolve."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def check() -> ModuleType:
    # docs/ is no package: load the script as `make lint` runs it.
    spec = importlib.util.spec_from_file_location("docs_check", PROJECT / "docs" / "check.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_check"] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def test_every_internal_link_of_the_readme_and_docs_resolves(check: ModuleType) -> None:
    assert check.link_problems(PROJECT) == []


def test_the_readme_stays_a_front_door() -> None:
    assert len((PROJECT / "README.md").read_text().splitlines()) < 250


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("bundle.yml settings", "bundleyml-settings"),
        ("The `streamops_deploy` DAG", "the-streamops_deploy-dag"),
        ("Pictures: `streamops report`", "pictures-streamops-report"),
        (
            "Pointing it at Databricks, ADLS Gen2 and Azure Monitor",
            "pointing-it-at-databricks-adls-gen2-and-azure-monitor",
        ),
        ("Jobs  that -- hold up", "jobs-that-hold-up"),
    ],
)
def test_anchors_are_slugged_as_mkdocs_slugs_them(
    check: ModuleType, heading: str, anchor: str
) -> None:
    assert check.slug(heading) == anchor


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_missing_file_a_missing_heading_and_a_link_out_of_docs_are_named(
    check: ModuleType, tmp_path: Path
) -> None:
    root = _tree(
        tmp_path,
        {
            "README.md": "# r\n\n[ok](docs/a.md#twice_1) [gone](docs/nope.md) [z](docs/a.md#z)\n",
            "docs/a.md": (
                "# A\n\n## Twice\n\n## Twice\n\n```bash\n# not a heading\n```\n\n"
                "[top](#a) [up](../README.md) [web](https://example.com/x.md#y) `[no](x.md)`\n"
            ),
        },
    )
    assert check.link_problems(root) == [
        "README.md:3: link 'docs/nope.md' -> no file 'docs/nope.md' (looked for docs/nope.md)",
        "README.md:3: link 'docs/a.md#z' -> no heading 'z' in docs/a.md",
        "docs/a.md:11: link '../README.md' -> 'README.md' is outside docs/, where MkDocs cannot "
        "follow; use a code span",
    ]
    assert check.anchors(root / "docs" / "a.md") == {"a", "twice", "twice_1"}


def test_command_paths_stop_at_the_first_option_placeholder_or_comment(
    check: ModuleType,
) -> None:
    paths = [
        list(check.command_paths(code))
        for code in (
            "streamops checkpoint check LOCATION --json",
            ".cache/venv/bin/streamops deploy --job j --target prod",
            "streamops local up|down   # the local stack",
            "X=1 streamops demo",
            "streamops",
            "streamops <command> --help",
            "backup_root: abfss://b@a/streamops   # default",
        )
    ]
    assert paths == [
        [("checkpoint", "check")],
        [("deploy",)],
        [("local", "up"), ("local", "down")],
        [("demo",)],
        [],
        [],
        [],
    ]


def test_a_command_the_cli_does_not_know_is_named_with_its_place(
    check: ModuleType, tmp_path: Path
) -> None:
    root = _tree(
        tmp_path,
        {
            "README.md": "# r\n\n```bash\nstreamops demo\nstreamops nope --x\n```\n",
            "docs/a.md": "Run `streamops nope` or `streamops demo`.\n",
        },
    )
    asked: list[tuple[str, ...]] = []

    def runner(words: tuple[str, ...]) -> tuple[int, str]:
        asked.append(words)
        return (2, "Error: No such command 'nope'.") if words == ("nope",) else (0, "")

    assert check.command_problems(root, runner) == [
        "README.md:5: command 'streamops nope' -> 'streamops nope --help' exited 2: "
        "Error: No such command 'nope'.",
        "docs/a.md:1: command 'streamops nope' -> 'streamops nope --help' exited 2: "
        "Error: No such command 'nope'.",
    ]
    assert sorted(asked) == [(), ("demo",), ("nope",)]  # once per command path


def test_a_cli_that_does_not_start_is_one_problem(check: ModuleType, tmp_path: Path) -> None:
    root = _tree(tmp_path, {"README.md": "# r\n\n`streamops demo`, `streamops run`\n"})
    assert check.command_problems(root, lambda _words: (1, "NameError: x")) == [
        "README.md:3: command 'streamops' -> 'streamops --help' exited 1: NameError: x "
        "(the CLI does not start; no command was checked)"
    ]


def test_the_real_cli_answers_help_for_a_known_command_only(check: ModuleType) -> None:
    assert check.run_help(("checkpoint", "check"))[0] == 0
    code, tail = check.run_help(("no-such-command",))
    assert code == 2 and "no-such-command" in tail
