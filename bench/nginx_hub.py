"""Debian's nginx as a Hub's file server: bodies with sendfile, metadata from ``hub_server.py``.

    with NginxHub("org/name", folder, scratch) as hub:
        hub.endpoint                     # http://127.0.0.1:PORT, what every client is given
        hub.file_url("model.safetensors")

nginx answers ``GET /{repo}/resolve/{rev}/{path}`` from ``folder`` itself
(``sendfile``, ``Range``), and hands ``/api/...`` and the ``HEAD`` of a resolve
URL (size, ETag, ``X-Repo-Commit``, ``X-Linked-*``: what ``hf download`` reads)
to ``bench/hub_server.py`` behind it. So every client fetches bytes from the
same nginx, the way a CDN serves them, and only the metadata comes from Python.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from _common import BENCH, clean_env, start_listener, stop

_CONFIG = """
user root;
worker_processes {workers};
daemon off;
pid {scratch}/nginx.pid;
error_log {scratch}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    log_format bench '$request_method $uri $status $body_bytes_sent $msec $request_time';
    {access_log}
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 100000;
    keepalive_timeout 60s;
    client_body_temp_path {scratch}/client_body;
    proxy_temp_path {scratch}/proxy;
    fastcgi_temp_path {scratch}/fastcgi;
    uwsgi_temp_path {scratch}/uwsgi;
    scgi_temp_path {scratch}/scgi;
    types {{ }}
    default_type application/octet-stream;
    upstream meta {{ server {meta}; keepalive 8; }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location /api/ {{
            proxy_pass http://meta;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location ~ ^/[^/]+/[^/]+/resolve/[^/]+/(?<file>.+)$ {{
            if ($request_method = HEAD) {{
                proxy_pass http://meta;
            }}
            alias {folder}/$file;
            add_header X-Repo-Commit {commit};
        }}
    }}
}}
"""


@dataclass(frozen=True)
class Served:
    """One request nginx logged: times are the wall clock (``time.time()``)."""

    method: str
    path: str
    status: int
    body_bytes: int
    started: float
    ended: float


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NginxHub:
    """nginx on a loopback port in front of ``hub_server.py`` for one repo folder."""

    def __init__(self, repo_id: str, folder: Path, scratch: Path, workers: int = 1, log: bool = False) -> None:
        if shutil.which("nginx") is None:
            raise SystemExit("nginx is missing: apt-get install -y nginx")
        self.repo_id = repo_id
        self.folder = folder.resolve()
        self.scratch = scratch / "nginx"
        self.workers = workers
        self.log = log
        self.port = 0
        self._meta: subprocess.Popen[str] | None = None
        self._nginx: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.scratch / "access.log"

    def served(self) -> list[Served]:
        """Requests logged so far (with ``log=True``), in the order they ended."""
        try:
            lines = self.access_log.read_text().splitlines()
        except OSError:
            return []
        found = []
        for line in lines:
            method, path, status, sent, end, took = line.split(" ")
            found.append(Served(method, path, int(status), int(sent), float(end) - float(took), float(end)))
        return found

    def clear_log(self) -> None:
        self.access_log.write_text("")

    def file_url(self, path: str, netloc: str | None = None) -> str:
        from hub_server import COMMIT

        return f"http://{netloc or self.netloc}/{self.repo_id}/resolve/{COMMIT}/{path}"

    def __enter__(self) -> NginxHub:  # noqa: PYI034 - not subclassed
        from hub_server import COMMIT

        self.scratch.mkdir(parents=True, exist_ok=True)
        self._meta, meta = start_listener([sys.executable, str(BENCH / "hub_server.py"),
                                           "--repo-id", self.repo_id, "--folder", str(self.folder)])
        self.port = free_port()
        config = self.scratch / "nginx.conf"
        config.write_text(_CONFIG.format(
            workers=self.workers, scratch=self.scratch, meta=meta, port=self.port,
            folder=self.folder, commit=COMMIT,
            access_log=f"access_log {self.access_log} bench;" if self.log else "access_log off;",
        ))
        self._nginx = subprocess.Popen(["nginx", "-c", str(config), "-p", str(self.scratch)],
                                       env=clean_env(), stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/api/models/{self.repo_id}", timeout=1):
                    break
            except OSError:
                if self._nginx.poll() is not None or time.monotonic() > deadline:
                    err = self._nginx.stderr.read().decode() if self._nginx.stderr else ""
                    self.__exit__()
                    raise RuntimeError(f"nginx did not start: {err[-1000:]}") from None
                time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._nginx is not None:
            stop(self._nginx)
        if self._meta is not None:
            stop(self._meta)
