"""What a flush ships, on real mounts against a real server: final names only, carries instead of bytes, names checked."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.client.helpers import cli_env
from tests.staging.test_mount_staging import KIND, flush_cli, publish_and_mount, published_versions, version_files

STATUS_WAIT_S = 30.0


def wait_for_flush_message(mount, words: str) -> None:
    """Until the mount's status shows a flush message containing WORDS (bounded)."""
    deadline = time.monotonic() + STATUS_WAIT_S
    while time.monotonic() < deadline:
        if any(words in (r.get("message") or "") for r in mount.status()["staging"]["records"]):
            return
        time.sleep(0.05)
    raise AssertionError(f"no flush message with {words!r}: {mount.status()['staging']}")


def test_a_file_renamed_after_its_writer_closed_is_published_under_its_final_name(tmp_path, repo_server,
                                                                                  mount_factory, unique_name):
    """rsync's order: write `.NAME.XXXXXX`, close it, rename it to NAME; a flush waiting for it must not
    ship the temporary name (the old flush froze the tree the moment the writer closed)."""
    name = unique_name("settle")
    mount, record = publish_and_mount(tmp_path, repo_server, mount_factory, name, 2)
    temp, final = record / ".during.tif.YYh6Fy", record / "during.tif"
    env = cli_env(tmp_path, repo_server.url, repo_server.token("alice"))
    with open(temp, "wb") as writer:
        writer.write(b"rsync's bytes\n" * 1000)
        writer.flush()
        flush = subprocess.Popen([sys.executable, "-m", "eotdlfs", "flush", str(record), "--timeout", "60"],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_for_flush_message(mount, "waiting for .during.tif.YYh6Fy")
        except BaseException:
            flush.kill()
            raise
    time.sleep(0.3)  # rsync sets times and modes on the closed file, then renames it
    os.rename(temp, final)
    out, err = flush.communicate(timeout=90)
    assert flush.returncode == 0, (out, err)
    assert published_versions(repo_server, name) == [1, 2]
    files = version_files(repo_server, name, 2)
    assert "during.tif" in files and ".during.tif.YYh6Fy" not in files, sorted(files)
    assert flush_cli(tmp_path, repo_server, record).returncode == 0
    assert published_versions(repo_server, name) == [1, 2]  # nothing was left for another flush
