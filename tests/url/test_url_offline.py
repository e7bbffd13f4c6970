"""url offline and cache-first: a file downloaded before never needs its server again."""

from __future__ import annotations

from pathlib import Path

from modelpull import DownloadStatus
from tests.servers.nginx import Nginx

from .conftest import FILES, collect, sha256

CLOSED = "http://127.0.0.1:9"


def served_from_disk(events) -> bool:
    return [e.status for e in events] == [DownloadStatus.STARTING, DownloadStatus.COMPLETE]


async def test_offline_and_a_server_gone_serve_the_file(nginx: Nginx, tmp_path: Path) -> None:
    folder = tmp_path / "files"
    url = f"{nginx.url}/files/small.gguf"
    first, _ = await collect(url, local_dir=str(folder))
    assert first[-1].status is DownloadStatus.COMPLETE, first[-1].message
    nginx.clear_log()
    offline, _ = await collect(url, local_dir=str(folder), offline=True)
    assert served_from_disk(offline) and offline[-1].path == first[-1].path
    assert nginx.requests() == []
    nginx.stop()
    try:
        gone, _ = await collect(url, local_dir=str(folder))
        assert served_from_disk(gone) and "could not be used" in gone[-1].message
        assert Path(gone[-1].path).read_bytes() == FILES["small.gguf"]
    finally:
        nginx.start()


async def test_a_sha256_on_disk_needs_no_server_at_all(nginx: Nginx, tmp_path: Path) -> None:
    folder = tmp_path / "files"
    digest = sha256(FILES["small.gguf"])
    first, _ = await collect(f"{nginx.url}/files/small.gguf#sha256={digest}", local_dir=str(folder))
    assert first[-1].status is DownloadStatus.COMPLETE, first[-1].message
    # the same content from anywhere, even a closed port: named by its digest, it is already here
    again, _ = await collect(f"{CLOSED}/mirror/small.gguf#sha256={digest}", local_dir=str(folder))
    assert served_from_disk(again) and "pinned" in again[-1].message


async def test_offline_with_nothing_downloaded(tmp_path: Path) -> None:
    events, _ = await collect(f"{CLOSED}/x/model.gguf", local_dir=str(tmp_path / "f"), offline=True)
    assert events[-1].error_code == "offline" and "nothing of it" in events[-1].message
