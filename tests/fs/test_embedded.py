"""The embedded local repository and its sample dataset (the README's first command)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

from eotdlfs.fs.mount import fusermount, is_mounted, read_status, stop_process, wait_for_exit
from eotdlfs.app.embedded import SAMPLE_DIR, local_repository


def sha1(path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_local_repository_seeds_the_sample_once(tmp_path):
    from eotdlfs.client.api import ApiClient
    from eotdlfs.client.settings import Settings

    local = local_repository(tmp_path / "repo")
    try:
        api = ApiClient(Settings(local.url, local.token, None))
        record = api.record_by_name("datasets", "sample-scenes")
        assert [v["version_id"] for v in record["versions"]] == [1, 2]
        assert len(api.files("datasets", record["id"], 2)) == 6
    finally:
        local.stop()
    again = local_repository(tmp_path / "repo")  # restarted: not seeded twice
    try:
        api = ApiClient(Settings(again.url, again.token, None))
        assert len(api.record_by_name("datasets", "sample-scenes")["versions"]) == 2
    finally:
        again.stop()


def test_the_local_repository_answers_its_user_alone(tmp_path):
    """Its port on 127.0.0.1 is open to every user of the machine, and reads needed no token: anyone
    could list and download the datasets kept in your data dir (its folder was 0755 too). Large
    answers, which the kernel sends from the blob file below ASGI, are refused as small ones."""
    import jwt
    import requests

    from eotdlfs.client.api import ApiClient
    from eotdlfs.client.ingest.engine import ingest_folder
    from eotdlfs.client.settings import Settings

    local = local_repository(tmp_path / "repo")
    big = os.urandom(3 << 20)
    try:
        api = ApiClient(Settings(local.url, local.token, None))
        folder = tmp_path / "v3"
        shutil.copytree(SAMPLE_DIR / "v1", folder)
        (folder / "big.bin").write_bytes(big)
        ingest_folder(api, "datasets", folder)
        record = api.record_by_name("datasets", "sample-scenes")
        api.close()
        download = f"{local.url}datasets/{record['id']}/download/"
        small = download + "labels.csv?version=1"
        forged = jwt.encode({"sub": "me"}, "another-secret-of-at-least-32-bytes!!", algorithm="HS256")
        for headers in ({}, {"Authorization": f"Bearer {forged}"}, {"X-API-Key": "guessed"}):
            for method, url, extra in (("GET", f"{local.url}datasets", {}), ("GET", small, {"Range": "bytes=0-9"}),
                                       ("HEAD", small, {}), ("GET", small, {}), ("GET", local.url, {}),
                                       ("GET", download + "big.bin", {"Range": "bytes=0-1999999"}),
                                       ("GET", download + "big.bin", {})):
                refused = requests.request(method, url, headers={**headers, **extra}, timeout=10)
                assert refused.status_code == 401, (method, url, headers, refused.status_code)
        mine = {"Authorization": f"Bearer {local.token}"}
        answer = requests.get(small, headers={**mine, "Range": "bytes=0-9"}, timeout=10)
        assert answer.status_code == 206 and answer.content == (SAMPLE_DIR / "v1" / "labels.csv").read_bytes()[:10]
        answer = requests.get(download + "big.bin", headers={**mine, "Range": "bytes=1-1999999"}, timeout=10)
        assert answer.status_code == 206 and answer.content == big[1:2000000]
        answer = requests.get(download + "big.bin", headers=mine, timeout=10)
        assert answer.status_code == 200 and answer.content == big
        assert (tmp_path / "repo").stat().st_mode & 0o777 == 0o700
    finally:
        local.stop()


def test_mount_without_api_url_shows_the_sample(tmp_path):
    mnt, home = tmp_path / "mnt", tmp_path / "home"
    mnt.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EOTDL")}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "data"), XDG_CONFIG_HOME=str(home / "config"),
               XDG_CACHE_HOME=str(home / "cache"))
    pid = None
    try:
        done = subprocess.run([sys.executable, "-m", "eotdlfs", "mount", str(mnt)], env=env,
                              capture_output=True, text=True, timeout=90)
        assert done.returncode == 0, done.stderr
        pid = read_status(mnt)["pid"]
        latest = mnt / "datasets" / "sample-scenes" / "latest"
        assert os.readlink(latest) == "v2"
        assert sorted(os.listdir(latest)) == ["labels.csv", "metadata.yml", "scene_1.tif", "scene_2.tif",
                                             "scene_3.tif", "scene_4.tif"]
        assert sha1(latest / "scene_4.tif") == sha1(SAMPLE_DIR / "v2" / "scene_4.tif")
        assert sha1(mnt / "datasets" / "sample-scenes" / "v1" / "labels.csv") == sha1(SAMPLE_DIR / "v1" / "labels.csv")
        assert (home / "data" / "eotdlfs" / "repository").is_dir()
        assert (home / "cache" / "eotdlfs" / "mount.log").exists()
    finally:
        if is_mounted(mnt) and fusermount(mnt).returncode != 0:
            fusermount(mnt, lazy=True)
        if pid and not wait_for_exit(pid, 10):
            stop_process(pid)
