"""File sizes the sink really wrote vs the rule of thumb: advice names a trigger that fits."""

from __future__ import annotations

from streamops.pipeline.sizing import MIN_FILES, FileSizeWatch, file_size_advice

MB = 1_000_000


def test_inside_the_band_no_advice() -> None:
    assert file_size_advice([100 * MB] * 5, (50, 500), 120, None) is None


def test_small_files_name_a_longer_trigger_that_fits() -> None:
    advice = file_size_advice([5 * MB] * 6, (50, 500), 120, None)
    assert advice is not None
    assert "below the 50-500 MB band" in advice
    assert "'20 minutes'" in advice  # 120 s x 50/5
    assert "now '2 minutes'" in advice


def test_big_files_name_a_shorter_trigger() -> None:
    advice = file_size_advice([1000 * MB] * 6, (50, 500), 600, None)
    assert advice is not None and "above" in advice and "'5 minutes'" in advice


def test_available_now_advises_max_offsets() -> None:
    advice = file_size_advice([10 * MB] * 6, (50, 500), None, 100_000)
    assert advice is not None and "max_offsets_per_trigger: 500000" in advice


def test_watch_waits_for_enough_files_and_advises_once() -> None:
    watch = FileSizeWatch(band_mb=(50, 500), trigger_seconds=30, max_offsets=None)
    for _ in range(MIN_FILES - 1):
        assert watch.add([1 * MB]) is None
    assert watch.add([1 * MB]) is not None
    assert watch.add([1 * MB]) is None  # said once, not every batch
