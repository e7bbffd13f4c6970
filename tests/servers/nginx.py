"""Debian's nginx on a loopback port, for the ``url`` source's tests.

The real thing, not an imitation: ``sendfile``, ``Range`` (206, multiple
connections), ``HEAD``, ``ETag``/``Last-Modified`` are nginx's own. The
configuration is written into a temporary folder; nginx runs in the
foreground (``daemon off``) as a child of the test and is stopped by its pid.

Locations, all serving the files of ``root``:

* ``/files/<name>``: plain static files;
* ``/slow/<name>``: the same, ``rate`` bytes a second per request (nginx sends
  the first second's worth at once); :meth:`Nginx.set_rate` changes it live
  (a reload: requests already running keep the old rate);
* ``/named/<name>`` and ``/hostile/<name>``: with the ``Content-Disposition``
  headers given to :class:`Nginx` (``add_header`` in the config);
* ``/private/<name>``: only with ``Authorization: Bearer <token>`` (else 401);
* ``/redirect/<name>``: ``302`` to ``<redirect_to>/files/<name>``.

The access log (one line per request, written when it ends) records method,
path, status, body bytes sent, the ``Range`` asked for, whether an
``Authorization`` header came (never its value) and whether the request
completed (``OK``) or the client went away first.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import LOOPBACK, free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

_CONFIG = """\
user root;
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 30;
    client_body_temp_path {work}/tmp/body;
    proxy_temp_path {work}/tmp/proxy;
    fastcgi_temp_path {work}/tmp/fastcgi;
    uwsgi_temp_path {work}/tmp/uwsgi;
    scgi_temp_path {work}/tmp/scgi;
    map $http_authorization $auth_sent {{ default "auth"; "" "-"; }}
    map $http_authorization $auth_ok {{ default 0; "Bearer {token}" 1; }}
    log_format modelpull '$request_method\\t$uri\\t$status\\t$body_bytes_sent\\t$http_range\\t'
                         '$auth_sent\\t$request_completion\\t$connection';
    access_log {work}/access.log modelpull;
    server {{
        listen {host}:{port};
        server_name localhost;
        location /files/ {{ alias {root}/; }}
        location /slow/ {{ alias {root}/; limit_rate {rate}; }}
        location /named/ {{ alias {root}/; add_header Content-Disposition '{named}'; }}
        location /hostile/ {{ alias {root}/; add_header Content-Disposition '{hostile}'; }}
        location /private/ {{
            alias {root}/;
            if ($auth_ok = 0) {{ return 401; }}
        }}
        location /redirect/ {{ rewrite ^/redirect/(.*)$ {redirect_to}/files/$1 redirect; }}
        location = /generation {{ access_log off; return 200 "{generation}"; }}
    }}
}}
"""


@dataclass
class NginxRequest:
    """One line of the access log."""

    method: str
    path: str
    status: int
    bytes_sent: int
    range: str | None
    auth_present: bool
    completed: bool
    connection: int


class Nginx:
    """nginx serving ``root`` on ``host`` (a loopback address); ``.url`` is its base URL."""

    def __init__(
        self,
        root: Path,
        workdir: Path,
        *,
        host: str = LOOPBACK,
        token: str = "no-token-configured",
        rate: int = 1_000_000,
        named: str = 'attachment; filename="renamed.gguf"',
        hostile: str = 'attachment; filename="../../escaped.gguf"',
        redirect_to: str | None = None,
    ) -> None:
        for text in (token, named, hostile):
            if "'" in text or "\n" in text:
                raise ValueError(f"cannot put {text!r} into the nginx config")
        self.root = Path(root)
        self.workdir = Path(workdir)
        self.host = host
        self.port = free_port()
        self.token = token
        self.rate = rate
        self.named, self.hostile = named, hostile
        self.redirect_to = redirect_to or f"http://{LOOPBACK}:9"
        self.proc: subprocess.Popen[bytes] | None = None
        self._generation = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.workdir / "access.log"

    @property
    def config(self) -> Path:
        return self.workdir / "nginx.conf"

    def _write_config(self) -> None:
        self.config.write_text(_CONFIG.format(
            work=self.workdir, root=self.root, host=self.host, port=self.port, rate=self.rate,
            token=self.token, named=self.named, hostile=self.hostile, redirect_to=self.redirect_to,
            generation=self._generation,
        ))

    def start(self, timeout: float = 10.0) -> Nginx:
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        config = self.config
        self._write_config()
        self.access_log.touch()
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(self.workdir), "-c", str(config), "-e", str(self.workdir / "error.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"nginx exited ({self.proc.returncode}): {err}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not listen on {self.url} within {timeout}s")

    def set_rate(self, rate: int, timeout: float = 10.0) -> None:
        """``/slow/`` sends ``rate`` bytes a second from now on (0: unlimited)."""
        import urllib.request

        assert self.proc is not None
        self.rate, self._generation = rate, self._generation + 1
        self._write_config()
        self.proc.send_signal(signal.SIGHUP)  # reload: new workers take the new config
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with direct.open(f"{self.url}/generation", timeout=1) as answer:
                    if answer.read().decode() == str(self._generation):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"nginx did not reload its configuration within {timeout}s")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown of the master and its worker
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    # -- the access log -----------------------------------------------------------
    def requests(self, path_contains: str | None = None, method: str | None = None) -> list[NginxRequest]:
        found = []
        for line in self.access_log.read_text(errors="replace").splitlines():
            fields = line.split("\t")
            if len(fields) != 8:
                continue
            request = NginxRequest(
                method=fields[0], path=fields[1], status=int(fields[2]), bytes_sent=int(fields[3]),
                range=None if fields[4] == "-" else fields[4], auth_present=fields[5] == "auth",
                completed=fields[6] == "OK", connection=int(fields[7]),
            )
            if path_contains is not None and path_contains not in request.path:
                continue
            if method is not None and request.method != method:
                continue
            found.append(request)
        return found

    def bytes_sent(self, path_contains: str | None = None) -> int:
        return sum(r.bytes_sent for r in self.requests(path_contains, method="GET"))

    def clear_log(self) -> None:
        """Empty the access log (nginx keeps appending to the same open file)."""
        os.truncate(self.access_log, 0)


__all__ = ["NGINX", "Nginx", "NginxRequest"]
