"""`scripts/bench`: eotdlfs side by side with curl, nginx, rclone mount and download-all, as one JSON object.

Everything runs on 127.0.0.1 in a temp folder: a generated dataset, nginx serving it
from disk, `eotdlfs serve` with the dataset ingested, then each peer reads the same
bytes. Every mount and server started is stopped (by PID and fusermount) on the way
out, on errors, on Ctrl-C and SIGTERM, and by a watchdog past --time-limit.
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import eotdlfs
from benchlib import eotdlfs_side, report
from benchlib.dataset import DatasetSpec, generate
from benchlib.peers import Nginx
from benchlib.runner import Bench, Plan, Watchdog
from benchlib.suites import (
    run_curl_nginx, run_curl_server, run_delayed, run_download_all, run_eotdl_fsspec, run_eotdlfs_mounts,
    run_rclone_mounts, run_staging, run_vsicurl,
)

DATASET_NAME = "bench-data"
FULL = (DatasetSpec(big_bytes=1 << 30, small_count=10_000, small_bytes=4096, geotiff_bytes=400 << 20),
        Plan(repeats=3, rand_count=2000, rand_time_limit_s=30, time_limit_s=4500))
QUICK = (DatasetSpec(big_bytes=64 << 20, small_count=1000, small_bytes=4096, geotiff_bytes=24 << 20),
         Plan(repeats=1, rand_count=300, rand_time_limit_s=3, time_limit_s=600, cog_windows=20, cog_small_windows=10))
DOCS = Path(__file__).resolve().parents[2] / "docs"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small dataset, one repetition: a smoke test (< 60 s)")
    p.add_argument("--repeat", type=int, help="repetitions per measurement (median is reported)")
    p.add_argument("--workdir", type=Path, help="where to put everything (default: a new temp folder, removed after)")
    p.add_argument("--write-docs", action="store_true", help="write docs/benchmarks.json and the table in docs/benchmarks.md")
    p.add_argument("--profile", type=Path, help="record py-spy profiles of the mount and server into this folder")
    p.add_argument("--time-limit", type=float, help="stop everything after this many seconds")
    p.add_argument("--only", help="run only these groups of measurements (comma-separated, e.g. vsicurl,eotdlfs_mount)")
    p.add_argument("--steps", help="in the mount groups, run only these steps (comma-separated, e.g. first_small)")
    p.add_argument("--geotiff-mb", type=int, help="size of the COG's full-resolution band, in MiB")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="run nothing: write the docs from the JSON output of an earlier run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        report.write_docs(json.loads(args.render.read_text()), DOCS)
        return 0
    # As installed: with PYTHONDONTWRITEBYTECODE set (as on our machines) a module edited since its
    # .pyc was written is compiled again by every process a step starts, 2-4 ms each of a reader's start.
    compileall.compile_dir(Path(eotdlfs.__file__).parent, quiet=1)
    spec, plan = QUICK if args.quick else FULL
    if args.repeat:
        plan = plan._replace(repeats=args.repeat)
    if args.geotiff_mb is not None:
        spec = dataclasses.replace(spec, geotiff_bytes=args.geotiff_mb << 20)
    if args.only:
        plan = plan._replace(only=tuple(args.only.split(",")))
    if args.steps:
        plan = plan._replace(steps=tuple(args.steps.split(",")))
    if args.time_limit:
        plan = plan._replace(time_limit_s=args.time_limit)
    own_workdir = args.workdir is None
    work = Path(tempfile.mkdtemp(prefix="eotdlfs-bench-")) if own_workdir else args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    bench = Bench(work, plan, profile_dir=args.profile)
    try:
        with Watchdog(plan.time_limit_s, bench):
            _run(bench, spec)
    finally:
        bench.stop_all()
        if own_workdir:
            shutil.rmtree(work, ignore_errors=True)
    result = report.build(bench, spec, args.quick, time.monotonic() - started)
    print(json.dumps(result, indent=2))
    if args.write_docs:
        report.write_docs(result, DOCS)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    # SIGTERM takes the same way out as Ctrl-C: every finally runs, every mount is unmounted.
    raise KeyboardInterrupt(f"signal {signum}")


def _run(bench: Bench, spec: DatasetSpec) -> None:
    bench.log(f"generating the dataset in {bench.work / 'data'}")
    ds = bench.dataset = generate(bench.work / "data" / DATASET_NAME, DATASET_NAME, spec)
    if ds.geotiff_bytes is None:
        bench.notes.append(ds.note)
    nginx = bench.start(lambda: Nginx(ds.root, bench.fresh_dir("nginx")))
    eotdlfs = _start_eotdlfs(bench)
    groups: list[tuple[str, Callable[[], None]]] = [
        ("curl_nginx", lambda: run_curl_nginx(bench, nginx)),
        ("rclone", lambda: run_rclone_mounts(bench, nginx)),
    ]
    if eotdlfs is not None:
        server, env = eotdlfs
        groups[1:1] = [("curl_server", lambda: run_curl_server(bench, server)),
                       ("vsicurl", lambda: run_vsicurl(bench, server))]
        groups += [
            ("eotdlfs_mount", lambda: run_eotdlfs_mounts(bench, server, env)),
            ("eotdl_fsspec", lambda: run_eotdl_fsspec(bench, server, env)),
            ("download_all", lambda: run_download_all(bench, env)),
            ("delayed", lambda: run_delayed(bench, server, nginx, env)),
        ]
    # Repetitions interleave the peers, so a burst of load from elsewhere hits them alike.
    for rep in range(bench.plan.repeats):
        bench.log(f"repetition {rep + 1} of {bench.plan.repeats}")
        for name, run in groups:
            if name not in bench.errors and (not bench.plan.only or name in bench.plan.only):  # a group that failed once is not retried
                bench.attempt(name, run)
    if eotdlfs is not None and (not bench.plan.only or "staging" in bench.plan.only):
        bench.attempt("staging", lambda: run_staging(bench, *eotdlfs))


def _start_eotdlfs(bench: Bench) -> tuple[eotdlfs_side.EotdlfsServer, dict[str, str]] | None:
    """`eotdlfs serve` with the dataset ingested (timed), or None if that fails (the peers still run)."""
    started: list[tuple[eotdlfs_side.EotdlfsServer, dict[str, str]]] = []

    def start() -> None:
        root = bench.fresh_dir("server")
        token = eotdlfs_side.issue_token(root)
        server = bench.start(lambda: eotdlfs_side.EotdlfsServer(root, bench.env(), bench.work / "server.log"))
        env = bench.env(server.url, token)
        seconds = eotdlfs_side.run_command(["ingest", str(bench.dataset.root)], env, bench.work / "ingest.log", 1800)
        bench.record("ingest_s", seconds)
        started.append((server, env))

    bench.attempt("eotdlfs_server_and_ingest", start)
    return started[0] if started else None


if __name__ == "__main__":
    sys.exit(main())
