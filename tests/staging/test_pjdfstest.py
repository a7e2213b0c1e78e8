"""pjdfstest, the POSIX conformance suite, inside a staged record of a mount made with `--allow-other`.

pjdfstest runs as root and acts as other uids itself (its binary's -u/-g), so the mount point lives
under a 0755 folder in /tmp (`shared_mountpoint`). The suite is built from `../shared/tools/pjdfstest`
(beside the repository, as in CI) in a temporary folder; `prove -v` runs it and its TAP lines are
counted. The test fails when fewer tests pass than the floor written in docs/staging.md, so the
documented count can only go up; its failures are grouped by class in the assertion message.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.staging.test_mount_staging import staged

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / ".." / "shared" / "tools" / "pjdfstest"
STAGING_DOC = ROOT / "docs" / "staging.md"
# The syscalls issue 14 measures; pjdfstest's other folders (chflags, mknod, granular) test BSD features.
SUITES = ("open", "mkdir", "rename", "unlink", "rmdir", "symlink", "link", "truncate", "ftruncate", "chmod",
          "utimensat", "posix_fallocate", "chown", "mkfifo")
BUILD_TIMEOUT_S = 600
RUN_TIMEOUT_S = 1800  # about 2 minutes on an idle machine; ext4 took 4.5 on 2 busy cores
FLOOR = re.compile(r"pjdfstest floor: \*\*([\d,]+)\*\*")  # of the 8,620 tests ext4 plans and passes

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="pjdfstest acts as other uids: it needs root")

_PLAN = re.compile(r"^1\.\.(\d+)")
_RESULT = re.compile(r"^(not )?ok \d+(.*)$")
_FILE = re.compile(r"^(\S+\.t) \.+")
_TRIED = re.compile(r"tried '(?:-[ugU] \S+ |-- )*(\S+) .*', expected (\S+), got (.*)$")  # skips -u UID -g GID --


@dataclass
class Counts:
    """What `prove -v` printed: tests planned (fewer than ext4's 8,620: pjdfstest skips some tests on
    file systems it does not know, and a bail-out skips the rest of a suite), passed (TODO tests count
    as passed, as prove counts them), and every failure as (suite, syscall, expected, got)."""
    planned: int = 0
    passed: int = 0
    failures: list[tuple[str, str, str, str]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return self.planned - self.passed  # a test file that died counts its unrun tests as failed

    def classes(self, top: int = 25) -> str:
        counted = Counter(self.failures).most_common(top)
        return "\n".join(f"{n:5d}  {suite:16s} {call:10s} expected {want}, got {got}"
                         for (suite, call, want, got), n in counted)


def count_prove_output(text: str) -> Counts:
    counts, suite = Counts(), "?"
    for line in text.splitlines():
        if found := _FILE.match(line):
            suite = Path(found.group(1)).parent.name
        elif found := _PLAN.match(line):
            counts.planned += int(found.group(1))
        elif found := _RESULT.match(line):
            if not found.group(1) or "# TODO" in found.group(2):
                counts.passed += 1
            else:
                tried = _TRIED.search(found.group(2))
                counts.failures.append((suite, *tried.groups()) if tried else (suite, "?", "?", found.group(2)))
    return counts


def documented_floor() -> int:
    found = FLOOR.search(STAGING_DOC.read_text())
    assert found, f"{STAGING_DOC} lost its 'pjdfstest floor: **N** of 8,620' line"
    return int(found.group(1).replace(",", ""))


@pytest.fixture(scope="module")
def pjdfstest(tmp_path_factory) -> Path:
    """A built copy of pjdfstest (the shared folder is read-only); its folder."""
    assert SOURCE.is_dir(), f"pjdfstest's source is not at {SOURCE.resolve()} (see ../shared/tools/README.md)"
    for tool in ("autoreconf", "automake", "cc", "make", "prove"):
        assert shutil.which(tool), f"{tool} is missing: run scripts/install.sh --test"
    folder = tmp_path_factory.mktemp("pjdfstest") / "src"
    shutil.copytree(SOURCE, folder)
    build = subprocess.run("autoreconf -ifs && ./configure && make pjdfstest", shell=True, cwd=folder,
                           capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    return folder


def run_pjdfstest(pjdfstest: Path, where: Path, log: Path) -> Counts:
    """The suites of SUITES run with WHERE as the working directory; prove's output kept in LOG.

    One `prove` per suite: a test file that bails out (utimensat/09.t does, when it cannot tell
    how wide st_atime is) stops only the rest of its own suite."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    with open(log, "w") as out:
        for suite in SUITES:
            subprocess.run(["prove", "-v", "-r", str(pjdfstest / "tests" / suite)], cwd=where, stdout=out,
                           stderr=subprocess.STDOUT, timeout=max(1.0, deadline - time.monotonic()))
    return count_prove_output(log.read_text(errors="replace"))


def test_count_prove_output_counts_todo_as_passed_and_unrun_as_failed():
    text = ("/x/tests/open/00.t .. \n1..4\nok 1\nnot ok 2 # TODO Linux differs\n"
            "not ok 3 - tried '-u 65534 -g 65534 open pjdfstest_1 O_CREAT 0644', expected 0, got EPERM\n"
            "/x/tests/chown/00.t .. \n1..2\nnot ok 1 - tried '-- chown x 65534 -1', expected 0, got ENOENT\nnot ok 2\n")
    counts = count_prove_output(text)
    assert (counts.planned, counts.passed, counts.failed) == (6, 2, 4)
    assert counts.failures == [("open", "open", "0", "EPERM"), ("chown", "chown", "0", "ENOENT"),
                               ("chown", "?", "?", "")]


@pytest.mark.slow  # about 4 minutes
@pytest.mark.timeout(BUILD_TIMEOUT_S + RUN_TIMEOUT_S + 120)
def test_pjdfstest_in_staging_passes_at_least_the_documented_floor(
        pjdfstest, shared_mountpoint, tmp_path, repo_server, mount_factory, unique_name):  # noqa: F811
    floor = documented_floor()
    mount = mount_factory(repo_server, ttl=1, extra_args=("--allow-other",), path=shared_mountpoint)
    record = staged(mount, unique_name("pjd"))
    record.mkdir()
    counts = run_pjdfstest(pjdfstest, record, tmp_path / "prove.log")
    print(f"pjdfstest in staging: {counts.passed} of {counts.planned} passed; failures by class:\n{counts.classes()}")
    assert counts.passed >= floor, (f"{counts.passed} of {counts.planned} passed, below the floor of {floor} "
                                    f"(docs/staging.md); failures by class:\n{counts.classes()}")
