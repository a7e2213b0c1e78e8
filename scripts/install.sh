#!/usr/bin/env bash
# Install eotdlfs into ./.venv with the system packages FUSE needs; `--test` adds the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
# libfuse 3 (the default binding, mfusepy; the package pulls its libfuse3-N) and libfuse 2 (fusepy, the fallback)
{ command -v fusermount3 && ldconfig -p | grep -q 'libfuse3\.so\.3'; } >/dev/null 2>&1 || need_apt+=(fuse3)
ldconfig -p 2>/dev/null | grep -q 'libfuse\.so\.2' || need_apt+=(libfuse2)
command -v rsync >/dev/null 2>&1 || need_apt+=(rsync)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)  # peer in scripts/bench
command -v rclone >/dev/null 2>&1 || need_apt+=(rclone)  # peer in scripts/bench
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ "${1:-}" = "--test" ]; then  # tests/staging/test_pjdfstest.py builds and runs pjdfstest
  command -v autoreconf >/dev/null 2>&1 || need_apt+=(autoconf)
  command -v automake >/dev/null 2>&1 || need_apt+=(automake)
  command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
  command -v make >/dev/null 2>&1 || need_apt+=(make)
  command -v prove >/dev/null 2>&1 || need_apt+=(perl)
  # the server suite on PostgreSQL (+ S3 from moto, a Python package)
  compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need_apt+=(postgresql)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
if [ "${1:-}" = "--test" ]; then
  .venv/bin/pip install -q -e '.[test]'
else
  .venv/bin/pip install -q -e .
fi
# An editable install compiles nothing; where PYTHONDONTWRITEBYTECODE is set no run ever does, and
# every `eotdlfs` command and eotdl:// script compiled the package from source (0.1-0.2 s each).
.venv/bin/python -m compileall -q eotdlfs >/dev/null
