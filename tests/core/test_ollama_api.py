"""One module speaks to an Ollama server: against the Ollama emulator (PROTOCOLS.md section 1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from modelpull._ollama_api import (
    OllamaClient,
    classify_ollama_error,
    delete_model,
    list_tags,
    ollama_base_url,
)
from modelpull._transfer import POLICIES, new_session
from modelpull.errors import (
    AuthRequired,
    ConnectionFailed,
    DiskFull,
    InvalidModel,
    InvalidOption,
    ModelNotFound,
    ServerError,
    TransferTimeout,
)
from tests.servers import free_port
from tests.servers.fault_proxy import FaultProxy
from tests.servers.ollama_emulator import OllamaEmulator


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    http = new_session(POLICIES["default"])
    try:
        yield http
    finally:
        await http.close()


# ------------------------------------------------------------------ where the server is
def test_the_address_comes_from_base_url_then_ollama_host_then_localhost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert ollama_base_url(None) == "http://localhost:11434"
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0")
    assert ollama_base_url(None) == "http://127.0.0.1:11434"
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box:8080")
    assert ollama_base_url(None) == "http://gpu-box:8080"
    assert ollama_base_url("https://ollama.example/prefix/") == "https://ollama.example:11434/prefix"
    with pytest.raises(InvalidOption):
        ollama_base_url("ftp://x")


@pytest.mark.parametrize(("text", "status", "error"), [
    ("pull model manifest: file does not exist", None, ModelNotFound),
    ("model 'x' not found", 404, ModelNotFound),
    ("invalid model name", 400, InvalidModel),
    ("unauthorized", 401, AuthRequired),
    ("write /models/blobs: no space left on device", None, DiskFull),
    ("context deadline exceeded", None, TransferTimeout),
    ("something else broke", 500, ServerError),
])
def test_ollamas_words_become_typed_errors_that_keep_them(text: str, status: int | None, error: type) -> None:
    classified = classify_ollama_error(text, status)
    assert type(classified) is error
    assert text in classified.message and classified.message.startswith("Ollama: ")


# ------------------------------------------------------------------ the async client
async def test_pull_yields_the_stream_up_to_success(
    ollama_emulator: OllamaEmulator, session: aiohttp.ClientSession
) -> None:
    ollama_emulator.add_model("tiny:1b", [200_000, 100])
    client = OllamaClient(session, ollama_emulator.base_url)
    lines = [line async for line in client.pull("tiny:1b")]
    assert lines[0] == {"status": "pulling manifest"}
    assert lines[-1] == {"status": "success"}
    layers = {line["digest"]: line["total"] for line in lines if "digest" in line}
    assert sorted(layers.values()) == [100, 200_000]
    assert ollama_emulator.is_pulled("tiny:1b")


async def test_pull_raises_the_error_inside_the_stream_and_before_it(
    ollama_emulator: OllamaEmulator, session: aiohttp.ClientSession
) -> None:
    client = OllamaClient(session, ollama_emulator.base_url)
    with pytest.raises(ModelNotFound, match="Ollama: pull model manifest: file does not exist"):
        [line async for line in client.pull("nosuchmodel:1b")]  # an error line in a 200 stream
    ollama_emulator.set_unknown_model_mode("http500")
    with pytest.raises(ModelNotFound, match="file does not exist"):
        [line async for line in client.pull("nosuchmodel:1b")]  # an error status before it
    with pytest.raises(InvalidModel):
        [line async for line in client.pull("Bad Name!")]


async def test_a_cut_stream_just_ends_without_success(
    ollama_emulator: OllamaEmulator, session: aiohttp.ClientSession
) -> None:
    ollama_emulator.add_model("cut:1b", [400_000, 100], bytes_per_sec=2_000_000)
    ollama_emulator.cut_after("cut:1b", 100_000)
    lines = [line async for line in OllamaClient(session, ollama_emulator.base_url).pull("cut:1b")]
    assert lines and {"status": "success"} not in lines


async def test_pull_from_nothing_says_ollama_is_not_running(session: aiohttp.ClientSession) -> None:
    client = OllamaClient(session, f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConnectionFailed, match="is Ollama running"):
        [line async for line in client.pull("tiny:1b")]


async def test_tags_version_and_delete(ollama_emulator: OllamaEmulator, session: aiohttp.ClientSession) -> None:
    ollama_emulator.add_model("have:1b", [1000, 10], pulled=True)
    ollama_emulator.add_model("other:2b", [3000], pulled=True)
    client = OllamaClient(session, ollama_emulator.base_url)
    assert await client.version() == ollama_emulator.version
    tags = await client.tags()
    assert {t["name"]: t["size"] for t in tags} == {"have:1b": 1010, "other:2b": 3000}
    await client.delete("have:1b")
    assert [t["name"] for t in await client.tags()] == ["other:2b"]
    with pytest.raises(ModelNotFound, match="Ollama: model 'have:1b' not found"):
        await client.delete("have:1b")


# ------------------------------------------------------------------ blocking, for callers without a loop
def test_blocking_list_and_delete_without_an_event_loop(ollama_emulator: OllamaEmulator) -> None:
    ollama_emulator.add_model("have:1b", [1000, 10], pulled=True)
    assert [t["name"] for t in list_tags(ollama_emulator.base_url, 3.0)] == ["have:1b"]
    delete_model(ollama_emulator.base_url, "have:1b", 3.0)
    assert list_tags(ollama_emulator.base_url, 3.0) == []
    with pytest.raises(ModelNotFound, match="Ollama: model 'have:1b' not found"):
        delete_model(ollama_emulator.base_url, "have:1b", 3.0)


async def test_blocking_calls_work_inside_a_running_event_loop(ollama_emulator: OllamaEmulator) -> None:
    ollama_emulator.add_model("have:1b", [1000], pulled=True)
    assert asyncio.get_running_loop().is_running()
    assert [t["name"] for t in list_tags(ollama_emulator.base_url, 3.0)] == ["have:1b"]
    delete_model(ollama_emulator.base_url, "have:1b", 3.0)
    with pytest.raises(ModelNotFound):
        delete_model(ollama_emulator.base_url, "have:1b", 3.0)


def test_blocking_calls_raise_the_inventorys_errors(ollama_emulator: OllamaEmulator) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ConnectionFailed, match=f"no Ollama server answers at {nowhere}/api/tags"):
        list_tags(nowhere, 1.0)
    proxy = FaultProxy(ollama_emulator.base_url).start()
    try:
        proxy.error(500, path="/api/tags", times=1, body=b'{"error":"the disk is on fire"}')
        with pytest.raises(ServerError, match="answered HTTP 500: the disk is on fire"):
            list_tags(proxy.url, 3.0)
        proxy.hang(5.0, path="/api/tags", times=1)
        with pytest.raises(ConnectionFailed, match="timed out"):
            list_tags(proxy.url, 0.5)
    finally:
        proxy.stop()
