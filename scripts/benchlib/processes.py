"""Starting and stopping the benchmark's servers and mounts: by PID and fusermount, never by name."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Sequence


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll CHECK until true; fail after TIMEOUT_S, or at once if PROC died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode} before it was ready")
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not ready after {timeout_s:.0f} s")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def is_mounted(mnt: Path) -> bool:
    target = os.path.realpath(mnt)
    with open("/proc/mounts") as f:
        return any(line.split()[1] == target for line in f)


def unmount(mnt: Path) -> None:
    """Unmount MNT if it is mounted (lazily if busy), whoever serves it."""
    if not is_mounted(mnt):
        return
    for cmd in (["fusermount3", "-u", str(mnt)], ["fusermount", "-u", str(mnt)], ["fusermount3", "-u", "-z", str(mnt)]):
        try:
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
        except (FileNotFoundError, subprocess.TimeoutExpired):
            continue
        if not is_mounted(mnt):
            return


class ManagedProcess:
    """A child in its own session (Ctrl-C reaches only the bench, which then stops it in order)."""

    def __init__(self, argv: Sequence[str], log: Path, env: dict[str, str] | None = None):
        self.argv = list(argv)
        self._log = open(log, "ab")
        self.proc = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after TIMEOUT_S; always reaps the child."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout_s)
        self._log.close()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time PID has used so far (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def peak_rss_mb(pid: int) -> float | None:
    """The peak resident set (VmHWM) of PID so far, in MB (10^6 bytes)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        return None
    return None


class ForegroundMount:
    """A FUSE daemon run in the foreground as our child; ready once MNT shows in /proc/mounts."""

    def __init__(self, argv: Sequence[str], mnt: Path, cache_dir: Path | None, log: Path, env: dict[str, str] | None = None):
        self.mnt = mnt
        self.cache_dir = cache_dir  # None for a daemon with no cache (the null filesystem)
        mnt.mkdir(parents=True, exist_ok=True)
        self._proc = ManagedProcess(argv, log, env)
        try:
            wait_until(lambda: is_mounted(mnt), 30, " ".join(argv[:3]), self._proc.proc)
        except BaseException:
            self.stop()
            raise

    @property
    def pid(self) -> int:
        return self._proc.pid

    def stop(self) -> None:
        # Unmount first so the daemon exits cleanly; unmount again in case it died mid-way.
        unmount(self.mnt)
        self._proc.stop()
        unmount(self.mnt)


class LocalHttpServer:
    """An HTTP server run as our child on PORT of 127.0.0.1; ready once the port accepts connections."""

    def __init__(self, argv: Sequence[str], port: int, log: Path, env: dict[str, str] | None = None):
        self.port = port
        self._proc = ManagedProcess(argv, log, env)
        try:
            wait_until(lambda: port_open(port), 30, Path(argv[0]).name, self._proc.proc)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    @property
    def pid(self) -> int:
        return self._proc.pid

    def stop(self) -> None:
        self._proc.stop()
