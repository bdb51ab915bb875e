"""Read YAML while remembering the line of every key, so errors can name `file:line`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError

YamlPath = tuple[str | int, ...]


@dataclass
class YamlDocument:
    """Plain Python data from a YAML file plus the line (1-based) of every path in it."""

    file: str
    data: Any
    lines: dict[YamlPath, int] = field(default_factory=dict)

    def line_of(self, path: YamlPath) -> int | None:
        """The line of `path`, or of its nearest ancestor that has one."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), 1)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, which YAML silently resolves to the last one."""


# YAML 1.1 reads on/off/yes/no as booleans, so a join's `on:` key would arrive as `True`.
# Keep YAML 1.2's booleans only (true/false); pydantic still accepts "yes"/"on" for bool fields.
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _walk(
    node: yaml.Node,
    path: YamlPath,
    lines: dict[YamlPath, int],
    problems: list,
    active: frozenset[int] = frozenset(),
) -> None:
    if id(node) in active:
        # An alias inside its own anchor: walking (or validating) it would never end.
        raise ComposerError(
            None,
            None,
            "an alias refers to a node that contains it (recursive anchor)",
            node.start_mark,
        )
    active = active | {id(node)}
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(
                    ((*path, key), line, f"duplicate key '{key}' (first at line {seen[key]})")
                )
            seen[key] = line
            lines[(*path, key)] = line
            _walk(value_node, (*path, key), lines, problems, active)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            _walk(item, (*path, i), lines, problems, active)


# A bundle is a few hundred values. An alias repeats its anchor's whole subtree, and aliases of
# aliases multiply ("billion laughs": 9 levels of 10 aliases are 10^9 values); everything after
# parsing (line map, validation, rules) walks the expanded tree, so expansion is bounded first.
MAX_EXPANDED_NODES = 100_000


class YamlTooLarge(Exception):
    """The YAML expands (through aliases) or nests beyond what a bundle can be."""

    def __init__(self, line: int | None, message: str, fix: str):
        self.line, self.message, self.fix = line, message, fix
        super().__init__(f"line {line}: {message}. Fix: {fix}")


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def expanded_size(root: yaml.Node, limit: int = MAX_EXPANDED_NODES) -> int:
    """How many nodes `root` stands for once every alias is expanded, each distinct node visited
    once (PyYAML's composer hands back an alias as its anchor's very node); YamlTooLarge past
    `limit`, naming the anchor that is repeated the most."""
    sizes: dict[int, int] = {}
    reused: dict[int, yaml.Node] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # post-order without recursion: deep nesting cannot exhaust the call stack
        node, done = stack.pop()
        key = id(node)
        if done:
            sizes[key] = min(limit + 1, 1 + sum(sizes.get(id(c), 0) for c in _children(node)))
            continue
        if key in sizes:
            reused[key] = node
            continue
        sizes[key] = 0  # in progress; a recursive anchor is refused in _walk
        stack.append((node, True))
        stack += [(c, False) for c in _children(node)]
    total = sizes[id(root)]
    if total > limit:
        worst = max(reused.values(), key=lambda n: sizes[id(n)], default=root)
        raise YamlTooLarge(
            worst.start_mark.line + 1,
            f"aliases expand this file to more than {limit:,} values (the anchor here is repeated "
            "by aliases of aliases, a 'billion laughs'); streamops refuses it before reading on",
            "write the repeated values out, or use an anchor only for a small shared block and "
            "no aliases inside anchors",
        )
    return total


def read_yaml(path: Path, display_name: str | None = None) -> tuple[YamlDocument, list]:
    """Parse `path`; return the document and a list of (yaml_path, line, message) problems.

    Raises yaml.YAMLError (with a mark) when the text is not YAML at all, YamlTooLarge when its
    aliases expand (or it nests) beyond any bundle.
    """
    text = path.read_text(encoding="utf-8")
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            expanded_size(node)
        # Construct before _walk: it refuses keys that are lists or mappings (with a line).
        data = loader.construct_document(node) if node is not None else None
        lines: dict[YamlPath, int] = {(): 1}
        problems: list = []
        if node is not None:
            _walk(node, (), lines, problems)
    except RecursionError:
        raise YamlTooLarge(
            None, "the YAML nests too deeply to be a bundle", "flatten the nesting"
        ) from None
    finally:
        loader.dispose()
    return YamlDocument(display_name or str(path), data, lines), problems


def dotted(path: YamlPath) -> str:
    """('jobs', 'claims', 'steps', 1, 'watermark') -> 'jobs.claims.steps[1].watermark'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"
