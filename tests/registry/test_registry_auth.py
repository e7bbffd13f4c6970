"""Bearer-token challenges, and credentials that never leave the registry's host."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from modelpull import POLICIES, DownloadStatus, download_model
from tests.servers.registry import DockerRegistry, PushedModel, RegistryFront


async def pull(name: str, **options: object) -> list:
    return [event async for event in download_model("ollama-registry", name, **options)]


def name_on(front: RegistryFront, model: PushedModel) -> str:
    return f"{front.netloc}/{model.repo}:{model.tag}"


def blobs_match(models_dir: Path, model: PushedModel) -> bool:
    return all(
        hashlib.sha256((models_dir / "blobs" / f"sha256-{d.split(':')[1]}").read_bytes()).hexdigest()
        == d.split(":")[1]
        for d in model.blobs
    )


async def test_bearer_challenge_then_blobs_redirected_to_another_host_get_no_credentials(
    front: RegistryFront, cdn: RegistryFront, tiny_model: PushedModel, models_dir: Path
) -> None:
    front.token_auth = True
    front.redirect_blobs_to = cdn
    events = await pull(name_on(front, tiny_model), insecure=True, models_dir=str(models_dir))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert blobs_match(models_dir, tiny_model)
    # one token, fetched once and reused for the manifest and every blob request
    assert len(front.token_requests) == 1
    assert "scope=repository" in front.token_requests[0]["query"]
    authorized = [s for s in front.seen if s.headers.get("Authorization", "").startswith("Bearer ")]
    assert len(authorized) >= 1 + len(tiny_model.blobs)
    # every blob came from the other host, and none of its requests carried credentials
    assert {s.path.rsplit("/", 1)[1] for s in cdn.blob_requests()} == set(tiny_model.blobs)
    assert all("Authorization" not in s.headers for s in cdn.seen)


async def test_the_callers_credential_goes_to_the_realm_only(
    front: RegistryFront, cdn: RegistryFront, tiny_model: PushedModel, models_dir: Path
) -> None:
    front.token_auth = True
    front.credential = "alice:s3cret-pass"
    front.redirect_blobs_to = cdn
    name = name_on(front, tiny_model)

    refused = await pull(name, insecure=True, models_dir=str(models_dir))
    assert refused[-1].error_code == "auth_required", refused[-1].message
    assert not (models_dir / "manifests").exists()

    wrong = await pull(name, token="alice:wrong", insecure=True, models_dir=str(models_dir))
    assert wrong[-1].error_code == "auth_required"
    assert "wrong" not in wrong[-1].message

    events = await pull(name, token="alice:s3cret-pass", insecure=True, models_dir=str(models_dir))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert blobs_match(models_dir, tiny_model)
    for seen in front.seen + cdn.seen:  # the registry and the CDN only ever saw tokens, if anything
        assert not seen.headers.get("Authorization", "").startswith("Basic")
    assert all("Authorization" not in s.headers for s in cdn.seen)
    assert all("s3cret" not in e.message for e in events + refused + wrong)


async def test_a_token_realm_on_another_host_is_refused(
    front: RegistryFront, cdn: RegistryFront, tiny_model: PushedModel, models_dir: Path
) -> None:
    front.token_auth = True
    front.realm = f"{cdn.url}/token"
    events = await pull(name_on(front, tiny_model), token="alice:s3cret-pass", insecure=True,
                        models_dir=str(models_dir))
    assert events[-1].error_code == "unsafe_source", events[-1].message
    assert cdn.token_requests == [] and cdn.seen == []
    assert not (models_dir / "manifests").exists()


async def test_without_auth_no_authorization_header_is_ever_sent(
    front: RegistryFront, tiny_model: PushedModel, registry: DockerRegistry, models_dir: Path
) -> None:
    events = await pull(name_on(front, tiny_model), token="unused-token", insecure=True,
                        models_dir=str(models_dir))
    assert events[-1].status is DownloadStatus.COMPLETE
    assert front.seen and all("Authorization" not in s.headers for s in front.seen)


async def test_tokens_that_expire_during_the_download_are_fetched_again(
    front: RegistryFront, registry: DockerRegistry, tmp_path: Path
) -> None:
    model = registry.push_tiny(weights=4_000_000)
    front.token_auth = True
    front.token_lifetime = 0.5
    front.rate = 2_000_000
    # 8 parts of 0.5 MB, two at a time at 2 MB/s each: new requests go on for a second,
    # long after the first token expired
    policy = replace(POLICIES["default"], max_connections=2, min_part_size=500_000, max_part_size=500_000)
    events = await pull(name_on(front, model), insecure=True, models_dir=str(tmp_path / "models"),
                        policy=policy)
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert blobs_match(tmp_path / "models", model)
    assert len(front.token_requests) >= 2


async def test_basic_challenge_with_user_and_password(
    front: RegistryFront, cdn: RegistryFront, tiny_model: PushedModel, models_dir: Path
) -> None:
    front.basic_auth = True
    front.credential = "bob:hunter2-long"
    front.redirect_blobs_to = cdn
    refused = await pull(name_on(front, tiny_model), insecure=True, models_dir=str(models_dir))
    assert refused[-1].error_code == "auth_required"
    events = await pull(name_on(front, tiny_model), token="bob:hunter2-long", insecure=True,
                        models_dir=str(models_dir))
    assert events[-1].status is DownloadStatus.COMPLETE, events[-1].message
    assert blobs_match(models_dir, tiny_model)
    assert all("Authorization" not in s.headers for s in cdn.seen)
    assert all("hunter2" not in e.message for e in refused + events)
