"""ModelScope offline and cache-first: a model complete in the ModelScope cache never needs the hub."""

from __future__ import annotations

from pathlib import Path

from modelpull import DownloadStatus, download_model
from tests.servers.modelscope_server import ModelScopeServer

FILES = {"config.json": b'{"model_type": "qwen2"}', "weights/model.safetensors": b"w" * 50_000}
CLOSED = "http://127.0.0.1:9"


async def pull(model: str, **kwargs):
    return [event async for event in download_model("modelscope", model, **kwargs)]


def served_from_disk(events) -> bool:
    return [e.status for e in events] == [DownloadStatus.STARTING, DownloadStatus.COMPLETE]


async def test_offline_and_a_hub_gone_serve_the_cache(ms_server: ModelScopeServer, ms_cache: Path) -> None:
    ms_server.add_model("org", "tiny", FILES)
    first = await pull("org/tiny", base_url=ms_server.endpoint)
    assert first[-1].status is DownloadStatus.COMPLETE, first[-1].message
    ms_server.clear_log()
    offline = await pull("org/tiny", base_url=ms_server.endpoint, offline=True)
    assert served_from_disk(offline) and offline[-1].path == first[-1].path
    assert ms_server.log == []
    gone = await pull("org/tiny", base_url=CLOSED)
    assert served_from_disk(gone) and "could not be used" in gone[-1].message
    ms_server.fail(503, times=100)
    failing = await pull("org/tiny", base_url=ms_server.endpoint)
    assert served_from_disk(failing) and "503" in failing[-1].message


async def test_offline_with_part_of_the_model_names_what_is_missing(
    ms_server: ModelScopeServer, ms_cache: Path
) -> None:
    ms_server.add_model("org", "half", FILES)
    first = await pull("org/half", base_url=ms_server.endpoint, allow_patterns=["*.json"])
    assert first[-1].status is DownloadStatus.COMPLETE, first[-1].message
    ms_server.clear_log()
    missing = await pull("org/half", base_url=ms_server.endpoint, offline=True)
    assert missing[-1].error_code == "offline" and "weights/model.safetensors" in missing[-1].message
    assert ms_server.log == []
    down = await pull("org/half", base_url=CLOSED)
    assert down[-1].error_code == "connection_failed"


async def test_offline_with_nothing_downloaded(ms_cache: Path) -> None:
    events = await pull("org/never", base_url=CLOSED, offline=True)
    assert events[-1].error_code == "offline" and "nothing of it" in events[-1].message
