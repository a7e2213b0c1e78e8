"""Shared helpers of the client tests: folders to ingest, clients, and the `eotdlfs` CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from eotdlfs.client.api import ApiClient
from eotdlfs.client.settings import Settings

CLI_TIMEOUT_S = 120


def write_metadata(folder: Path, name: str, **overrides: str) -> None:
    fields = {"name": name, "authors": "[tester]", "license": "MIT", "source": "http://example.org", **overrides}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metadata.yml").write_text("".join(f"{k}: {v}\n" for k, v in fields.items() if v is not None))


def make_folder(folder: Path, name: str, files: int) -> Path:
    """FOLDER with metadata.yml naming NAME and FILES small files spread over subfolders."""
    write_metadata(folder, name)
    for i in range(files):
        sub = folder / f"part{i % 7}"
        sub.mkdir(exist_ok=True)
        (sub / f"file{i:04d}.txt").write_text(f"contents of file {i}\n" * (1 + i % 5))
    return folder


# Ways a link in a folder leads out of it: case -> (link name, target as written; "{out}" is the folder's parent)
OUTSIDE_LINKS = {
    "absolute": ("shadow_link", "{out}/secret.txt"),
    "relative": ("up_link", "../secret.txt"),
    "directory": ("dir_link", "../secret-dir"),
    "chain": ("chain_link", "inside_hop"),  # inside_hop -> ../hop.txt -> {out}/secret.txt
    "src-prefix": ("prefix_link", "../src-evil.txt"),  # 'src-evil.txt' starts with 'src', yet is outside
}


def make_outside_link(tmp_path: Path, case: str) -> tuple[Path, str, str]:
    """TMP_PATH/src with a file and a link leading out of it as CASE says: (folder, link name, target)."""
    folder = tmp_path / "src"
    folder.mkdir(exist_ok=True)
    (folder / "ok.txt").write_text("ok")
    (tmp_path / "secret.txt").write_text("secret")
    (tmp_path / "src-evil.txt").write_text("evil")
    (tmp_path / "secret-dir").mkdir()
    (tmp_path / "secret-dir" / "key.txt").write_text("key")
    (tmp_path / "hop.txt").symlink_to(tmp_path / "secret.txt")
    if case == "chain":
        (folder / "inside_hop").symlink_to("../hop.txt")
    name, target = OUTSIDE_LINKS[case]
    target = target.format(out=tmp_path)
    (folder / name).symlink_to(target)
    return folder, name, target


def client(server, user: str | None = "alice") -> ApiClient:
    return ApiClient(Settings(api_url=server.url, token=server.token(user) if user else None, api_key=None,
                              timeout=60))


def cli_env(tmp_path: Path, api_url: str | None, token: str | None) -> dict[str, str]:
    """An environment with nothing from the real user: own HOME, config and cache dirs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EOTDL")}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "home" / "config"),
               EOTDLFS_CACHE_DIR=str(tmp_path / "hash-cache"), COLUMNS="200")
    if api_url:
        env["EOTDL_API_URL"] = api_url
    if token:
        env["EOTDL_TOKEN"] = token
    return env


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "eotdlfs", *args], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=CLI_TIMEOUT_S)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """RESULT failed with exit 1 and exactly one `error: ...` line on stderr containing FRAGMENTS."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]
