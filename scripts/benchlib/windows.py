"""Random raster windows read with rasterio, each reader a process of its own (as users run GDAL).

`read_windows` starts READERS processes at once (`python -m benchlib.windows`), each opening
the same file (a path on a mount, a `/vsicurl/` URL, or an `eotdl://` URL read through fsspec
as docs/guide.md does it) and reading COUNT seeded random
SIZE-square windows of band 1; the wall time until the last one is done. The same seeds
give every peer the same windows.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time

# What GDAL does for a remote file, left as it comes, except listing the file's folder on
# open (our download route has no folder to list).
VSICURL_ENV = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif"}


def vsicurl(url: str) -> str:
    return f"/vsicurl/{url}"


def read_windows(target: str, count: int, size: int, seed: int, readers: int = 1, timeout_s: float = 600,
                 env: dict[str, str] | None = None) -> float:
    """Wall seconds for READERS processes reading COUNT random SIZE-px windows each of TARGET
    (reader i uses seed SEED + i), in ENV (default: ours); fails if any reader fails."""
    env = {**(env or os.environ), **VSICURL_ENV}
    argv = [sys.executable, "-m", "benchlib.windows", target, "--count", str(count), "--size", str(size)]
    start = time.perf_counter()
    procs = [subprocess.Popen([*argv, "--seed", str(seed + i)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(readers)]
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, start + timeout_s - time.perf_counter()))
            if proc.returncode != 0:
                raise RuntimeError(f"window reader of {target} exited {proc.returncode}: {err.strip()[-500:]}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return time.perf_counter() - start


def _read(target: str, count: int, size: int, seed: int) -> None:
    import rasterio
    from rasterio.windows import Window

    rng = random.Random(seed)
    if target.startswith("eotdl://"):  # settings from EOTDL_API_URL; handed over unopened, as the guide says
        import fsspec

        target = fsspec.open(target)
    with rasterio.open(target) as src:
        for _ in range(count):
            col, row = rng.randrange(src.width - size + 1), rng.randrange(src.height - size + 1)
            data = src.read(1, window=Window(col, row, size, size))
            if data.shape != (size, size):
                raise RuntimeError(f"window ({col}, {row}) of {target} gave shape {data.shape}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchlib.windows", description=__doc__.splitlines()[0])
    p.add_argument("target", help="a file path, /vsicurl/URL or eotdl://PATH")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--size", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    args = p.parse_args(argv)
    _read(args.target, args.count, args.size, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
