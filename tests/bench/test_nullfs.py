"""The null filesystem behind `fuse_ceiling_MBps` (scripts/benchlib/nullfs.py) serves its file whole and stops clean.

Its speed is not asserted (that is the benchmark's number); only that every read gets the
right count of bytes, in the 1 MiB period of its pattern, so the ceiling measures real reads.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib import nullfs  # noqa: E402
from benchlib.processes import is_mounted  # noqa: E402

PERIOD = nullfs.PATTERN_BYTES


@pytest.mark.timeout(60)
def test_null_file_is_its_pattern_repeated_to_size(tmp_path: Path) -> None:
    size = 3 * PERIOD + 12_345  # a tail shorter than the pattern, and reads across its end
    mnt = tmp_path / "mnt"
    null = nullfs.null_mount(mnt, size, tmp_path / "nullfs.log")
    try:
        big = mnt / nullfs.FILE_NAME
        assert big.stat().st_size == size
        data = big.read_bytes()
    finally:
        null.stop()
    assert not is_mounted(mnt)
    assert len(data) == size
    assert data[:PERIOD] == data[PERIOD:2 * PERIOD] == data[2 * PERIOD:3 * PERIOD]
    assert data[3 * PERIOD:] == data[:12_345]
    assert len(set(data[:PERIOD])) > 200  # random bytes, not zeros


def test_a_read_across_the_pattern_end_wraps_and_stops_at_the_size() -> None:
    null = nullfs.NullFile(PERIOD + 50)
    target = bytearray(200)
    assert null.read_into("/big", memoryview(target), PERIOD - 100, None) == 150
    assert bytes(target[:150]) == bytes(null.pattern[-100:]) + bytes(null.pattern[:50])
    assert null.read_into("/big", memoryview(target), PERIOD + 50, None) == 0
