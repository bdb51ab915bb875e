"""The consoles every command prints through: results to stdout, progress and errors to stderr.

Here, below `streamops.cli` and the command modules alike, so a command module never imports the
CLI that registers it.
"""

from __future__ import annotations

from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
if not out.is_terminal:  # logs and CI: do not squeeze tables into 80 columns
    out = Console(highlight=False, soft_wrap=True, width=200)
err = Console(stderr=True, highlight=False, soft_wrap=True)
