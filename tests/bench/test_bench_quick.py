"""Smoke test of `scripts/bench --quick`: it runs end to end, prints the full JSON, and leaves no mount behind.

Speed is not asserted here (the numbers are for the note); only that every key is there
with a sane value.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib.report import MEASURED_KEYS, RATIOS  # noqa: E402


def _mounts_under(folder: Path) -> list[str]:
    with open("/proc/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(str(folder))]


@pytest.mark.slow  # about a minute
@pytest.mark.timeout(180)
def test_bench_quick_prints_every_key(tmp_path: Path) -> None:
    work = tmp_path / "bench"
    proc = subprocess.run(
        [str(ROOT / "scripts" / "bench"), "--quick", "--workdir", str(work)],
        capture_output=True, text=True, timeout=170, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert _mounts_under(tmp_path) == []
    result = json.loads(proc.stdout)

    assert result["quick"] is True
    assert result["errors"] == {}
    may_be_null = set()  # only the GeoTIFF keys, when rasterio is missing
    if result["dataset"]["geotiff_bytes"] is None:
        may_be_null = {"eotdlfs_geotiff_window_bytes_fetched", "rclone_geotiff_window_bytes_fetched"}
        assert result["notes"], "a skipped GeoTIFF must say why"
    for key in MEASURED_KEYS:
        value = result[key]
        if value is None and key in may_be_null:
            continue
        if key.endswith("_again_bytes_fetched"):  # a second reader of cached windows may fetch nothing
            assert isinstance(value, (int, float)) and value >= 0, f"{key} = {value!r}"
            continue
        assert isinstance(value, (int, float)) and value > 0, f"{key} = {value!r}"
    assert result["eotdlfs_cog_windows_again_bytes_fetched"] == 0  # the block cache serves the second process
    for key in RATIOS:
        assert isinstance(result[key], float) and result[key] > 0, f"{key} = {result[key]!r}"
    assert all(v in (True, False) for v in result["goals_met"].values())
    machine = result["machine"]
    assert machine["nproc"] >= 1 and machine["memory_GB"] > 0
    assert isinstance(machine["kernel"], str) and isinstance(machine["python"], str)
