"""Optional py-spy profiles of the mount and server while one measurement runs (`scripts/bench --profile DIR`)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Sequence


def py_spy_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "py-spy"
    return str(beside_python) if beside_python.exists() else shutil.which("py-spy")


class Profiler:
    """Samples each PID with `py-spy record --format raw` (collapsed stacks) for the length of a `with`."""

    def __init__(self, out_dir: Path | None, name: str, pids: Sequence[int | None]):
        self._procs: list[subprocess.Popen] = []
        self._outputs: list[Path] = []
        binary = py_spy_binary()
        if out_dir is None or binary is None:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        for pid in pids:
            if pid is None:
                continue
            out = out_dir / f"{name}-{pid}.txt"
            self._outputs.append(out)
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
        for out in self._outputs:
            if out.exists():
                out.with_suffix(".summary.txt").write_text(summarize(out))


def summarize(raw: Path, top: int = 20) -> str:
    """The frames where samples were taken (self) and the frames they were under (inclusive), as % of samples."""
    own: Counter[str] = Counter()
    under: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")[1:]  # the first is the thread
        n = int(count)
        total += n
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            under[frame] += n
    lines = [f"{raw.name}: {total} samples"]
    for title, counter in (("self", own), ("inclusive", under)):
        lines.append(f"-- {title}")
        lines += [f"{100 * n / max(total, 1):5.1f}%  {frame}" for frame, n in counter.most_common(top)]
    return "\n".join(lines) + "\n"
