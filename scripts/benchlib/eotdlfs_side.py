"""eotdlfs as the benchmark runs it: the server and the mount as child processes, ingest and get as commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from benchlib.processes import ForegroundMount, LocalHttpServer, free_port

BENCH_USER = "bench-user"


def eotdlfs_command() -> list[str]:
    """`eotdlfs` run by the same interpreter as the bench (the project's venv when started by scripts/bench)."""
    return [sys.executable, "-m", "eotdlfs"]


def isolated_env(home: Path, api_url: str | None = None, token: str | None = None) -> dict[str, str]:
    """The environment of every eotdlfs child: its own HOME and XDG dirs, so no user config leaks in."""
    env = dict(os.environ)
    for var in ("EOTDL_API_URL", "EOTDL_TOKEN", "EOTDL_API_KEY"):
        env.pop(var, None)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_CACHE_HOME=str(home / "cache"),
               XDG_DATA_HOME=str(home / "data"))
    if api_url:
        env["EOTDL_API_URL"] = api_url
    if token:
        env["EOTDL_TOKEN"] = token
    return env


class EotdlfsServer(LocalHttpServer):
    """`eotdlfs serve` on a free 127.0.0.1 port, a separate process so it does not share the bench's GIL."""

    def __init__(self, root: Path, env: dict[str, str], log: Path):
        port = free_port()
        argv = [*eotdlfs_command(), "serve", "--root", str(root), "--host", "127.0.0.1", "--port", str(port)]
        super().__init__(argv, port, log, env)

    def get_json(self, path: str) -> object:
        with urllib.request.urlopen(self.url + path, timeout=30) as resp:
            return json.load(resp)

    def bytes_sent(self) -> int:
        return int(self.get_json("eotdlfs/stats")["bytes_sent"])

    def download_url(self, dataset: str, path: str) -> str:
        record = self.get_json("datasets?" + urllib.parse.urlencode({"name": dataset}))
        return f"{self.url}datasets/{record['id']}/download/{urllib.parse.quote(path)}"


def issue_token(root: Path) -> str:
    from eotdlfs.server.auth import issue_token as issue

    return issue(root, BENCH_USER)


def run_command(args: list[str], env: dict[str, str], log: Path, timeout_s: float) -> float:
    """Run `eotdlfs ARGS` to completion; its wall time in seconds (fails loudly, log kept)."""
    start = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.run([*eotdlfs_command(), *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=timeout_s)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"eotdlfs {' '.join(args)} exited {proc.returncode}; see {log}")
    return elapsed


def eotdlfs_mount(mnt: Path, api_url: str, cache_dir: Path, env: dict[str, str], log: Path) -> ForegroundMount:
    """`eotdlfs mount --foreground` as our child (so we know the PID whose memory we measure)."""
    argv = [*eotdlfs_command(), "mount", str(mnt), "--api-url", api_url, "--cache-dir", str(cache_dir), "--foreground"]
    return ForegroundMount(argv, mnt, cache_dir, log, env)
