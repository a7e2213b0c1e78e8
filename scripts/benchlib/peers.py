"""The peers eotdlfs is measured against: nginx serving the dataset from disk, and an rclone mount of it."""

from __future__ import annotations

import shutil
from pathlib import Path

from benchlib.processes import ForegroundMount, LocalHttpServer, free_port

NGINX_CONF = """\
user root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
    log_format bench '$request_method $uri $status $body_bytes_sent';
    access_log {prefix}/access.log bench;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        autoindex on;
    }}
}}
"""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


class Nginx(LocalHttpServer):
    """nginx on a free 127.0.0.1 port serving ROOT with autoindex, run in the foreground as our child."""

    def __init__(self, root: Path, prefix: Path):
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (apt-get install nginx-light, or bash scripts/install.sh)")
        self.prefix = prefix
        (prefix / "tmp").mkdir(parents=True, exist_ok=True)
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, root=root))
        # SIGTERM on the master (our child, in the foreground) stops its workers too.
        argv = [binary, "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log"), "-g", "daemon off;"]
        super().__init__(argv, port, prefix / "nginx.out")

    def bytes_sent(self) -> int:
        """Body bytes sent so far, from the access log (nginx writes it per request)."""
        total = 0
        log = self.prefix / "access.log"
        if log.exists():
            for line in log.read_text().splitlines():
                total += int(line.rsplit(" ", 1)[-1])
        return total


def rclone_mount(url: str, mnt: Path, cache_dir: Path, log: Path) -> ForegroundMount:
    """`rclone mount` of an :http: remote (nginx autoindex) with --vfs-cache-mode full, in the foreground."""
    if shutil.which("rclone") is None:
        raise RuntimeError("rclone is not installed (apt-get install rclone, or bash scripts/install.sh)")
    argv = [
        "rclone", "mount", ":http:", str(mnt),
        "--http-url", url,
        "--config", str(cache_dir.parent / "rclone.conf"),  # none: the remote is all on the command line
        "--cache-dir", str(cache_dir),
        "--vfs-cache-mode", "full",
        "--read-only",
        "--dir-cache-time", "1h",
        "--log-level", "NOTICE",
    ]
    return ForegroundMount(argv, mnt, cache_dir, log)
