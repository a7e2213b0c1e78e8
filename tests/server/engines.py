"""Real storage engines for the tests, on 127.0.0.1: PostgreSQL (Debian's package) and S3 (moto's server).

PostgreSQL refuses to run as root: as root, its programs run as the `postgres` user the
package creates (setpriv execs in place, so the PID we hold is the server's), in a folder of
our own that user owns (pytest's folders are 0700 root). Each is stopped by its PID.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from tests.conftest import START_TIMEOUT_S, stop_process
from tests.conftest import _free_port as free_port


def postgres_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


class Postgres:
    """A throwaway PostgreSQL cluster; `database()` makes one more database and returns its URL."""

    def __init__(self, bindir: Path):
        self.bindir, self.port = bindir, free_port()
        self.folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="eotdlfs-pg-"))
        self._as_postgres: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            self._as_postgres = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
        self.log = open(self.folder / "postgres.log", "ab")
        self._proc: subprocess.Popen | None = None
        self._count = 0

    def start(self) -> None:
        data = self.folder / "data"
        subprocess.run([*self._as_postgres, str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres",
                        "--auth=trust", "--locale=C.UTF-8", "-E", "UTF8", "--no-sync"],
                       check=True, stdout=self.log, stderr=self.log, timeout=120)
        # fsync off: a test cluster need not survive a power loss, and it makes each commit cheap
        self._proc = subprocess.Popen(
            [*self._as_postgres, str(self.bindir / "postgres"), "-D", str(data), "-p", str(self.port),
             "-k", str(self.folder), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "max_connections=300"], stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while subprocess.run([str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"PostgreSQL did not start; see {self.folder}/postgres.log")
            time.sleep(0.1)

    def database(self) -> str:
        """A new empty database; its URL as `eotdlfs serve --db` takes it."""
        import psycopg

        self._count += 1
        name = f"repo{self._count}"
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


class MotoS3:
    """moto's S3 emulation as a real HTTP server; `bucket()` makes one more bucket and returns its URL."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                    "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
        self.folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="eotdlfs-s3-"))
        self._proc: subprocess.Popen | None = None
        self._count = 0

    def start(self) -> None:
        moto = Path(sys.executable).parent / "moto_server"
        with open(self.folder / "moto.log", "ab") as log:
            self._proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                requests.get(self.endpoint, timeout=5)
                return
            except requests.RequestException:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto_server did not start; see {self.folder}/moto.log") from None
                time.sleep(0.1)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")

    def bucket(self) -> str:
        """A new empty bucket; its URL as `eotdlfs serve --blobs` takes it (with a prefix, as a deployment may)."""
        self._count += 1
        name = f"repo{self._count}"
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}/eotdlfs"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(self.folder, ignore_errors=True)


BALANCER_CONF = """\
user root;  # its workers write request bodies into our 0700 folder (ignored, with a warning, when not root)
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    client_max_body_size 0;
    upstream replicas {{
        {servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_buffering off;
            # a replica that refuses connections or dies before answering: the request goes to the next one
            # (nginx resends only idempotent requests; an upload the dead one took is the client's to retry)
            proxy_next_upstream error timeout http_502 http_503;
            proxy_connect_timeout 2s;
            proxy_read_timeout 300s;
        }}
    }}
}}
"""


class Balancer:
    """nginx on a free port of 127.0.0.1, spreading requests over the replicas on PORTS (round robin)."""

    def __init__(self, ports: list[int]):
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.port, self.url = free_port(), ""
        self.folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="eotdlfs-lb-"))
        servers = "\n        ".join(f"server 127.0.0.1:{p} max_fails=1 fail_timeout=3s;" for p in ports)
        conf = self.folder / "nginx.conf"
        conf.write_text(BALANCER_CONF.format(prefix=self.folder, port=self.port, servers=servers))
        with open(self.folder / "nginx.out", "ab") as log:
            self._proc: subprocess.Popen | None = subprocess.Popen(
                [binary, "-c", str(conf), "-p", str(self.folder), "-e", str(self.folder / "error.log"),
                 "-g", "daemon off;"], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self.url = f"http://127.0.0.1:{self.port}/"
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"nginx did not start; see {self.folder}/nginx.out") from None
                time.sleep(0.05)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)
        shutil.rmtree(self.folder, ignore_errors=True)
