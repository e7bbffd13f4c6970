"""The ModelScope cache store: read by the official SDK in a fresh process; reading the SDK's cache.

modelpull's side is the client and the store (the provider composes them with the
transfer engine); here a short aiohttp fetch stands in for the engine: listing,
bytes into the slot's partial, rename to the final path, publish.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from modelpull.errors import InvalidModel, ModelNotFound
from modelpull._transfer import resolve_policy
from modelpull.providers._modelscope_client import ModelScopeClient
from modelpull.providers._repo import RepoListing
from modelpull.stores.modelscope_cache import (
    ModelScopeCacheStore,
    default_cache_dir,
    delete_local,
    list_local,
    read_sdk_index,
)
from tests.modelscope.conftest import Sdk
from tests.servers.modelscope_server import ModelScopeServer

FILES = {
    "config.json": b'{"model_type": "tiny"}',
    "weights/model.safetensors": os.urandom(20_000),
    "tokenizer/vocab.txt": b"a\nb\n",
}
FIND_OFFLINE = (
    "from modelscope import snapshot_download, model_file_download; import json; "
    "print(json.dumps([snapshot_download('{repo}', local_files_only=True), "
    "model_file_download('{repo}', 'weights/model.safetensors', local_files_only=True)]))"
)
SNAPSHOT = "from modelscope import snapshot_download; print(snapshot_download('{repo}'))"


async def pull_with_store(
    server: ModelScopeServer, repo: str, cache_dir: Path | None = None
) -> Path:
    """What the provider will do: list, fetch what the store lacks into partials, publish."""
    client = ModelScopeClient(server.endpoint, None, timeout=10)
    async with aiohttp.ClientSession() as session:
        listing = await client.listing(session, resolve_policy(), repo, None)
        store = ModelScopeCacheStore(repo, str(listing.ref), cache_dir)
        for f in listing.files:
            if store.is_complete(f.path, f.size, f.etag):
                continue
            slot = store.slot(f.path, f.etag)
            url = client.file_url(repo, f.path, str(listing.ref))
            headers = client.auth().headers_for(URL(url, encoded=True))
            async with session.get(url, headers=headers) as r:
                assert r.status == 200
                data = await r.read()
            assert hashlib.sha256(data).hexdigest() == f.etag
            slot.partial.parent.mkdir(parents=True, exist_ok=True)
            slot.partial.write_bytes(data)
            slot.final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(slot.partial, slot.final)
        published = [(f.path, f.etag) for f in listing.files]
        return store.publish(listing.commit, str(listing.ref), published)


async def listing_of(server: ModelScopeServer, repo: str) -> RepoListing:
    async with aiohttp.ClientSession() as session:
        client = ModelScopeClient(server.endpoint, None, 10)
        return await client.listing(session, resolve_policy(), repo, None)


def found_by_sdk(sdk: Sdk, server: ModelScopeServer, repo: str, **env: str | None) -> list[Path]:
    # modelscope's model_file_download asks /revisions even with local_files_only when no
    # revision is given (it ignores a failure, after a wait): keep that request on loopback
    out = sdk.run(FIND_OFFLINE.format(repo=repo), MODELSCOPE_ENDPOINT=server.endpoint, **env)
    return [Path(p) for p in json.loads(out.stdout.strip().splitlines()[-1])]


async def test_sdk_finds_what_modelpull_placed_offline(
    ms_server: ModelScopeServer, ms_cache: Path, sdk: Sdk
) -> None:
    ms_server.add_model("org", "tiny-0.5B.v2", FILES)
    folder = await pull_with_store(ms_server, "org/tiny-0.5B.v2")
    assert folder == ms_cache / "models" / "org" / "tiny-0___5B___v2"
    snapshot, weights = found_by_sdk(sdk, ms_server, "org/tiny-0.5B.v2")
    assert snapshot == folder
    assert weights.read_bytes() == FILES["weights/model.safetensors"]
    assert [e["Path"] for e in read_sdk_index(folder)] == sorted(FILES)
    with (folder / ".mdl").open("rb") as f:
        assert pickle.load(f) == {"id": "org/tiny-0___5B___v2"}


async def test_sdk_finds_it_in_the_default_cache_without_modelscope_cache(
    ms_server: ModelScopeServer, sdk: Sdk, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(sdk.home))
    monkeypatch.delenv("MODELSCOPE_CACHE", raising=False)
    assert default_cache_dir() == sdk.home / ".cache" / "modelscope"
    ms_server.add_model("org", "tiny", FILES)
    folder = await pull_with_store(ms_server, "org/tiny")
    assert folder == sdk.home / ".cache" / "modelscope" / "hub" / "models" / "org" / "tiny"
    snapshot, _ = found_by_sdk(sdk, ms_server, "org/tiny", MODELSCOPE_CACHE=None)
    assert snapshot == folder


async def test_sdk_downloads_nothing_that_modelpull_placed(
    ms_server: ModelScopeServer, ms_cache: Path, sdk: Sdk
) -> None:
    ms_server.add_model("org", "tiny", FILES)
    folder = await pull_with_store(ms_server, "org/tiny")
    ms_server.clear_log()
    out = sdk.run(SNAPSHOT.format(repo="org/tiny"), MODELSCOPE_ENDPOINT=ms_server.endpoint)
    assert Path(out.stdout.strip().splitlines()[-1]) == folder
    assert ms_server.downloads() == [] and ms_server.bytes_sent() == 0


async def test_model_the_sdk_downloaded_needs_nothing_fetched(
    ms_server: ModelScopeServer, ms_cache: Path, sdk: Sdk
) -> None:
    ms_server.add_model("org", "tiny", FILES)
    sdk.run(SNAPSHOT.format(repo="org/tiny"), MODELSCOPE_ENDPOINT=ms_server.endpoint)
    listing = await listing_of(ms_server, "org/tiny")
    store = ModelScopeCacheStore("org/tiny", str(listing.ref))
    assert store.layout == "snapshots"
    assert store.folder == ms_cache / "models" / "org--tiny" / "snapshots" / "master"
    assert all(store.is_complete(f.path, f.size, f.etag) for f in listing.files)
    ms_server.clear_log()
    await pull_with_store(ms_server, "org/tiny")
    assert ms_server.downloads() == []


async def test_a_changed_file_of_the_same_size_is_not_complete(
    ms_server: ModelScopeServer, ms_cache: Path, sdk: Sdk
) -> None:
    ms_server.add_model("org", "tiny", FILES)
    sdk.run(SNAPSHOT.format(repo="org/tiny"), MODELSCOPE_ENDPOINT=ms_server.endpoint)
    listing = await listing_of(ms_server, "org/tiny")
    store = ModelScopeCacheStore("org/tiny", str(listing.ref))
    weights = store.folder / "weights" / "model.safetensors"
    weights.write_bytes(b"\0" * weights.stat().st_size)
    complete = {f.path: store.is_complete(f.path, f.size, f.etag) for f in listing.files}
    assert complete == {p: p != "weights/model.safetensors" for p in FILES}


async def test_a_snapshot_the_sdk_started_is_completed_in_place(
    ms_server: ModelScopeServer, ms_cache: Path, sdk: Sdk
) -> None:
    ms_server.add_model("org", "tiny", FILES)
    sdk.run(SNAPSHOT.format(repo="org/tiny"), MODELSCOPE_ENDPOINT=ms_server.endpoint)
    snapshot = ms_cache / "models" / "org--tiny" / "snapshots" / "master"
    (snapshot / "weights" / "model.safetensors").unlink()
    ms_server.clear_log()
    assert await pull_with_store(ms_server, "org/tiny") == snapshot
    assert [r.file_path for r in ms_server.downloads()] == ["weights/model.safetensors"]
    assert not (ms_cache / "models" / "org" / "tiny").exists()
    snapshot_found, weights = found_by_sdk(sdk, ms_server, "org/tiny")
    assert snapshot_found == snapshot
    assert weights.read_bytes() == FILES["weights/model.safetensors"]


async def test_partials_stay_where_the_sdk_neither_finds_nor_lists_them(
    ms_server: ModelScopeServer, ms_cache: Path, sdk: Sdk
) -> None:
    ms_server.add_model("org", "tiny", FILES)
    listing = await listing_of(ms_server, "org/tiny")
    store = ModelScopeCacheStore("org/tiny", str(listing.ref))
    for f in listing.files:
        slot = store.slot(f.path, f.etag)
        assert store.folder not in slot.partial.parents and store.folder not in slot.lock.parents
        slot.partial.parent.mkdir(parents=True, exist_ok=True)
        slot.partial.write_bytes(b"half")
    found = sdk.run(
        FIND_OFFLINE.format(repo="org/tiny"), check=False, MODELSCOPE_ENDPOINT=ms_server.endpoint
    )
    assert found.returncode != 0 and "Cannot find" in found.stderr
    scanned = sdk.run(
        "from modelscope_hub import HubApi; import json; "
        "print(json.dumps([r.local_path for r in HubApi().scan_cache().repos]))",
        MODELSCOPE_ENDPOINT=ms_server.endpoint,
    )
    assert json.loads(scanned.stdout.strip().splitlines()[-1]) == []
    assert [m["partial_bytes"] for m in list_local()] == []


async def test_list_and_delete(ms_server: ModelScopeServer, ms_cache: Path, sdk: Sdk) -> None:
    ms_server.add_model("org", "mine.v1", FILES)
    ms_server.add_model("org", "theirs", FILES)
    await pull_with_store(ms_server, "org/mine.v1")
    sdk.run(SNAPSHOT.format(repo="org/theirs"), MODELSCOPE_ENDPOINT=ms_server.endpoint)
    leftover = ModelScopeCacheStore("org/mine.v1").slot("x.bin", "0" * 64).partial
    leftover.write_bytes(b"12345")
    models = {m["name"]: m for m in list_local()}
    assert set(models) == {"org/mine.v1", "org/theirs"}
    assert models["org/mine.v1"]["layout"] == "one-folder"
    assert models["org/theirs"]["layout"] == "snapshots"
    assert models["org/theirs"]["revision"] == "master"
    assert models["org/mine.v1"]["partial_bytes"] == 5
    assert sorted(models["org/theirs"]["files"]) == sorted(FILES)
    assert models["org/mine.v1"]["size"] == sum(len(d) for d in FILES.values())
    removed = delete_local("org/mine.v1")
    assert removed["freed_bytes"] >= sum(len(d) for d in FILES.values()) + 5
    assert not leftover.exists()
    assert [m["name"] for m in list_local()] == ["org/theirs"]
    delete_local("org/theirs")
    assert list_local() == []
    with pytest.raises(ModelNotFound):
        delete_local("org/theirs")
    with pytest.raises(InvalidModel):
        delete_local("../etc")


def test_a_pickle_that_runs_code_is_not_run(ms_cache: Path, tmp_path: Path) -> None:
    folder = ms_cache / "models" / "org" / "tiny"
    folder.mkdir(parents=True)
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    (folder / ".msc").write_bytes(pickle.dumps([Payload()]))
    assert read_sdk_index(folder) == []
    assert not marker.exists()
    (folder / ".msc").write_bytes(pickle.dumps([{"Path": "a", "Revision": "c1"}]))
    assert read_sdk_index(folder) == [{"Path": "a", "Revision": "c1"}]
