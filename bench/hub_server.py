"""A fast, minimal Hugging Face Hub-compatible server for one repository folder (benchmarks only).

    python bench/hub_server.py --repo-id org/name --folder DIR [--port 0]

Serves what ``huggingface_hub`` (and modelpull) call to download a snapshot
(docs PROTOCOLS.md section 5), for the files under ``--folder`` at one fixed
commit:

* ``GET /api/models/{repo}[/revision/{rev}]``: metadata with every sibling's
  ``size``, ``blobId`` and, for files over 10 MB (stored in LFS on the Hub),
  ``lfs.sha256``; ``GET /api/models/{repo}/tree/{rev}``: the recursive file list;
* ``HEAD|GET /{repo}/resolve/{rev}/{path}``: the file with ``ETag``,
  ``X-Repo-Commit``, ``X-Linked-Size``/``X-Linked-Etag`` (LFS), and ``Range``
  support; bodies go out with ``sendfile``.

Prints ``listening on 127.0.0.1:PORT`` once the digests are computed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

LFS_THRESHOLD = 10 * 1000 * 1000
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class RepoFile:
    path: str
    disk: Path
    size: int
    blob_id: str
    sha256: str | None  # LFS files only

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id


def describe(folder: Path) -> dict[str, RepoFile]:
    files: dict[str, RepoFile] = {}
    for disk in sorted(p for p in folder.rglob("*") if p.is_file()):
        size = disk.stat().st_size
        git = hashlib.sha1(f"blob {size}\0".encode())
        sha = hashlib.sha256()
        with open(disk, "rb") as f:
            while block := f.read(8 << 20):
                git.update(block)
                sha.update(block)
        rel = disk.relative_to(folder).as_posix()
        files[rel] = RepoFile(rel, disk, size, git.hexdigest(), sha.hexdigest() if size > LFS_THRESHOLD else None)
    return files


def build_app(repo_id: str, files: dict[str, RepoFile]) -> web.Application:
    def info(request: web.Request) -> web.Response:
        siblings = []
        for f in files.values():
            sibling: dict[str, object] = {"rfilename": f.path, "size": f.size, "blobId": f.blob_id}
            if f.sha256:
                sibling["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
            siblings.append(sibling)
        return web.json_response({
            "_id": "bench", "id": repo_id, "modelId": repo_id, "sha": COMMIT, "private": False,
            "gated": False, "disabled": False, "downloads": 0, "likes": 0, "tags": [],
            "lastModified": "2025-01-01T00:00:00.000Z", "createdAt": "2025-01-01T00:00:00.000Z",
            "siblings": siblings, "usedStorage": sum(f.size for f in files.values()),
        })

    def tree() -> list[dict[str, object]]:
        entries: list[dict[str, object]] = []
        folders = sorted({str(Path(p).parent) for p in files} - {"."})
        for folder in folders:
            entries.append({"type": "directory", "oid": "0" * 40, "size": 0, "path": folder})
        for f in files.values():
            entry: dict[str, object] = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
            if f.sha256:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
            entries.append(entry)
        return entries

    async def api(request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        if tail in (repo_id, f"{repo_id}/") or tail.startswith(f"{repo_id}/revision/"):
            return info(request)
        if tail.startswith(f"{repo_id}/tree/"):
            return web.json_response(tree())
        return web.json_response({"error": "not found"}, status=404, headers={"X-Error-Code": "RepoNotFound"})

    async def resolve(request: web.Request) -> web.StreamResponse:
        tail = request.match_info["tail"]
        prefix = f"{repo_id}/resolve/"
        if not tail.startswith(prefix):
            return web.Response(status=404, headers={"X-Error-Code": "RepoNotFound"})
        _, _, path = tail[len(prefix):].partition("/")
        f = files.get(path)
        if f is None:
            return web.Response(status=404, headers={"X-Error-Code": "EntryNotFound"})
        headers = {"ETag": f'"{f.etag}"', "X-Repo-Commit": COMMIT, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}
        if f.sha256:
            headers["X-Linked-Size"] = str(f.size)
            headers["X-Linked-Etag"] = f'"{f.sha256}"'
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(f.size)})
        response = web.FileResponse(f.disk, headers=headers, chunk_size=1 << 20)
        return response

    app = web.Application()
    app.router.add_route("GET", "/api/models/{tail:.*}", api)
    app.router.add_route("*", "/{tail:.*}", resolve)
    return app


async def serve(repo_id: str, folder: Path, port: int) -> None:
    files = await asyncio.to_thread(describe, folder)
    runner = web.AppRunner(build_app(repo_id, files), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
    print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo-id", required=True)
    parser.add_argument("--folder", required=True, type=Path)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.repo_id, args.folder, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
