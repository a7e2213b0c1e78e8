"""The recipes of docs/guide.md as the tests run them: each fenced block after a
`<!-- recipe: NAME -->` line, with the guide's example paths and URL swapped for the test's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from eotdlfs.fs.mount import fusermount, is_mounted, read_status, stop_process

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide.md"
_RECIPE = re.compile(r"^<!-- recipe: ([\w-]+) -->\n```[a-z]*\n(.*?)^```$", re.M | re.S)
RUN_TIMEOUT_S = 120
NAME = "s2-tiles"  # the guide's example dataset


def recipes() -> dict[str, str]:
    """NAME -> the code of every recipe in the guide."""
    return dict(_RECIPE.findall(GUIDE.read_text(encoding="utf-8")))


def recipe(name: str, places: dict[str, str]) -> str:
    """The code of recipe NAME with each example text of PLACES (e.g. '/mnt/eotdl') replaced."""
    code = recipes()[name]
    for example, actual in places.items():
        code = code.replace(example, actual)
    return code


def _env() -> dict[str, str]:
    """The environment of a user who installed eotdlfs: its commands on PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def run_shell(code: str, cwd: Path) -> str:
    """Run a bash recipe (stopping at the first failing command); its standard output."""
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"recipe failed ({done.returncode}):\n{code}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def run_python(code: str, check: str, folder: Path, env: dict[str, str] | None = None) -> str:
    """Run a Python recipe as a script, followed by CHECK (test-only lines that print what the
    test compares, under `if __name__ == "__main__":` so worker processes skip them), with ENV
    added to the environment."""
    script = folder / "recipe.py"
    script.write_text(f"{code}\n\nif __name__ == '__main__':\n    {check}\n", encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=folder, env=_env() | (env or {}), capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"recipe failed ({done.returncode}):\n{script.read_text()}\n{done.stderr}"
    return done.stdout.splitlines()[-1]


def unmount_if_left(mountpoint: Path) -> None:
    """Unmount MOUNTPOINT and stop its process, if a failed recipe left it mounted."""
    if not is_mounted(mountpoint):
        return
    try:
        pid = int(read_status(mountpoint)["pid"])
    except (OSError, ValueError, KeyError):
        pid = None
    fusermount(mountpoint, lazy=True)
    if pid is not None:
        stop_process(pid)
