"""Durations as people write them in bundle.yml ('30 seconds', '2 minutes', '1 hour')."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator

_UNITS = {
    "ms": 0.001, "millisecond": 0.001, "milliseconds": 0.001,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
}  # fmt: skip
_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]+)\s*$")


class Duration(float):
    """Seconds, remembering how they were written so Spark gets the same text back."""

    text: str

    def __new__(cls, seconds: float, text: str | None = None) -> Duration:
        obj = super().__new__(cls, seconds)
        obj.text = text or human(seconds)
        return obj

    @property
    def seconds(self) -> float:
        return float(self)

    def __repr__(self) -> str:
        return f"Duration({self.text!r})"

    def __str__(self) -> str:
        return self.text


def parse_duration(value: Any) -> Duration:
    """Parse '2 minutes' (or a number of seconds) into a Duration; raise ValueError with the fix."""
    if isinstance(value, Duration):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30 seconds' or '2 minutes'")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return Duration(float(value), human(float(value)))
    if not isinstance(value, str):
        raise ValueError("expected a duration such as '30 seconds' or '2 minutes'")
    m = _RE.match(value)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(
            f"'{value}' is not a duration; write a number and a unit, e.g. '30 seconds', "
            "'2 minutes', '1 hour', '7 days'"
        )
    seconds = float(m.group(1)) * _UNITS[m.group(2).lower()]
    n = float(m.group(1))
    unit = m.group(2).lower()
    if n != int(n) and _UNITS[unit] != 1:
        # Spark refuses a fraction on any unit but seconds ('1.5 minutes'): say it in seconds.
        return Duration(seconds, f"{seconds:g} seconds")
    # Spark's interval parser wants full unit names; normalise abbreviations.
    full = {0.001: "millisecond", 1: "second", 60: "minute", 3600: "hour", 86400: "day"}
    count = f"{n:g}" if n != int(n) else str(int(n))
    return Duration(seconds, f"{count} {full[_UNITS[unit]]}{'' if n == 1 else 's'}")


def human(seconds: float) -> str:
    """The shortest exact way to say a number of seconds ('90 seconds', '2 minutes', '1 hour')."""
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} seconds"


DurationField = Annotated[
    Duration, PlainValidator(parse_duration), PlainSerializer(lambda d: d.text, return_type=str)
]
