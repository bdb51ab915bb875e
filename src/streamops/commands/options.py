"""The options every command shares: which bundle.yml, which target, which job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

BundleOpt = Annotated[Path, typer.Option("--bundle", "-b", help="path to bundle.yml")]
TargetOpt = Annotated[str, typer.Option("--target", "-t", help="target in bundle.yml")]
JobOpt = Annotated[str, typer.Option("--job", "-j", help="job name in bundle.yml")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the report as JSON")]
