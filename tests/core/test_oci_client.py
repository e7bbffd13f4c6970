"""OciClient against a real docker-registry: where it goes, how it authenticates, what it says."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import aiohttp
import pytest
from yarl import URL

from modelpull._oci import OciClient, check_reference, check_repository, registry_url
from modelpull._secrets import Secret
from modelpull._transfer import POLICIES, TransferPolicy, new_session
from modelpull.errors import (
    AuthRequired,
    ConnectionFailed,
    InvalidModel,
    InvalidOption,
    ModelNotFound,
    ServerError,
    UnsafeSource,
)
from tests.servers import free_port
from tests.servers.fault_proxy import FaultProxy
from tests.servers.registry import DockerRegistry, PushedModel, RegistryFront

FAST = replace(POLICIES["default"], backoff_initial=0.05, backoff_max=0.05)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    with DockerRegistry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="module")
def model(registry: DockerRegistry) -> PushedModel:
    return registry.push_tiny()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    http = new_session(FAST)
    try:
        yield http
    finally:
        await http.close()


def client_for(session: aiohttp.ClientSession, url: str, policy: TransferPolicy = FAST,
               credential: str | None = None) -> OciClient:
    return OciClient(session, URL(url), policy, Secret(credential) if credential else None)


# ------------------------------------------------------------------ where a name goes
def test_the_default_host_goes_to_the_mirror_any_other_host_to_itself() -> None:
    default = "registry.ollama.ai"
    assert str(registry_url(default, default_host=default)) == "https://registry.ollama.ai"
    assert str(registry_url(default, default_host=default, base_url="http://cache:5000/mirror/")) == (
        "http://cache:5000/mirror"
    )
    assert str(registry_url("r.example:5000", default_host=default, base_url="http://cache:5000")) == (
        "https://r.example:5000"
    )
    assert str(registry_url("r.example:5000", default_host=default, insecure=True)) == "http://r.example:5000"
    # another source gives its own default host
    assert str(registry_url("index.docker.io", default_host="index.docker.io",
                            base_url="https://mirror.example")) == "https://mirror.example"
    for bad in ("ftp://cache", "http://user:pw@cache", "http://cache?x=1", "cache:5000"):
        with pytest.raises(InvalidOption):
            registry_url(default, default_host=default, base_url=bad)


@pytest.mark.parametrize("repository", ["../etc", "a/../b", "a//b", "", "a/b?c", "a/b#c", "a b", "/a"])
def test_a_repository_that_is_a_path_trick_is_refused(repository: str) -> None:
    with pytest.raises(InvalidModel):
        check_repository(repository)


@pytest.mark.parametrize("reference", ["", "../x", "a/b", "sha256:short", "sha256:" + "Z" * 64, "x" * 200])
def test_a_reference_is_a_tag_or_a_sha256_digest(reference: str) -> None:
    with pytest.raises((InvalidModel, UnsafeSource)):
        check_reference(reference)
    assert check_reference("q4_K_M") == "q4_K_M"
    assert check_reference("sha256:" + "0" * 64)


def test_blob_urls_name_a_checked_digest() -> None:
    client = OciClient(None, URL("http://r.example:5000/mirror"), FAST)  # type: ignore[arg-type]
    digest = "sha256:" + "ab" * 32
    assert client.blob_url("library/tiny", digest) == f"http://r.example:5000/mirror/v2/library/tiny/blobs/{digest}"
    with pytest.raises(UnsafeSource):
        client.blob_url("library/tiny", "sha256:../../x")


# ------------------------------------------------------------------ what the registry answers
async def test_unknown_model_and_unknown_tag_are_not_found(
    registry: DockerRegistry, model: PushedModel, session: aiohttp.ClientSession
) -> None:
    client = client_for(session, registry.url)
    with pytest.raises(ModelNotFound, match="model library/nosuch was not found on the registry"):
        await client.fetch_manifest("library/nosuch", "1b")
    with pytest.raises(ModelNotFound, match="tag 'nosuchtag' of model"):
        await client.fetch_manifest(model.repo, "nosuchtag", name=f"{model.repo}:nosuchtag")


async def test_credentials_asked_for_refused_and_accepted(
    registry: DockerRegistry, model: PushedModel, session: aiohttp.ClientSession
) -> None:
    with RegistryFront(registry.url, basic_auth=True, credential="bob:hunter2-long") as front:
        with pytest.raises(AuthRequired, match="requires credentials for tiny.*pass token"):
            await client_for(session, front.url).fetch_manifest(model.repo, model.tag, name="tiny")
        with pytest.raises(AuthRequired, match="refused the credential for tiny") as refused:
            await client_for(session, front.url, credential="bob:wrong-pass").fetch_manifest(
                model.repo, model.tag, name="tiny")
        assert "wrong-pass" not in str(refused.value)
        fetched = await client_for(session, front.url, credential="bob:hunter2-long").fetch_manifest(
            model.repo, model.tag)
        assert fetched.body == model.manifest


async def test_a_token_realm_is_asked_once_and_its_token_reused(
    registry: DockerRegistry, model: PushedModel, session: aiohttp.ClientSession
) -> None:
    with RegistryFront(registry.url, token_auth=True) as front:
        client = client_for(session, front.url)
        for _ in range(3):
            assert (await client.fetch_manifest(model.repo, model.tag)).body == model.manifest
        assert len(front.token_requests) == 1
        # the engine's blob requests share the same auth, so the same token
        assert client.auth.headers_for(URL(client.blob_url(model.repo, model.config_digest)))


async def test_a_busy_registry_is_asked_again_after_its_retry_after(
    registry: DockerRegistry, model: PushedModel, session: aiohttp.ClientSession
) -> None:
    proxy = FaultProxy(registry.url).start()
    try:
        path = f"/v2/{model.repo}/manifests/{model.tag}"
        proxy.error(503, retry_after=1, path=path, times=1)
        fetched = await client_for(session, proxy.url).fetch_manifest(model.repo, model.tag)
        assert fetched.body == model.manifest
        busy, answered = proxy.requests(path)
        assert busy.status == 503 and answered.status == 200
        assert busy.finished is not None and 0.9 <= answered.started - busy.finished < 3.0

        proxy.clear_log()
        proxy.error(500, path=path, times=None)
        with pytest.raises(ServerError, match="answered HTTP 500; try again later"):
            await client_for(session, proxy.url).fetch_manifest(model.repo, model.tag)
        assert len(proxy.requests(path)) == FAST.request_attempts
    finally:
        proxy.stop()


async def test_a_manifest_that_does_not_match_its_digest_is_refused(
    registry: DockerRegistry, model: PushedModel, session: aiohttp.ClientSession
) -> None:
    announced = "sha256:" + "0" * 64
    with RegistryFront(registry.url) as front:
        path = f"/v2/{model.repo}/manifests/{announced}"
        front.overrides[path] = ("application/vnd.docker.distribution.manifest.v2+json", model.manifest)
        with pytest.raises(ServerError, match="does not match the digest it was asked for"):
            await client_for(session, front.url).fetch_manifest(model.repo, announced)


async def test_nothing_listening_fails_within_a_few_seconds(session: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="cannot connect to the registry"):
        await client_for(session, f"http://127.0.0.1:{free_port()}", POLICIES["default"]).fetch_manifest(
            "library/tiny", "1b")
    assert time.monotonic() - started < 5.0


async def test_https_to_a_plain_http_registry_says_insecure_and_is_not_retried(
    registry: DockerRegistry, model: PushedModel, session: aiohttp.ClientSession
) -> None:
    slow_retries = replace(POLICIES["default"], backoff_initial=2.0, backoff_max=2.0)
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="insecure") as failed:
        await client_for(session, f"https://{registry.host}", slow_retries).fetch_manifest(
            model.repo, model.tag)
    assert failed.value.resumable is False
    assert time.monotonic() - started < 1.5  # one attempt: a TLS mismatch does not heal


async def test_a_missing_blob_is_not_found_in_the_registrys_words(
    registry: DockerRegistry, model: PushedModel, session: aiohttp.ClientSession
) -> None:
    client = client_for(session, registry.url)
    absent = "sha256:" + "e" * 64
    async with session.get(client.blob_url(model.repo, absent)) as response:
        body = (await response.read()).decode()
        error = client.error_for_response(response, body, name="tiny:1b")
    assert isinstance(error, ModelNotFound)
    assert "is missing a blob of tiny:1b" in error.message
    async with session.get(client.blob_url(model.repo, model.config_digest)) as response:
        assert client.error_for_response(response, "", name="tiny:1b") is None
