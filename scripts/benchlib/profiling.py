"""Optional py-spy profiles of the mount and server while one measurement runs (`scripts/bench --profile DIR`)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Sequence


def py_spy_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "py-spy"
    return str(beside_python) if beside_python.exists() else shutil.which("py-spy")


class Profiler:
    """Samples each PID with `py-spy record --format raw` (collapsed stacks) for the length of a `with`."""

    def __init__(self, out_dir: Path | None, name: str, pids: Sequence[int | None]):
        self._procs: list[subprocess.Popen] = []
        binary = py_spy_binary()
        if out_dir is None or binary is None:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        for pid in pids:
            if pid is None:
                continue
            out = out_dir / f"{name}-{pid}.txt"
            self._procs.append(subprocess.Popen(
                [binary, "record", "--pid", str(pid), "--format", "raw", "--output", str(out),
                 "--rate", "200", "--nonblocking", "--threads"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            ))

    def __enter__(self) -> "Profiler":
        return self

    def __exit__(self, *exc: object) -> None:
        # SIGINT makes py-spy write its output and exit.
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self._procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
