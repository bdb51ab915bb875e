"""Check the docs a newcomer reads: every internal link resolves, every command shown exists.

Run by `make lint` with the project's venv (`.cache/venv/bin/python docs/check.py`). Prints one
line per problem, `file:line: what -> why`, and exits 1 when there is any.

- Links: every relative markdown link in README.md and docs/*.md points at a file that exists,
  and its `#anchor` at a heading of that file, slugged as MkDocs slugs it (Python-Markdown's toc:
  lower-case, punctuation dropped, spaces to '-'). A page under docs/ may link only inside docs/,
  since MkDocs cannot follow a link out of it.
- Commands: every `streamops <group> <command>` in a code block or code span is run as
  `streamops <words> --help`, which must exit 0. Only the command path is checked (the words up to
  the first option, placeholder or comment), once per path.
"""

from __future__ import annotations

import re
import subprocess
import sys
import unicodedata
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
# Sub-READMEs are checked too: they are what a newcomer opens beside the code.
EXTRA_FILES = ("dags/README.md", "plugins/README.md", "bench/README.md")

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)')
_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
_EXTERNAL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|//)")
_COMMAND_WORD = re.compile(r"^[a-z][a-z0-9-]*(\|[a-z][a-z0-9-]*)*$")


@dataclass(frozen=True)
class Line:
    """One line of a markdown file, split into prose and code."""

    number: int
    raw: str
    fenced: bool  # inside a fenced code block
    prose: str  # the line outside code spans ('' when fenced)
    code: tuple[str, ...]  # the fenced line, or the line's code spans


def doc_files(root: Path = ROOT) -> list[Path]:
    """README.md, docs/*.md and the sub-READMEs that exist."""
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return files + [root / f for f in EXTRA_FILES if (root / f).exists()]


def lines(text: str) -> Iterator[Line]:
    """The lines of a markdown text, with fenced blocks and code spans told apart."""
    fence: str | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        opener = _FENCE.match(raw)
        if fence is not None:
            if opener and opener.group(1) == fence:
                fence = None
            else:
                yield Line(number, raw, True, "", (raw,))
            continue
        if opener:
            fence = opener.group(1)
            continue
        spans = tuple(m.group(2) for m in _CODE_SPAN.finditer(raw))
        yield Line(number, raw, False, _CODE_SPAN.sub("", raw), spans)


def slug(heading: str) -> str:
    """The anchor MkDocs gives a heading (Python-Markdown's toc slugify, separator '-')."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[`*]", "", text)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file; repeated headings get `_1`, `_2` as in MkDocs."""
    found: set[str] = set()
    for line in lines(path.read_text(encoding="utf-8")):
        # A `# comment` in a shell block is no heading; a heading keeps its code spans' text.
        m = None if line.fenced else _HEADING.match(line.raw)
        if not m:
            continue
        base = slug(m.group(2))
        anchor, n = base, 0
        while anchor in found:
            n += 1
            anchor = f"{base}_{n}"
        found.add(anchor)
    return found


def link_targets(line: Line) -> Iterator[str]:
    """The link targets written on a line outside code (inline links and reference definitions)."""
    for m in _LINK.finditer(line.prose):
        yield m.group(1)
    ref = _REF_DEF.match(line.prose)
    if ref:
        yield ref.group(1)


def link_problems(root: Path = ROOT) -> list[str]:
    """One line per internal link that does not resolve, in README.md and docs/*.md."""
    problems: list[str] = []
    cache: dict[Path, set[str]] = {}
    for path in doc_files(root):
        rel = path.relative_to(root).as_posix()
        for line in lines(path.read_text(encoding="utf-8")):
            for target in link_targets(line):
                why = _link_problem(root, path, target, cache)
                if why:
                    problems.append(f"{rel}:{line.number}: link '{target}' -> {why}")
    return problems


def _link_problem(root: Path, source: Path, target: str, cache: dict[Path, set[str]]) -> str:
    if _EXTERNAL.match(target):
        return ""
    file_part, _, anchor = unquote(target).partition("#")
    dest = (source.parent / file_part).resolve() if file_part else source.resolve()
    shown = file_part or source.name
    if not dest.exists():
        return f"no file '{shown}' (looked for {_rel(root, dest)})"
    docs = (root / "docs").resolve()
    if source.resolve().is_relative_to(docs) and not dest.is_relative_to(docs):
        return f"'{_rel(root, dest)}' is outside docs/, where MkDocs cannot follow; use a code span"
    if anchor and dest.suffix == ".md":
        if dest not in cache:
            cache[dest] = anchors(dest)
        if anchor not in cache[dest]:
            return f"no heading '{anchor}' in {shown}"
    return ""


def _rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def command_paths(code: str) -> Iterator[tuple[str, ...]]:
    """The `streamops` command paths written in a piece of code (`a|b` gives one path each)."""
    words = code.split()
    for i, word in enumerate(words):
        if word != "streamops" and not word.endswith("/streamops"):
            continue
        path: list[list[str]] = []
        for nxt in words[i + 1 :]:
            if not _COMMAND_WORD.match(nxt):
                break
            path.append(nxt.split("|"))
        yield from _expand(path)


def _expand(path: list[list[str]]) -> Iterator[tuple[str, ...]]:
    if not path:
        return
    combos: list[tuple[str, ...]] = [()]
    for choices in path:
        combos = [(*c, w) for c in combos for w in choices]
    yield from combos


Runner = Callable[[tuple[str, ...]], tuple[int, str]]


def run_help(words: tuple[str, ...]) -> tuple[int, str]:
    """Exit code and last error line of `streamops <words> --help` (the venv's console script)."""
    script = Path(sys.executable).parent / "streamops"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "streamops.cli"]
    try:
        proc = subprocess.run(
            [*argv, *words, "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT
        )
    except subprocess.TimeoutExpired:
        return 124, "no answer within 120 s"
    tail = (proc.stderr.strip().splitlines() or [""])[-1]
    return proc.returncode, tail


def command_problems(root: Path = ROOT, runner: Runner = run_help) -> list[str]:
    """One line per place that shows a `streamops` command whose `--help` does not exit 0."""
    places: list[tuple[str, int, tuple[str, ...]]] = []
    for path in doc_files(root):
        rel = path.relative_to(root).as_posix()
        for line in lines(path.read_text(encoding="utf-8")):
            for code in line.code:
                places += [(rel, line.number, words) for words in command_paths(code)]
    if not places:
        return []
    # A CLI that does not start would fail every place: say it once.
    exit_code, tail = runner(())
    if exit_code != 0:
        rel, number, _ = places[0]
        return [
            f"{rel}:{number}: command 'streamops' -> 'streamops --help' exited {exit_code}: "
            f"{tail} (the CLI does not start; no command was checked)"
        ]
    unique = sorted({words for _, _, words in places})
    # The CLI starts in ~0.5 s; a few at a time keeps `make lint` quick on two cores.
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(zip(unique, pool.map(runner, unique), strict=True))
    problems = []
    for rel, number, words in places:
        exit_code, tail = results[words]
        if exit_code != 0:
            shown = " ".join(("streamops", *words))
            problems.append(
                f"{rel}:{number}: command '{shown}' -> '{shown} --help' exited {exit_code}: {tail}"
            )
    return problems


def main() -> int:
    problems = link_problems() + command_problems()
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
