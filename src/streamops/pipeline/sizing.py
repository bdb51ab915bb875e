"""Output file sizes vs the 50-500 MB rule of thumb, judged from what the sink really wrote."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from streamops.bundle.durations import human

# Judge only after this many data files, so one small trailing batch does not trigger advice.
MIN_FILES = 5


@dataclass
class FileSizeWatch:
    """Collects the sizes of files a query writes and advises once when they miss the band."""

    band_mb: tuple[float, float]
    trigger_seconds: float | None
    max_offsets: int | None
    sizes: list[int] = field(default_factory=list)
    advised: bool = False

    def add(self, sizes: tuple[int, ...] | list[int]) -> str | None:
        """Record a batch's file sizes; return advice the first time the median is off."""
        self.sizes.extend(sizes)
        if self.advised or len(self.sizes) < MIN_FILES:
            return None
        advice = file_size_advice(self.sizes, self.band_mb, self.trigger_seconds, self.max_offsets)
        self.advised = advice is not None
        return advice


def file_size_advice(
    sizes: list[int],
    band_mb: tuple[float, float],
    trigger_seconds: float | None,
    max_offsets: int | None,
) -> str | None:
    """None when the median file is inside the band, else what to change and to what."""
    lo, hi = band_mb
    median_mb = statistics.median(sizes) / 1e6
    if lo <= median_mb <= hi:
        return None
    side = "below" if median_mb < lo else "above"
    target = lo if median_mb < lo else hi
    factor = target / median_mb if median_mb > 0 else 1.0
    msg = f"files written are ~{median_mb:.3g} MB (median of {len(sizes)}), {side} the {lo:g}-{hi:g} MB band"
    if trigger_seconds:
        fit = max(1.0, round(trigger_seconds * factor))
        return f"{msg}; a trigger of '{human(fit)}' would fit (now '{human(trigger_seconds)}')"
    if max_offsets:
        return f"{msg}; max_offsets_per_trigger: {max(1, int(max_offsets * factor))} would fit"
    return f"{msg}; consider nightly compaction"
