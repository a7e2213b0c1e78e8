"""The groups of measurements: each peer reads the same bytes, on a fresh mount and cache for every cold read."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from benchlib import eotdlfs_side, measure, windows
from benchlib.dataset import BIG_FILE, GEOTIFF_FILE, SMALL_DIR, SMALL_PER_FOLDER, small_file, write_metadata
from benchlib.delayproxy import DelayProxy
from benchlib.peers import Nginx, rclone_mount
from benchlib.processes import ForegroundMount, cpu_seconds, peak_rss_mb
from benchlib.profiling import Profiler
from benchlib.runner import Bench

STAGING_DATASET = "bench-staging"
COG_SEED = 11
ALL_STEPS = ("first_byte", "first_small", "sequential", "listing_and_window", "random_reads", "cog_windows",
             "cog_parallel", "copy_small")
COPY_SMALL_FOLDERS = 20  # of the small files' folders (100 files each): `cp -r` of 2,000 files
SHM = Path("/dev/shm")
DELAYED_STEPS = ("first_byte", "cog_windows", "sequential")


def run_curl_nginx(bench: Bench, nginx: Nginx) -> None:
    bench.record("curl_nginx_MBps", measure.curl_MBps(nginx.url + BIG_FILE))


def run_curl_server(bench: Bench, server: eotdlfs_side.EotdlfsServer) -> None:
    bench.record("curl_server_MBps", measure.curl_MBps(server.download_url(bench.dataset.name, BIG_FILE)))


def run_download_all(bench: Bench, env: dict[str, str]) -> None:
    """What the official client's flow gives: the whole version downloaded before any file is there."""
    ds = bench.dataset
    out = bench.fresh_dir("get")
    try:
        seconds = eotdlfs_side.run_command(["get", ds.name, "--out", str(out)], env, bench.work / "get.log", 1800)
        found = list(out.rglob(BIG_FILE))
        if len(found) != 1 or found[0].stat().st_size != ds.big_bytes:
            raise RuntimeError(f"eotdlfs get did not produce {BIG_FILE} of {ds.big_bytes} bytes under {out}")
        bench.record("download_all_first_file_s", seconds)
    finally:
        bench.drop(out)


def run_vsicurl(bench: Bench, server: eotdlfs_side.EotdlfsServer, base_url: str | None = None,
                peer: str = "vsicurl") -> None:
    """GDAL reading the COG straight from our server's download URL (through BASE_URL if given):
    the peer to beat on random windows."""
    ds = bench.dataset
    if ds.geotiff is None:
        return
    url = server.download_url(ds.name, GEOTIFF_FILE)
    target = windows.vsicurl(url.replace(server.url, base_url or server.url, 1))
    _cog_windows(bench, peer, target, server.bytes_sent, again=False)
    if base_url is None:
        _cog_parallel(bench, peer, target, server.bytes_sent)


def _windows(bench: Bench, key: str, target: str, bytes_sent: Callable[[], int], count: int, size: int,
             readers: int = 1, env: dict[str, str] | None = None,
             read_requests: Callable[[], int | None] = lambda: None) -> None:
    """Time and bytes fetched of the windows; with READ_REQUESTS (a mount's count), also how many
    read requests the kernel sent the mount for them."""
    before, requests_before = bytes_sent(), read_requests()
    bench.record(f"{key}_s", windows.read_windows(target, count, size, COG_SEED, readers, env=env))
    time.sleep(0.5)  # let read-ahead that the reads started show up in the count
    bench.record(f"{key}_bytes_fetched", bytes_sent() - before)
    requests_after = read_requests()
    if requests_before is not None and requests_after is not None:
        bench.record(f"{key}_read_requests", requests_after - requests_before)


def _cog_windows(bench: Bench, peer: str, target: str, bytes_sent: Callable[[], int], again: bool = True,
                 env: dict[str, str] | None = None, read_requests: Callable[[], int | None] = lambda: None) -> None:
    """Random 512x512 windows, cold; with AGAIN, the same windows by a second process after."""
    _windows(bench, f"{peer}_cog_windows", target, bytes_sent, bench.plan.cog_windows, 512, env=env,
             read_requests=read_requests)
    if again:
        _windows(bench, f"{peer}_cog_windows_again", target, bytes_sent, bench.plan.cog_windows, 512, env=env,
                 read_requests=read_requests)


def _mount_read_requests(m: ForegroundMount) -> int | None:
    """The read requests an eotdlfs mount has had (`status.json` `fuse`; reading it costs two of
    its own, status.json being read through FUSE too); None for another mount."""
    try:
        return int(json.loads((m.mnt / ".eotdlfs" / "status.json").read_text())["fuse"]["reads"])
    except (OSError, ValueError, KeyError):
        return None


def _cog_parallel(bench: Bench, peer: str, target: str, bytes_sent: Callable[[], int],
                  env: dict[str, str] | None = None) -> None:
    _windows(bench, f"{peer}_cog_4x_windows", target, bytes_sent, bench.plan.cog_small_windows, 256, readers=4,
             env=env)


def run_eotdl_fsspec(bench: Bench, server: eotdlfs_side.EotdlfsServer, env: dict[str, str],
                     api_url: str | None = None, peer: str = "eotdl_fsspec") -> None:
    """eotdl:// without a mount: rasterio through fsspec on vsicurl's windows (cold, then a second
    process on the warm cache, then 4 processes on a fresh one), and 1 MiB read at an offset of
    the big file; each cold run on an empty user cache dir (the default cache of eotdl://). Through
    API_URL (a delaying proxy) only the cold windows, as PEER."""
    ds = bench.dataset
    version = f"eotdl://datasets/{ds.name}/v1"
    homes = []

    def fresh_env() -> dict[str, str]:
        homes.append(bench.fresh_dir("fsspec-cache"))
        return {**env, "EOTDL_API_URL": api_url or server.url, "XDG_CACHE_HOME": str(homes[-1])}

    try:
        if api_url is not None:
            if ds.geotiff is not None:
                _cog_windows(bench, peer, f"{version}/{GEOTIFF_FILE}", server.bytes_sent, again=False, env=fresh_env())
            return
        if ds.geotiff is not None:
            _cog_windows(bench, "eotdl_fsspec", f"{version}/{GEOTIFF_FILE}", server.bytes_sent, env=fresh_env())
            _cog_parallel(bench, "eotdl_fsspec", f"{version}/{GEOTIFF_FILE}", server.bytes_sent, env=fresh_env())
        before = server.bytes_sent()
        seconds = measure.fsspec_range_read_s(f"{version}/{BIG_FILE}", ds.big_bytes // 2 + 12345, 1 << 20,
                                              fresh_env())
        bench.record("eotdl_fsspec_1MiB_at_offset_s", seconds)
        bench.record("eotdl_fsspec_1MiB_at_offset_bytes_fetched", server.bytes_sent() - before)
    finally:
        for home in homes:
            bench.drop(home)


def run_rclone_mounts(bench: Bench, nginx: Nginx, base_url: str | None = None, peer: str = "rclone",
                      steps: tuple[str, ...] = ALL_STEPS) -> None:
    def mount() -> ForegroundMount:
        cache = bench.fresh_dir("rclone-cache")
        return rclone_mount(base_url or nginx.url, bench.fresh_dir("rclone-mnt"), cache,
                            cache.parent / f"{cache.name}.log")

    _run_mount_reads(bench, peer, mount, lambda m: m.mnt, nginx.bytes_sent, steps=steps)


def run_eotdlfs_mounts(bench: Bench, server: eotdlfs_side.EotdlfsServer, env: dict[str, str],
                       api_url: str | None = None, peer: str = "eotdlfs", steps: tuple[str, ...] = ALL_STEPS) -> None:
    def mount() -> ForegroundMount:
        cache = bench.fresh_dir("eotdlfs-cache")
        return eotdlfs_side.eotdlfs_mount(
            bench.fresh_dir("eotdlfs-mnt"), api_url or server.url, cache, env, cache.parent / f"{cache.name}.log"
        )

    version = lambda m: m.mnt / "datasets" / bench.dataset.name / "v1"  # noqa: E731
    _run_mount_reads(bench, peer, mount, version, server.bytes_sent, profile_server_pid=server.pid, steps=steps)


def run_delayed(bench: Bench, server: eotdlfs_side.EotdlfsServer, nginx: Nginx, env: dict[str, str]) -> None:
    """eotdlfs, rclone and vsicurl through a proxy adding `plan.delay_s` each way: what round
    trips cost (first byte, random windows, cold sequential)."""
    delay = bench.plan.delay_s
    to_server = bench.start(lambda: DelayProxy(server.port, delay, bench.work / "delay-server.log"))
    to_nginx = bench.start(lambda: DelayProxy(nginx.port, delay, bench.work / "delay-nginx.log"))
    try:
        run_eotdlfs_mounts(bench, server, env, api_url=to_server.url, peer="eotdlfs_delayed", steps=DELAYED_STEPS)
        run_rclone_mounts(bench, nginx, base_url=to_nginx.url, peer="rclone_delayed", steps=DELAYED_STEPS)
        run_vsicurl(bench, server, base_url=to_server.url, peer="vsicurl_delayed")
        run_eotdl_fsspec(bench, server, env, api_url=to_server.url, peer="eotdl_fsspec_delayed")
    finally:
        bench.stop(to_nginx)
        bench.stop(to_server)


def _run_mount_reads(
    bench: Bench,
    peer: str,
    make_mount: Callable[[], ForegroundMount],
    root_of: Callable[[ForegroundMount], Path],
    bytes_sent: Callable[[], int],
    profile_server_pid: int | None = None,
    steps: tuple[str, ...] = ALL_STEPS,
) -> None:
    """One repetition of the same reads for every mount; each starts from a fresh mount and an empty cache."""
    ds = bench.dataset
    plan = bench.plan

    def on_fresh_mount(step: Callable[[ForegroundMount, Path], None]) -> None:
        m = bench.start(make_mount)
        try:
            step(m, root_of(m))
        finally:
            bench.stop(m)
            bench.drop(m.cache_dir)

    def first_byte(m: ForegroundMount, root: Path) -> None:
        bench.record(f"{peer}_first_byte_ms", measure.first_byte_ms(root / BIG_FILE))

    def sequential(m: ForegroundMount, root: Path) -> None:
        cpu_before = cpu_seconds(m.pid)
        with Profiler(bench.profile_dir, f"{peer}-cold-seq", [m.pid, profile_server_pid]):
            bench.record(f"{peer}_cold_seq_MBps", measure.seq_read_MBps(root / BIG_FILE, ds.big_bytes))
        cpu_after = cpu_seconds(m.pid)
        if cpu_before is not None and cpu_after is not None:
            bench.record(f"{peer}_cold_seq_cpu_s_per_GB", (cpu_after - cpu_before) / (ds.big_bytes / 1e9))
        bench.record(f"{peer}_rss_peak_MB", peak_rss_mb(m.pid))
        with Profiler(bench.profile_dir, f"{peer}-warm-seq", [m.pid]):
            bench.record(f"{peer}_warm_seq_MBps", measure.seq_read_MBps(root / BIG_FILE, ds.big_bytes))

    def listing_and_window(m: ForegroundMount, root: Path) -> None:
        with Profiler(bench.profile_dir, f"{peer}-ls", [m.pid]):
            bench.record(f"{peer}_ls_lR_10k_s", measure.ls_lR_s(root / SMALL_DIR, ds.small_count))
        bench.record(f"{peer}_ls_lR_10k_warm_s", measure.ls_lR_s(root / SMALL_DIR, ds.small_count))
        if ds.geotiff is not None:
            before = bytes_sent()
            measure.geotiff_window_read(root / GEOTIFF_FILE)
            time.sleep(0.5)  # let read-ahead that the window read started show up in the count
            bench.record(f"{peer}_geotiff_window_bytes_fetched", bytes_sent() - before)

    def random_reads(m: ForegroundMount, root: Path) -> None:
        with Profiler(bench.profile_dir, f"{peer}-rand4k", [m.pid]):
            bench.record(f"{peer}_rand4k_iops",
                         measure.rand4k_iops(root / BIG_FILE, ds.big_bytes, plan.rand_count, plan.rand_time_limit_s))

    def first_small(m: ForegroundMount, root: Path) -> None:
        # In a version of many files: what the first open costs before any listing is known.
        bench.record(f"{peer}_first_small_ms", measure.first_byte_ms(root / SMALL_DIR / small_file(ds.small_count // 2)))

    def cog_windows(m: ForegroundMount, root: Path) -> None:
        if ds.geotiff is not None:
            with Profiler(bench.profile_dir, f"{peer}-cog-windows", [m.pid, profile_server_pid]):
                _cog_windows(bench, peer, str(root / GEOTIFF_FILE), bytes_sent,
                             read_requests=lambda: _mount_read_requests(m))

    def cog_parallel(m: ForegroundMount, root: Path) -> None:
        if ds.geotiff is not None:
            _cog_parallel(bench, peer, str(root / GEOTIFF_FILE), bytes_sent)

    def copy_small(m: ForegroundMount, root: Path) -> None:
        # A walker over small files (`cp -r` goes by inode number), as users copy a folder of chips.
        count = min(ds.small_count, COPY_SMALL_FOLDERS * SMALL_PER_FOLDER)
        folders = sorted({root / SMALL_DIR / small_file(i).split("/")[0] for i in range(count)})
        # Into memory when it can: this machine's disk creates ~1,100 files/s, which bounded both peers.
        out = Path(tempfile.mkdtemp(prefix="bench-copy-small-", dir=SHM if SHM.is_dir() else bench.work))
        try:
            bench.record(f"{peer}_cp_r_small_files_per_s", measure.cp_r_files_per_s(folders, out, count))
        finally:
            bench.drop(out)

    named = {step.__name__: step for step in (first_byte, first_small, sequential, listing_and_window, random_reads,
                                              cog_windows, cog_parallel, copy_small)}
    for name in steps:
        if not plan.steps or name in plan.steps:
            on_fresh_mount(named[name])


def run_staging(bench: Bench, server: eotdlfs_side.EotdlfsServer, env: dict[str, str]) -> None:
    """Copy the big file into the writable staging folder, then flush it as a new dataset version."""
    ds = bench.dataset
    cache = bench.fresh_dir("staging-cache")
    m = bench.start(lambda: eotdlfs_side.eotdlfs_mount(
        bench.fresh_dir("staging-mnt"), server.url, cache, env, cache.parent / f"{cache.name}.log"))
    try:
        target = m.mnt / "staging" / "datasets" / STAGING_DATASET
        target.mkdir()
        write_metadata(target, STAGING_DATASET)  # a new dataset needs its four fields
        start = time.perf_counter()
        subprocess.run(["cp", str(ds.big), str(target / BIG_FILE)], check=True, timeout=1800)
        bench.record("eotdlfs_staging_copy_in_MBps", ds.big_bytes / (time.perf_counter() - start) / measure.MB)
        bench.record("eotdlfs_staging_flush_s",
                     eotdlfs_side.run_command(["flush", str(target)], env, bench.work / "flush.log", 1800))
    finally:
        bench.stop(m)
        bench.drop(cache)
