"""The ModelScope API client against the test server: file lists, errors, credentials."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from yarl import URL

from modelpull._secrets import Secret
from modelpull.errors import (
    AuthRequired,
    ConnectionFailed,
    InvalidModel,
    InvalidOption,
    ModelNotFound,
    ModelpullError,
    RevisionNotFound,
    ServerError,
    TransferTimeout,
    UnsafeSource,
)
from modelpull._transfer import resolve_policy
from modelpull.providers._modelscope_client import (
    DEFAULT_ENDPOINT,
    ModelScopeClient,
    resolve_endpoint,
)
from modelpull.providers._repo import RepoFile
from tests.servers.modelscope_server import ModelScopeServer

TOKEN = "ms-canary-token-5f3a9c"
FILES = {
    "config.json": b'{"a": 1}',
    "weights/part-1.safetensors": b"1" * 5000,
    "weights/deep/part-2.safetensors": b"2" * 3000,
    "README.md": b"# tiny",
}


#: one attempt per request: the tests below look at single answers
POLICY = resolve_policy("default", request_attempts=1)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_listing_is_recursive_with_sizes_and_sha256(
    ms_server: ModelScopeServer, session: aiohttp.ClientSession
) -> None:
    ids = ms_server.add_model("org", "tiny", FILES)
    client = ModelScopeClient(ms_server.endpoint, None, timeout=10)
    listing = await client.listing(session, POLICY, "org/tiny", None)
    assert listing.ref == "master"
    assert listing.commit == ids["master"]
    assert listing.files == [
        RepoFile(path, len(data), sha(data), f"sha256:{sha(data)}")
        for path, data in sorted(FILES.items())
    ]
    (request,) = ms_server.log
    assert request.path == "/api/v1/models/org/tiny/repo/files"
    assert request.query == {"Revision": "master", "Recursive": "True"}
    assert request.headers.get("X-Request-ID")


async def test_listing_of_a_tag_and_the_newest_commit_among_files(
    ms_server: ModelScopeServer, session: aiohttp.ClientSession
) -> None:
    # config.json is unchanged since v1, so the master listing names v1's commit for it
    ids = ms_server.add_model(
        "org", "tagged", {"config.json": b"{}", "w.bin": b"new"},
        revisions={"v1": {"config.json": b"{}", "w.bin": b"old"}}, tags=["v1"],
    )
    client = ModelScopeClient(ms_server.endpoint, None, timeout=10)
    head = await client.listing(session, POLICY, "org/tagged", None)
    assert head.commit == ids["master"] != ids["v1"]
    old = await client.listing(session, POLICY, "org/tagged", "v1")
    assert (old.ref, old.commit) == ("v1", ids["v1"])
    assert [f.etag for f in old.files if f.path == "w.bin"] == [sha(b"old")]


async def test_a_list_cut_at_the_server_cap_is_walked_folder_by_folder(
    ms_server: ModelScopeServer, session: aiohttp.ClientSession
) -> None:
    many = {f"shards/{d}/s{i}.bin": bytes([i]) for d in "abc" for i in range(3)} | FILES
    ms_server.add_model("org", "sharded", many)
    ms_server.listing_cap = 5
    client = ModelScopeClient(ms_server.endpoint, None, timeout=10)
    client.listing_cap = 5
    listing = await client.listing(session, POLICY, "org/sharded", None)
    assert sorted(f.path for f in listing.files) == sorted(many)
    roots = {r.query.get("Root") for r in ms_server.log}
    assert {"shards", "shards/a", "weights"} <= roots


async def test_file_url_and_auth_fetch_the_listed_bytes(
    ms_server: ModelScopeServer, session: aiohttp.ClientSession
) -> None:
    ms_server.add_model("team", "private.v2", FILES, token=TOKEN)
    client = ModelScopeClient(ms_server.endpoint, Secret(TOKEN), timeout=10)
    listing = await client.listing(session, POLICY, "team/private.v2", None)
    for f in listing.files:
        url = URL(client.file_url("team/private.v2", f.path, listing.commit), encoded=True)
        assert TOKEN not in str(url)
        async with session.get(url, headers=client.auth().headers_for(url)) as response:
            assert response.status == 200
            assert sha(await response.read()) == f.etag
    assert all(r.cookie_credential and r.bearer_credential for r in ms_server.log)
    assert {r.query["Revision"] for r in ms_server.downloads()} == {listing.commit}


def test_credentials_go_to_their_own_origin_only(ms_server: ModelScopeServer) -> None:
    client = ModelScopeClient(ms_server.endpoint, Secret(TOKEN), timeout=10)
    auth = client.auth()
    own = URL(client.file_url("org/tiny", "a.bin", "master"), encoded=True)
    assert auth.headers_for(own) == {
        "Authorization": f"Bearer {TOKEN}",
        "Cookie": f"m_session_id={TOKEN}",
    }
    for other in (
        own.with_host("cdn.example.com"),
        own.with_port(own.port + 1 if own.port else 1),
        own.with_scheme("https"),
    ):
        assert auth.headers_for(other) == {}
    assert TOKEN not in repr(auth) and TOKEN not in repr(client)


async def test_token_comes_from_the_environment(
    ms_server: ModelScopeServer, session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    ms_server.add_model("team", "private", FILES, token=TOKEN)
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", TOKEN)
    client = ModelScopeClient(ms_server.endpoint, None, timeout=10)
    listing = await client.listing(session, POLICY, "team/private", None)
    assert len(listing.files) == len(FILES)


def test_endpoint_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_endpoint(None) == DEFAULT_ENDPOINT
    monkeypatch.setenv("MODELSCOPE_DOMAIN", "mirror.example")
    assert resolve_endpoint(None) == "https://mirror.example"
    monkeypatch.setenv("MODELSCOPE_DOMAIN", "http://127.0.0.1:9/")
    assert resolve_endpoint(None) == "http://127.0.0.1:9"
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://ms.internal:8080/")
    assert resolve_endpoint(None) == "http://ms.internal:8080"
    assert resolve_endpoint("https://given.example") == "https://given.example"
    with pytest.raises(InvalidOption):
        resolve_endpoint("ftp://nope")


# -- errors ------------------------------------------------------------------------
async def failure(client: ModelScopeClient, session: aiohttp.ClientSession, repo: str,
                  revision: str | None = None) -> ModelpullError:
    with pytest.raises(ModelpullError) as caught:
        await client.listing(session, POLICY, repo, revision)
    return caught.value


def last_request_id(server: ModelScopeServer) -> str:
    ids = [r.request_id for r in server.log if r.request_id]
    assert ids
    return ids[0]


async def test_unknown_model_is_not_found_with_the_request_id(
    ms_server: ModelScopeServer, session: aiohttp.ClientSession
) -> None:
    error = await failure(ModelScopeClient(ms_server.endpoint, None, 10), session, "org/none")
    assert isinstance(error, ModelNotFound)
    assert last_request_id(ms_server) in error.message


async def test_unknown_revision_is_revision_not_found(
    ms_server: ModelScopeServer, session: aiohttp.ClientSession
) -> None:
    ms_server.add_model("org", "tiny", FILES)
    client = ModelScopeClient(ms_server.endpoint, None, 10)
    error = await failure(client, session, "org/tiny", "v9")
    assert isinstance(error, RevisionNotFound)
    assert "v9" in error.message and last_request_id(ms_server) in error.message


@pytest.mark.parametrize("token", [None, "wrong-token-value"])
async def test_private_model_needs_the_right_token(
    ms_server: ModelScopeServer, session: aiohttp.ClientSession, token: str | None
) -> None:
    ms_server.add_model("team", "private", FILES, token=TOKEN)
    client = ModelScopeClient(ms_server.endpoint, Secret(token) if token else None, 10)
    error = await failure(client, session, "team/private")
    assert isinstance(error, AuthRequired)
    assert ("MODELSCOPE_API_TOKEN" in error.message) == (token is None)
    assert last_request_id(ms_server) in error.message
    assert "wrong-token-value" not in error.message and "wrong-token-value" not in repr(error)


async def test_server_error_carries_the_request_id(
    ms_server: ModelScopeServer, session: aiohttp.ClientSession
) -> None:
    ms_server.add_model("org", "tiny", FILES)
    ms_server.fail(503)
    error = await failure(ModelScopeClient(ms_server.endpoint, None, 10), session, "org/tiny")
    assert isinstance(error, ServerError) and error.resumable
    assert "503" in error.message and last_request_id(ms_server) in error.message


async def test_refused_connection_is_connection_failed(session: aiohttp.ClientSession) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ModelScopeClient(f"http://127.0.0.1:{port}", Secret(TOKEN), 10)
    error = await failure(client, session, "org/tiny")
    assert isinstance(error, ConnectionFailed)
    assert TOKEN not in error.message


async def test_silent_server_is_a_timeout(session: aiohttp.ClientSession) -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = ModelScopeClient(f"http://127.0.0.1:{port}", None, timeout=0.3)
        error = await failure(client, session, "org/tiny")
        assert isinstance(error, TransferTimeout)
    finally:
        server.close()


@pytest.mark.parametrize(
    ("field", "value"),
    [("Path", "../escape.bin"), ("Path", "/etc/passwd"), ("Sha256", "not-a-sha"),
     ("Sha256", ""), ("Size", -1), ("Size", "12")],
)
async def test_hostile_listing_is_unsafe_source(
    ms_server: ModelScopeServer, session: aiohttp.ClientSession, field: str, value: object
) -> None:
    ms_server.add_model("org", "tiny", {"a.bin": b"x"})

    def tamper(entries: list[dict[str, object]]) -> list[dict[str, object]]:
        entries[0][field] = value
        return entries

    ms_server.listing_hook = tamper
    error = await failure(ModelScopeClient(ms_server.endpoint, None, 10), session, "org/tiny")
    assert isinstance(error, UnsafeSource)


async def test_invalid_model_id_is_refused_before_any_request(
    ms_server: ModelScopeServer, session: aiohttp.ClientSession
) -> None:
    client = ModelScopeClient(ms_server.endpoint, None, 10)
    for bad in ("no-owner", "a/b/c", "../x", "org/..", "org/na me"):
        with pytest.raises(InvalidModel):
            await client.listing(session, POLICY, bad, None)
    assert ms_server.log == []


async def test_download_errors_are_mapped_with_the_request_id(
    ms_server: ModelScopeServer, session: aiohttp.ClientSession
) -> None:
    ms_server.add_model("org", "tiny", FILES)
    client = ModelScopeClient(ms_server.endpoint, None, 10)
    url = client.file_url("org/tiny", "weights/gone.bin", "master")
    async with session.get(url) as response:
        error = client.error_for_response("org/tiny", "master", response, await response.text())
    assert isinstance(error, ModelNotFound)
    assert "weights/gone.bin" in error.message and last_request_id(ms_server) in error.message
    ms_server.fail(500)
    async with session.get(client.file_url("org/tiny", "config.json", "master")) as response:
        error = client.error_for_response("org/tiny", "master", response, await response.text())
    assert isinstance(error, ServerError)
    async with session.get(client.file_url("org/tiny", "config.json", "master")) as response:
        assert client.error_for_response("org/tiny", "master", response, await response.text()) is None
