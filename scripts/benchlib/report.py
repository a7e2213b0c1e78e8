"""The bench's output: one JSON object of medians and ratios, and its table in docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchlib.dataset import DatasetSpec
from benchlib.runner import Bench

MEASURED_KEYS = (
    "curl_server_MBps", "curl_nginx_MBps",
    "eotdlfs_cold_seq_MBps", "rclone_cold_seq_MBps",
    "eotdlfs_warm_seq_MBps", "rclone_warm_seq_MBps",
    "eotdlfs_ls_lR_10k_s", "rclone_ls_lR_10k_s",
    "eotdlfs_ls_lR_10k_warm_s", "rclone_ls_lR_10k_warm_s",
    "eotdlfs_rand4k_iops", "rclone_rand4k_iops",
    "eotdlfs_first_byte_ms", "rclone_first_byte_ms", "download_all_first_file_s",
    "eotdlfs_geotiff_window_bytes_fetched", "rclone_geotiff_window_bytes_fetched",
    "eotdlfs_rss_peak_MB", "rclone_rss_peak_MB",
    "eotdlfs_cold_seq_cpu_s_per_GB", "rclone_cold_seq_cpu_s_per_GB",
    "eotdlfs_staging_copy_in_MBps", "eotdlfs_staging_flush_s",
    "ingest_s",
    # Issue 16: random COG windows (rasterio on each mount, GDAL /vsicurl/ on our server), first open
    # in a version of many files, and the same through a proxy adding latency.
    *(f"{peer}_cog_windows_{unit}" for peer in ("eotdlfs", "rclone", "vsicurl") for unit in ("s", "bytes_fetched")),
    *(f"{peer}_cog_windows_again_{unit}" for peer in ("eotdlfs", "rclone") for unit in ("s", "bytes_fetched")),
    "eotdlfs_cog_windows_read_requests", "eotdlfs_cog_windows_again_read_requests",
    *(f"{peer}_cog_4x_windows_{unit}" for peer in ("eotdlfs", "rclone", "vsicurl") for unit in ("s", "bytes_fetched")),
    "eotdlfs_first_small_ms", "rclone_first_small_ms",
    "eotdlfs_cp_r_small_files_per_s", "rclone_cp_r_small_files_per_s",
    "eotdlfs_delayed_first_byte_ms", "rclone_delayed_first_byte_ms",
    *(f"{peer}_delayed_cog_windows_{unit}" for peer in ("eotdlfs", "rclone", "vsicurl", "eotdl_fsspec")
      for unit in ("s", "bytes_fetched")),
    "eotdlfs_delayed_cold_seq_MBps", "rclone_delayed_cold_seq_MBps",
    # Issue 18: the same windows through eotdl:// (fsspec, no mount), and 1 MiB at an offset of the big file.
    *(f"eotdl_fsspec_{what}_{unit}" for what in ("cog_windows", "cog_windows_again", "cog_4x_windows", "1MiB_at_offset")
      for unit in ("s", "bytes_fetched")),
)
PEAK_KEYS = ("eotdlfs_rss_peak_MB", "rclone_rss_peak_MB")  # the worst repetition, not the median
# ratio key: (numerator, denominator); all read as "eotdlfs is N times better" except cold_vs_curl (a fraction)
RATIOS = {
    "cold_vs_curl": ("eotdlfs_cold_seq_MBps", "curl_server_MBps"),
    "cold_vs_rclone": ("eotdlfs_cold_seq_MBps", "rclone_cold_seq_MBps"),
    "warm_vs_rclone": ("eotdlfs_warm_seq_MBps", "rclone_warm_seq_MBps"),
    "ls_speedup_vs_rclone": ("rclone_ls_lR_10k_s", "eotdlfs_ls_lR_10k_s"),
    "rand4k_vs_rclone": ("eotdlfs_rand4k_iops", "rclone_rand4k_iops"),
    "cog_speed_vs_vsicurl": ("vsicurl_cog_windows_s", "eotdlfs_cog_windows_s"),
    "cog_speed_vs_rclone": ("rclone_cog_windows_s", "eotdlfs_cog_windows_s"),
    "cog_bytes_vs_vsicurl": ("eotdlfs_cog_windows_bytes_fetched", "vsicurl_cog_windows_bytes_fetched"),  # a fraction
    "cog_4x_speed_vs_vsicurl": ("vsicurl_cog_4x_windows_s", "eotdlfs_cog_4x_windows_s"),
    "cog_4x_bytes_vs_vsicurl": ("eotdlfs_cog_4x_windows_bytes_fetched", "vsicurl_cog_4x_windows_bytes_fetched"),
    "first_small_vs_rclone": ("rclone_first_small_ms", "eotdlfs_first_small_ms"),
    "cp_r_small_vs_rclone": ("eotdlfs_cp_r_small_files_per_s", "rclone_cp_r_small_files_per_s"),
    "delayed_first_byte_vs_rclone": ("rclone_delayed_first_byte_ms", "eotdlfs_delayed_first_byte_ms"),
    "delayed_cog_speed_vs_rclone": ("rclone_delayed_cog_windows_s", "eotdlfs_delayed_cog_windows_s"),
    "delayed_cog_speed_vs_vsicurl": ("vsicurl_delayed_cog_windows_s", "eotdlfs_delayed_cog_windows_s"),
    "delayed_cold_vs_rclone": ("eotdlfs_delayed_cold_seq_MBps", "rclone_delayed_cold_seq_MBps"),
    "fsspec_cog_time_vs_vsicurl": ("eotdl_fsspec_cog_windows_s", "vsicurl_cog_windows_s"),  # a fraction
    "fsspec_cog_bytes_vs_vsicurl": ("eotdl_fsspec_cog_windows_bytes_fetched", "vsicurl_cog_windows_bytes_fetched"),
    "fsspec_cog_4x_time_vs_vsicurl": ("eotdl_fsspec_cog_4x_windows_s", "vsicurl_cog_4x_windows_s"),
    "delayed_fsspec_cog_time_vs_vsicurl": ("eotdl_fsspec_delayed_cog_windows_s", "vsicurl_delayed_cog_windows_s"),
}
GOALS = {  # issue 16's goals (the read path, second round): ratio key -> the least value that meets it
    "cold_vs_curl": 0.4, "cold_vs_rclone": 1.5, "warm_vs_rclone": 10.0,
    "ls_speedup_vs_rclone": 4.0, "rand4k_vs_rclone": 2.0,
    # windows within 1.2x GDAL's time, first open no slower than rclone
    "cog_speed_vs_vsicurl": 1 / 1.2, "first_small_vs_rclone": 1.0,
}
GOALS_AT_MOST = {"cog_bytes_vs_vsicurl": 1.3,  # issue 16: at most 1.3x the bytes GDAL fetches
                 # issue 18: eotdl:// within 1.2x GDAL's time and 1.3x its bytes; 1 MiB at an offset fetches <= 8 MiB
                 "fsspec_cog_time_vs_vsicurl": 1.2, "fsspec_cog_bytes_vs_vsicurl": 1.3,
                 "eotdl_fsspec_1MiB_at_offset_bytes_fetched": 8 << 20}
BEGIN, END = "<!-- scripts/bench: begin -->", "<!-- scripts/bench: end -->"
SECTION_TITLE = "## Side by side (scripts/bench)"


def build(bench: Bench, spec: DatasetSpec, quick: bool, elapsed_s: float) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key in MEASURED_KEYS:
        values = bench.samples.get(key) or []
        if not values:
            result[key] = None
        else:
            value = max(values) if key in PEAK_KEYS else statistics.median(values)
            result[key] = round(value, 3)
    for key, (num, den) in RATIOS.items():
        result[key] = round(result[num] / result[den], 3) if result[num] and result[den] else None
    first_byte, all_first = result["eotdlfs_first_byte_ms"], result["download_all_first_file_s"]
    result["first_byte_speedup_vs_download_all"] = round(all_first * 1000 / first_byte, 1) if first_byte and all_first else None
    result["goals_met"] = goals_met(result)
    ds = bench.dataset
    result["dataset"] = {
        "big_file_bytes": spec.big_bytes, "small_files": spec.small_count, "small_file_bytes": spec.small_bytes,
        "geotiff_bytes": ds.geotiff_bytes if ds else None, "geotiff": ds.note if ds else None,
    }
    result["repeats"] = bench.plan.repeats
    result["plan_cog_windows"] = bench.plan.cog_windows
    result["plan_cog_small_windows"] = bench.plan.cog_small_windows
    result["plan_delay_ms"] = round(bench.plan.delay_s * 1000)
    result["samples"] = {k: [round(v, 3) for v in vs] for k, vs in bench.samples.items()}
    result["errors"] = dict(bench.errors)
    result["notes"] = list(bench.notes)
    result["machine"] = machine()
    result["quick"] = quick
    result["profiled"] = bench.profile_dir is not None
    result["elapsed_s"] = round(elapsed_s, 1)
    result["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return result


def machine() -> dict[str, Any]:
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(), "memory_GB": round(mem_kb * 1024 / 1e9, 1), "kernel": platform.release(),
        "python": platform.python_version(), "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "rclone": _first_line(["rclone", "version"]), "nginx": _first_line(["nginx", "-v"]),
        "curl": _first_line(["curl", "--version"]),
    }


def _first_line(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def goals_met(result: dict[str, Any]) -> dict[str, bool | None]:
    """Whether RESULT meets each goal of GOALS and GOALS_AT_MOST (None: not measured)."""
    met: dict[str, bool | None] = {k: (result[k] >= least if result[k] is not None else None)
                                   for k, least in GOALS.items()}
    met.update({k: (result[k] <= most if result[k] is not None else None) for k, most in GOALS_AT_MOST.items()})
    return met


def write_docs(result: dict[str, Any], docs: Path) -> None:
    """docs/benchmarks.json, and the generated table between the markers of our section of benchmarks.md;
    the verdicts are taken again against today's goals (an earlier run's JSON may predate them)."""
    result = {**result, "goals_met": goals_met(result)}
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "benchmarks.json").write_text(json.dumps(result, indent=2) + "\n")
    md = docs / "benchmarks.md"
    text = md.read_text() if md.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{table(result)}{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n{SECTION_TITLE}\n\n{block}\n"
    md.write_text(text)


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        value = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{value}{unit}"


def _mb(n: int | None) -> float | None:
    return n / 1e6 if n is not None else None


def table(r: dict[str, Any]) -> str:
    """The markdown table of one run (generated: edit report.py, not the doc)."""
    ds = r["dataset"]
    m = r["machine"]
    big = f"{ds['big_file_bytes'] / 2**30:g} GiB" if ds["big_file_bytes"] >= 2**30 else f"{ds['big_file_bytes'] >> 20} MiB"
    def goal(k: str) -> str:
        """'(>= 1.5x: met)': the goal of ratio K and whether this run met it."""
        bound = f">= {GOALS[k]:.3g}" if k in GOALS else f"<= {GOALS_AT_MOST[k]:.3g}"
        return f"({bound}: {({True: 'met', False: 'missed', None: 'n/a'})[r['goals_met'][k]]})"
    rows = [
        ("measurement", "eotdlfs mount", "rclone mount (--vfs-cache-mode full)", "other peer", "eotdlfs vs peer (goal)"),
        (f"cold sequential read, {big} (MB/s)", _fmt(r["eotdlfs_cold_seq_MBps"]), _fmt(r["rclone_cold_seq_MBps"]),
         f"curl from our server {_fmt(r['curl_server_MBps'])}; from nginx {_fmt(r['curl_nginx_MBps'])}",
         f"{_fmt(r['cold_vs_curl'])} of curl {goal('cold_vs_curl')}; "
         f"{_fmt(r['cold_vs_rclone'])}x rclone {goal('cold_vs_rclone')}"),
        (f"warm sequential re-read, {big} (MB/s)", _fmt(r["eotdlfs_warm_seq_MBps"]), _fmt(r["rclone_warm_seq_MBps"]), "",
         f"{_fmt(r['warm_vs_rclone'])}x rclone {goal('warm_vs_rclone')}"),
        (f"`ls -lR` of {ds['small_files']:,} files, fresh mount (s)", _fmt(r["eotdlfs_ls_lR_10k_s"]),
         _fmt(r["rclone_ls_lR_10k_s"]), "",
         f"{_fmt(r['ls_speedup_vs_rclone'])}x rclone's speed {goal('ls_speedup_vs_rclone')}"),
        ("`ls -lR` again, same mount (s)", _fmt(r["eotdlfs_ls_lR_10k_warm_s"]), _fmt(r["rclone_ls_lR_10k_warm_s"]), "", ""),
        ("random 4 KiB reads, fresh mount (IOPS)", _fmt(r["eotdlfs_rand4k_iops"]), _fmt(r["rclone_rand4k_iops"]), "",
         f"{_fmt(r['rand4k_vs_rclone'])}x {goal('rand4k_vs_rclone')}"),
        (f"first 64 KiB of the {big} file, fresh mount (ms)", _fmt(r["eotdlfs_first_byte_ms"]),
         _fmt(r["rclone_first_byte_ms"]),
         f"download everything first (`eotdlfs get`): {_fmt(r['download_all_first_file_s'])} s",
         f"{_fmt(r['first_byte_speedup_vs_download_all'])}x sooner"),
        (f"GeoTIFF 512x512 window read, MB fetched (file: {_fmt(_mb(ds['geotiff_bytes']))} MB)",
         _fmt(_mb(r["eotdlfs_geotiff_window_bytes_fetched"])), _fmt(_mb(r["rclone_geotiff_window_bytes_fetched"])),
         "", ""),
        (f"{r['plan_cog_windows']} random 512x512 COG windows, cold (s / MB fetched)",
         f"{_fmt(r['eotdlfs_cog_windows_s'])} / {_fmt(_mb(r['eotdlfs_cog_windows_bytes_fetched']))}",
         f"{_fmt(r['rclone_cog_windows_s'])} / {_fmt(_mb(r['rclone_cog_windows_bytes_fetched']))}",
         f"GDAL /vsicurl/ {_fmt(r['vsicurl_cog_windows_s'])} / {_fmt(_mb(r['vsicurl_cog_windows_bytes_fetched']))}",
         f"{_fmt(r['cog_speed_vs_vsicurl'])}x vsicurl's speed {goal('cog_speed_vs_vsicurl')}; "
         f"{_fmt(r['cog_bytes_vs_vsicurl'])}x its bytes {goal('cog_bytes_vs_vsicurl')}"),
        ("same windows, second process, same mount (MB fetched)",
         _fmt(_mb(r["eotdlfs_cog_windows_again_bytes_fetched"])), _fmt(_mb(r["rclone_cog_windows_again_bytes_fetched"])),
         "", ""),
        (f"4 processes x {r['plan_cog_small_windows']} random 256x256 windows, cold (s / MB fetched)",
         f"{_fmt(r['eotdlfs_cog_4x_windows_s'])} / {_fmt(_mb(r['eotdlfs_cog_4x_windows_bytes_fetched']))}",
         f"{_fmt(r['rclone_cog_4x_windows_s'])} / {_fmt(_mb(r['rclone_cog_4x_windows_bytes_fetched']))}",
         f"GDAL /vsicurl/ {_fmt(r['vsicurl_cog_4x_windows_s'])} / {_fmt(_mb(r['vsicurl_cog_4x_windows_bytes_fetched']))}",
         f"{_fmt(r['cog_4x_speed_vs_vsicurl'])}x vsicurl's speed"),
        ("through `eotdl://` (fsspec, no mount): the same COG windows (s / MB fetched)",
         f"{_fmt(r['eotdl_fsspec_cog_windows_s'])} / {_fmt(_mb(r['eotdl_fsspec_cog_windows_bytes_fetched']))}", "",
         f"GDAL /vsicurl/ {_fmt(r['vsicurl_cog_windows_s'])} / {_fmt(_mb(r['vsicurl_cog_windows_bytes_fetched']))}",
         f"{_fmt(r['fsspec_cog_time_vs_vsicurl'])}x vsicurl's time {goal('fsspec_cog_time_vs_vsicurl')}; "
         f"{_fmt(r['fsspec_cog_bytes_vs_vsicurl'])}x its bytes {goal('fsspec_cog_bytes_vs_vsicurl')}"),
        ("... same windows, second process (MB fetched) / 1 MiB at an offset (MB fetched)",
         f"{_fmt(_mb(r['eotdl_fsspec_cog_windows_again_bytes_fetched']))} / "
         f"{_fmt(_mb(r['eotdl_fsspec_1MiB_at_offset_bytes_fetched']))}", "", "",
         "1 MiB at an offset: <= 8 MiB ("
         f"{({True: 'met', False: 'missed', None: 'n/a'})[r['goals_met']['eotdl_fsspec_1MiB_at_offset_bytes_fetched']]})"),
        (f"first 64 KiB of a small file in a version of {ds['small_files']:,}, fresh mount (ms)",
         _fmt(r["eotdlfs_first_small_ms"]), _fmt(r["rclone_first_small_ms"]), "",
         f"{_fmt(r['first_small_vs_rclone'])}x {goal('first_small_vs_rclone')}"),
        (f"`cp -r` of {min(ds['small_files'], 2000):,} small files to /dev/shm, fresh mount (files/s)",
         _fmt(r["eotdlfs_cp_r_small_files_per_s"]), _fmt(r["rclone_cp_r_small_files_per_s"]), "",
         f"{_fmt(r['cp_r_small_vs_rclone'])}x"),
        (f"through {r['plan_delay_ms']} ms each way: first 64 KiB (ms)", _fmt(r["eotdlfs_delayed_first_byte_ms"]),
         _fmt(r["rclone_delayed_first_byte_ms"]), "", f"{_fmt(r['delayed_first_byte_vs_rclone'])}x"),
        ("... random 512x512 windows (s)", _fmt(r["eotdlfs_delayed_cog_windows_s"]),
         _fmt(r["rclone_delayed_cog_windows_s"]), f"GDAL /vsicurl/ {_fmt(r['vsicurl_delayed_cog_windows_s'])}",
         f"{_fmt(r['delayed_cog_speed_vs_vsicurl'])}x vsicurl's speed"),
        ("... the same windows through `eotdl://` (s)", _fmt(r["eotdl_fsspec_delayed_cog_windows_s"]), "",
         f"GDAL /vsicurl/ {_fmt(r['vsicurl_delayed_cog_windows_s'])}",
         f"{_fmt(r['delayed_fsspec_cog_time_vs_vsicurl'])}x vsicurl's time"),
        ("... cold sequential (MB/s)", _fmt(r["eotdlfs_delayed_cold_seq_MBps"]), _fmt(r["rclone_delayed_cold_seq_MBps"]),
         "", f"{_fmt(r['delayed_cold_vs_rclone'])}x"),
        ("peak RSS of the mount process (MB)", _fmt(r["eotdlfs_rss_peak_MB"]), _fmt(r["rclone_rss_peak_MB"]), "", ""),
        ("CPU of the mount process per GB read cold (s)", _fmt(r.get("eotdlfs_cold_seq_cpu_s_per_GB")),
         _fmt(r.get("rclone_cold_seq_cpu_s_per_GB")), "", ""),
        (f"staging: `cp` of the {big} file in (MB/s) / `eotdlfs flush` (s)",
         f"{_fmt(r['eotdlfs_staging_copy_in_MBps'])} / {_fmt(r['eotdlfs_staging_flush_s'])}", "", "", ""),
    ]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "---|" * len(rows[0]))
    caption = (
        f"Run of {r['date']}{' (--quick)' if r['quick'] else ''}"
        f"{' (under py-spy: slower)' if r.get('profiled') else ''}: median of {r['repeats']} repetition(s), "
        f"{m['nproc']} cores, {m['memory_GB']} GB, Linux {m['kernel']}, Python {m['python']}, "
        f"{m['rclone']}, {m['nginx']}; load average at the end {m['loadavg_at_end']}; took {r['elapsed_s']} s. "
        "MB = 10^6 bytes. Produced by `scripts/bench --write-docs`; the raw figures are in `docs/benchmarks.json`."
    )
    errors = "".join(f"\n- {k} failed: {v}" for k, v in r["errors"].items())
    notes = "".join(f"\n- {n}" for n in r["notes"])
    return "\n".join(lines) + f"\n\n{caption}\n{errors}{notes}\n"
