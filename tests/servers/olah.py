"""Run the real ``olah`` Hugging Face mirror over git repositories we create.

olah serves git repositories found at ``<mirrors-path>/models/<org>/<name>``
(branch ``main``) in offline mode. A file stored with git-lfs is a small
pointer blob in git; olah reads the content from
``<repo>/.git/lfs/objects/<oid[0:2]>/<oid[2:4]>/<oid>``, which is exactly where
``git lfs`` itself puts it. :meth:`OlahServer.make_repo` writes that layout
directly (one ``git fast-import`` per commit, no working tree, no git-lfs
process) so creating a repo takes a few milliseconds.

Known olah gaps versus the real Hub are listed in :data:`OLAH_GAPS`; the
``hf_front`` proxy fills them.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from . import LOOPBACK, free_port

DEFAULT_OLAH_CLI = "/opt/olah-venv/bin/olah-cli"

#: Patterns stored with git-lfs when ``make_repo(lfs=None)`` (the common part
#: of the Hub's default .gitattributes), plus every file of 10 MiB or more.
DEFAULT_LFS_PATTERNS = (
    "*.safetensors",
    "*.bin",
    "*.gguf",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.onnx",
    "*.h5",
    "*.msgpack",
    "*.model",
    "*.tflite",
    "*.ot",
    "*.npy",
    "*.npz",
    "*.pkl",
    "*.pickle",
    "*.zip",
    "*.tar.gz",
    "*.arrow",
    "*.parquet",
    "*.mlmodel",
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024

OLAH_GAPS = """\
olah 0.5.4 serving a local mirror repo, compared with huggingface.co:
- /api/models/{repo} (no /revision/...) -> 401 RepoNotFound in offline mode.
- /api/models/{repo}/revision/{rev}[?blobs=true]: siblings carry only
  rfilename (no size, blobId, lfs) whatever the query.
- unknown revision -> 401 RepoNotFound (Hub: 404 RevisionNotFound).
- HEAD resolve of a missing file -> 401 RepoNotFound (Hub: 404 EntryNotFound);
  GET of a missing file -> 500; HEAD of a directory -> 200.
- HEAD resolve: ETag unquoted (git blob sha1, or sha256 of the content for
  LFS), X-Repo-Commit, Content-Length; no X-Linked-Size/X-Linked-Etag, no
  Accept-Ranges, never a redirect.
- GET resolve: no ETag, no X-Repo-Commit, no Content-Length (chunked); Range
  is ignored (200 with the whole file).
- a non-LFS file of 121..149 bytes that is not valid UTF-8 makes HEAD/GET of
  it and the tree listing of the whole repo answer 500.
- /api/models/{repo}/tree/{rev}?... answers 307 to .../tree/{rev}/?... with an
  absolute Location on olah's own address.
"""


def git_blob_id(data: bytes) -> str:
    """The git blob id (sha1 of ``b"blob <size>\\0" + data``): the Hub ETag of a non-LFS file."""
    h = hashlib.sha1()
    h.update(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n"
    ).encode()


@dataclass(frozen=True)
class HubFile:
    """What the Hub would say about one file of a repo we created."""

    path: str
    size: int
    sha256: str
    blob_id: str  # git blob id of what git stores (the pointer for LFS files)
    lfs: bool
    pointer_size: int | None = None

    @property
    def etag(self) -> str:
        """ETag the Hub gives this file (unquoted): sha256 for LFS, git blob id otherwise."""
        return self.sha256 if self.lfs else self.blob_id


@dataclass
class RepoState:
    repo_id: str
    commit: str
    files: dict[str, HubFile] = field(default_factory=dict)
    contents: dict[str, bytes] = field(default_factory=dict, repr=False)


_PATH_OK = re.compile(r"^[^\0\n\r]+$")


class OlahServer:
    """A running olah process over a temporary mirrors folder.

    ``endpoint`` is e.g. ``http://127.0.0.1:PORT``; give it to
    huggingface_hub as ``endpoint=``. ``make_repo`` may be called at any time,
    from any thread; olah reads the git repositories on every request.
    """

    def __init__(self, workdir: os.PathLike | None = None, cli: str | None = None) -> None:
        self._own_workdir = workdir is None
        self.workdir = (
            Path(workdir)
            if workdir is not None
            else Path(tempfile.mkdtemp(prefix="modelpull-olah-"))
        )
        self.cli = cli or find_olah_cli()
        self.port = free_port()
        self.endpoint = f"http://{LOOPBACK}:{self.port}"
        self.mirrors_path = self.workdir / "mirrors"
        self.repos_path = self.workdir / "repos"
        self.log_path = self.workdir / "olah.log"
        self.proc: subprocess.Popen | None = None
        self._lock = threading.RLock()
        self._repos: dict[str, RepoState] = {}
        self._log_file = None

    # -- lifecycle ---------------------------------------------------------
    def write_config(self) -> Path:
        self.mirrors_path.mkdir(parents=True, exist_ok=True)
        self.repos_path.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "configs.toml"
        netloc = f"{LOOPBACK}:{self.port}"
        cfg.write_text(
            "[basic]\n"
            f'host = "{LOOPBACK}"\n'
            f"port = {self.port}\n"
            'repos-path = "./repos"\n'
            'mirror-scheme = "http"\n'
            f'mirror-netloc = "{netloc}"\n'
            f'mirror-lfs-netloc = "{netloc}"\n'
            'mirrors-path = ["./mirrors"]\n'
            "[accessibility]\n"
            "offline = true\n"
            "[[accessibility.proxy]]\n"
            'repo = "*/*"\n'
            "allow = true\n"
            "[[accessibility.cache]]\n"
            'repo = "*/*"\n'
            "allow = true\n"
        )
        return cfg

    def start(self, timeout: float = 60.0) -> OlahServer:
        self.write_config()
        env = dict(os.environ)
        # olah must never reach out; it is offline anyway, but be explicit.
        env["HF_HUB_OFFLINE"] = "1"
        env.pop("HF_TOKEN", None)
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as olah
        self.proc = subprocess.Popen(
            [self.cli, "-c", "configs.toml"],
            cwd=self.workdir,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"olah exited with code {self.proc.returncode} during start-up; log:\n{self.log_tail()}"
                )
            try:
                # Any HTTP answer means olah is up (its "/" page itself answers 500).
                with urllib.request.urlopen(
                    self.endpoint + "/api/models/modelpull-probe/none/refs", timeout=2
                ):
                    return self
            except urllib.error.HTTPError:
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"olah did not answer on {self.endpoint} within {timeout}s; log:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> OlahServer:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # -- repositories ------------------------------------------------------
    def repo_path(self, repo_id: str) -> Path:
        org, name = _split_repo_id(repo_id)
        return self.mirrors_path / "models" / org / name

    def make_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        lfs: Iterable[str] | None = None,
        *,
        branch: str = "main",
        message: str | None = None,
        gitattributes: bool = False,
    ) -> str:
        """Create ``repo_id`` (``org/name``) holding exactly ``files``; return the commit sha.

        ``lfs``: the paths stored with git-lfs; ``None`` = files matching
        :data:`DEFAULT_LFS_PATTERNS` or of 10 MiB and more; ``set()`` = none.
        Called again for an existing repo, it adds a new commit on ``branch``
        whose tree is exactly ``files`` (older commits stay reachable by sha).
        ``gitattributes=True`` adds a ``.gitattributes`` naming the LFS paths,
        as real Hub repos have.
        """
        files = {str(k): bytes(v) for k, v in files.items()}
        for p in files:
            if (
                p.startswith("/")
                or not _PATH_OK.match(p)
                or any(part in ("", ".", "..") for part in p.split("/"))
            ):
                raise ValueError(f"bad file path {p!r}")
        if lfs is None:
            lfs_set: set[str] = {
                p
                for p, data in files.items()
                if len(data) >= LFS_SIZE_THRESHOLD
                or any(fnmatch.fnmatch(p.rsplit("/", 1)[-1], pat) for pat in DEFAULT_LFS_PATTERNS)
            }
        else:
            lfs_set = set(lfs)
            unknown = lfs_set - set(files)
            if unknown:
                raise ValueError(f"lfs paths not in files: {sorted(unknown)}")
        if gitattributes:
            files[".gitattributes"] = "".join(
                f"{p.replace(' ', '[[:space:]]')} filter=lfs diff=lfs merge=lfs -text\n"
                for p in sorted(lfs_set)
            ).encode()
            lfs_set.discard(".gitattributes")
        for p, data in files.items():
            if p not in lfs_set and 120 < len(data) < 150:
                try:
                    data.decode("utf-8")
                except UnicodeDecodeError:
                    raise ValueError(
                        f"{p!r}: olah 0.5.4 answers 500 for a non-LFS file of 121..149 bytes that is not "
                        "UTF-8 (and breaks the repo's tree listing); store it with LFS or change its size"
                    ) from None

        with self._lock:
            path = self.repo_path(repo_id)
            if not (path / ".git").exists():
                path.mkdir(parents=True, exist_ok=True)
                _git(["init", "-q", "-b", branch, str(path)])
            git_dir = path / ".git"
            ref = f"refs/heads/{branch}"
            has_branch = (
                _git(["-C", str(path), "rev-parse", "-q", "--verify", ref], check=False).returncode
                == 0
            )

            hub_files: dict[str, HubFile] = {}
            chunks = []
            now = int(time.time())
            msg = (message or f"modelpull test commit for {repo_id}").encode()
            ident = f"modelpull tests <tests@modelpull.invalid> {now} +0000"
            chunks.append(f"commit {ref}\nauthor {ident}\ncommitter {ident}\n".encode())
            chunks.append(b"data %d\n" % len(msg) + msg + b"\n")
            if has_branch:
                chunks.append(f"from {ref}^0\n".encode())
            chunks.append(b"deleteall\n")
            for p in sorted(files):
                data = files[p]
                sha256 = hashlib.sha256(data).hexdigest()
                if p in lfs_set:
                    obj = git_dir / "lfs" / "objects" / sha256[0:2] / sha256[2:4] / sha256
                    if not obj.exists() or obj.stat().st_size != len(data):
                        obj.parent.mkdir(parents=True, exist_ok=True)
                        tmp = obj.with_name(obj.name + f".tmp{os.getpid()}")
                        tmp.write_bytes(data)
                        os.replace(tmp, obj)
                    stored = lfs_pointer(sha256, len(data))
                    hub_files[p] = HubFile(
                        p, len(data), sha256, git_blob_id(stored), True, len(stored)
                    )
                else:
                    stored = data
                    hub_files[p] = HubFile(p, len(data), sha256, git_blob_id(stored), False)
                chunks.append(f"M 100644 inline {_fi_path(p)}\n".encode())
                chunks.append(b"data %d\n" % len(stored))
                chunks.append(stored)
                chunks.append(b"\n")
            chunks.append(b"done\n")
            stream = b"".join(chunks)
            r = subprocess.run(
                [
                    "git",
                    "-C",
                    str(path),
                    "-c",
                    "core.compression=0",
                    "-c",
                    "pack.compression=0",
                    "fast-import",
                    "--quiet",
                    "--done",
                    "--date-format=raw",
                ],
                input=stream,
                capture_output=True,
                check=False,
            )
            if r.returncode != 0:
                raise RuntimeError(f"git fast-import failed: {r.stderr.decode(errors='replace')}")
            commit = _git(["-C", str(path), "rev-parse", ref]).stdout.decode().strip()
            self._repos[repo_id] = RepoState(repo_id, commit, hub_files, dict(files))
            return commit

    def add_ref(
        self, repo_id: str, name: str, commit: str | None = None, *, kind: str = "tag"
    ) -> None:
        """Point tag or branch ``name`` at ``commit`` (default: the last commit made)."""
        if kind not in ("tag", "branch"):
            raise ValueError("kind must be 'tag' or 'branch'")
        with self._lock:
            commit = commit or self._repos[repo_id].commit
            ref = f"refs/{'tags' if kind == 'tag' else 'heads'}/{name}"
            _git(["-C", str(self.repo_path(repo_id)), "update-ref", ref, commit])

    def delete_repo(self, repo_id: str) -> None:
        with self._lock:
            shutil.rmtree(self.repo_path(repo_id), ignore_errors=True)
            self._repos.pop(repo_id, None)

    def repo(self, repo_id: str) -> RepoState:
        """What we last committed to ``repo_id``: commit sha, :class:`HubFile` per path, contents."""
        with self._lock:
            return self._repos[repo_id]

    def files(self, repo_id: str) -> dict[str, HubFile]:
        return dict(self.repo(repo_id).files)


def _git(args, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["git", *args], capture_output=True, check=False)
    if check and r.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed: {r.stderr.decode(errors='replace')}")
    return r


def _fi_path(p: str) -> str:
    # fast-import: a path starting with '"' must be C-quoted; quote any path with
    # special characters to be safe.
    if p.startswith('"') or any(c in p for c in ("\\", '"')) or any(ord(c) < 32 for c in p):
        return '"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return p


def _split_repo_id(repo_id: str):
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
        raise ValueError(f"repo_id must be 'org/name', got {repo_id!r}")
    return parts[0], parts[1]


def find_olah_cli() -> str:
    """``$MODELPULL_OLAH_CLI``, else /opt/olah-venv/bin/olah-cli, else ``olah-cli`` on PATH."""
    env = os.environ.get("MODELPULL_OLAH_CLI")
    if env:
        if not (os.path.isfile(env) and os.access(env, os.X_OK)):
            raise RuntimeError(f"MODELPULL_OLAH_CLI={env!r} is not an executable file")
        return env
    if os.path.isfile(DEFAULT_OLAH_CLI) and os.access(DEFAULT_OLAH_CLI, os.X_OK):
        return DEFAULT_OLAH_CLI
    found = shutil.which("olah-cli")
    if found:
        return found
    raise RuntimeError(
        "olah-cli not found: set MODELPULL_OLAH_CLI, or install olah into /opt/olah-venv "
        "(python3 -m venv /opt/olah-venv && /opt/olah-venv/bin/pip install olah), "
        "or put olah-cli on PATH. The Hugging Face tests need it; they are not skipped."
    )


if __name__ == "__main__":  # manual use: python -m tests.servers.olah
    with OlahServer() as srv:
        sha = srv.make_repo(
            "demo/tiny", {"config.json": b"{}", "model.safetensors": os.urandom(1 << 20)}
        )
        print(srv.endpoint, "demo/tiny", sha, file=sys.stderr)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
