"""`scripts/bench --write-docs` rewrites only its own block of the shared docs/benchmarks.md."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib.report import BEGIN, END, GOALS, GOALS_AT_MOST, MEASURED_KEYS, RATIOS, write_docs  # noqa: E402


def _result(cold: float) -> dict:
    result = {key: 1.0 for key in MEASURED_KEYS} | {key: 1.0 for key in RATIOS}
    result |= {
        "eotdlfs_cold_seq_MBps": cold, "first_byte_speedup_vs_download_all": 2.0,
        "goals_met": {key: True for key in [*GOALS, *GOALS_AT_MOST]},
        "dataset": {"big_file_bytes": 1 << 30, "small_files": 10_000, "small_file_bytes": 4096,
                    "geotiff_bytes": None, "geotiff": "no GeoTIFF"},
        "repeats": 3, "errors": {"staging": "RuntimeError: boom"}, "notes": ["a note"],
        "machine": {"nproc": 2, "memory_GB": 24.0, "kernel": "6", "python": "3.11", "loadavg_at_end": [1.0],
                    "rclone": "rclone", "nginx": "nginx", "curl": "curl"},
        "quick": False, "profiled": False, "elapsed_s": 1.0, "date": "2026-11-25T00:00:00Z",
        "plan_cog_windows": 50, "plan_cog_small_windows": 25, "plan_delay_ms": 20,
    }
    return result


def test_write_docs_replaces_only_its_block(tmp_path: Path) -> None:
    md = tmp_path / "benchmarks.md"
    md.write_text(f"# Benchmarks\n\n## Theirs\nkept\n\n## Side by side\n{BEGIN}\nold table\n{END}\n\n## After\nkept too\n")
    write_docs(_result(cold=123.0), tmp_path)
    text = md.read_text()
    assert "## Theirs\nkept\n" in text and "## After\nkept too\n" in text
    assert "old table" not in text and "| 123 |" in text
    assert "staging failed: RuntimeError: boom" in text and "- a note" in text
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert json.loads((tmp_path / "benchmarks.json").read_text())["eotdlfs_cold_seq_MBps"] == 123.0

    write_docs(_result(cold=456.0), tmp_path)  # a second run replaces the first
    text = md.read_text()
    assert "| 123 |" not in text and "| 456 |" in text and "## After\nkept too\n" in text


def test_write_docs_appends_its_section_when_missing(tmp_path: Path) -> None:
    md = tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\n## Theirs\nkept\n")
    write_docs(_result(cold=7.5), tmp_path)
    text = md.read_text()
    assert text.startswith("# Benchmarks\n\n## Theirs\nkept\n")
    assert "## Side by side (scripts/bench)" in text and "| 7.5 |" in text
