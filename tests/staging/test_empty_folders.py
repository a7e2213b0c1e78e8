"""Empty folders in staging: a version holds files only, so a flush leaves them out, keeps them in
staging, and says so by name (in its result and in `eotdlfs status`)."""

from __future__ import annotations

from tests.client.helpers import cli_env, run_cli
from tests.staging.test_mount_staging import KIND, flush_cli, publish_and_mount


def test_empty_folders_stay_in_staging_and_the_flush_names_them(tmp_path, repo_server, mount_factory, unique_name):
    name = unique_name("empty")
    mount, record = publish_and_mount(tmp_path, repo_server, mount_factory, name, 3)
    (record / "empty").mkdir()
    (record / "outer" / "inner").mkdir(parents=True)
    (record / "data").mkdir()
    (record / "data" / "new.txt").write_text("new\n")
    said = "not published: a version holds files only; empty folders kept in staging: empty/, outer/inner/"

    result = flush_cli(tmp_path, repo_server, record)
    assert result.returncode == 0 and "published v2" in result.stdout and said in result.stdout, result.stdout
    published = mount.path / KIND / name / "v2"
    assert (published / "data" / "new.txt").read_text() == "new\n"
    assert not (published / "empty").exists() and not (published / "outer").exists()
    assert (record / "empty").is_dir() and (record / "outer" / "inner").is_dir()
    assert said in run_cli(cli_env(tmp_path, None, None), "status", str(mount.path)).stdout

    again = flush_cli(tmp_path, repo_server, record)
    assert again.returncode == 0 and "nothing to flush" in again.stdout and said in again.stdout, again.stdout
