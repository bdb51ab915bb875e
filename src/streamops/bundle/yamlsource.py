"""Read YAML while remembering the line of every key, so errors can name `file:line`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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


def _walk(node: yaml.Node, path: YamlPath, lines: dict[YamlPath, int], problems: list) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append((path + (key,), line, f"duplicate key '{key}' (first at line {seen[key]})"))
            seen[key] = line
            lines[path + (key,)] = line
            _walk(value_node, path + (key,), lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _walk(item, path + (i,), lines, problems)


def read_yaml(path: Path, display_name: str | None = None) -> tuple[YamlDocument, list]:
    """Parse `path`; return the document and a list of (yaml_path, line, message) problems.

    Raises yaml.YAMLError (with a mark) when the text is not YAML at all.
    """
    text = path.read_text(encoding="utf-8")
    node = yaml.compose(text, Loader=_UniqueKeyLoader)
    lines: dict[YamlPath, int] = {(): 1}
    problems: list = []
    if node is not None:
        _walk(node, (), lines, problems)
    data = yaml.load(text, Loader=_UniqueKeyLoader) if node is not None else None
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
