"""The test server is faithful: the official ``modelscope`` SDK downloads and verifies from it.

The SDK runs in its own process, pointed at the server by ``MODELSCOPE_ENDPOINT``
with its cache in a temporary folder, exactly as a user would run it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tests.modelscope.conftest import Sdk
from tests.servers.modelscope_server import ModelScopeServer

WEIGHTS = os.urandom(40_000)
FILES = {
    "config.json": b'{"model_type": "tiny"}',
    "weights/model.safetensors": WEIGHTS,
    "tokenizer/vocab.txt": b"a\nb\nc\n",
}
SNAPSHOT = "from modelscope import snapshot_download; print(snapshot_download({args}))"


def _snapshot_files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def test_sdk_downloads_and_verifies_a_model(
    ms_server: ModelScopeServer, ms_cache: Path, sdk: Sdk
) -> None:
    ms_server.add_model("org", "tiny-1.5B", FILES)
    out = sdk.run(SNAPSHOT.format(args='"org/tiny-1.5B"'), MODELSCOPE_ENDPOINT=ms_server.endpoint)
    folder = Path(out.stdout.strip().splitlines()[-1])
    assert ms_cache in folder.parents
    assert _snapshot_files(folder) == FILES
    listings = [r for r in ms_server.log if r.path.endswith("/repo/files")]
    assert [r.query for r in listings] == [{"Revision": "master", "Recursive": "True"}]
    downloads = ms_server.downloads()
    assert sorted(r.query["FilePath"] for r in downloads) == sorted(FILES)
    assert {r.query["Revision"] for r in downloads} == {"master"}
    assert all(r.status == 200 and r.range is None for r in downloads)
    assert ms_server.bytes_sent() == sum(len(d) for d in FILES.values())


def test_sdk_sends_the_token_as_cookie_and_bearer(
    ms_server: ModelScopeServer, ms_cache: Path, sdk: Sdk
) -> None:
    ms_server.add_model("team", "private", {"a.bin": b"secret weights"}, token="ms-token-1234")
    denied = sdk.run(
        SNAPSHOT.format(args='"team/private"'), check=False, MODELSCOPE_ENDPOINT=ms_server.endpoint
    )
    assert denied.returncode != 0
    assert "401" in denied.stderr
    assert not any(r.credential for r in ms_server.log)
    ms_server.clear_log()
    sdk.run(
        SNAPSHOT.format(args='"team/private"'),
        MODELSCOPE_ENDPOINT=ms_server.endpoint,
        MODELSCOPE_API_TOKEN="ms-token-1234",
    )
    api_calls = [r for r in ms_server.log if "/models/team/private" in r.path]
    assert api_calls and all(r.cookie_credential and r.bearer_credential for r in api_calls)
    assert all(r.status == 200 for r in api_calls)


def test_sdk_resumes_with_range_and_gets_206(
    ms_server: ModelScopeServer, ms_cache: Path, sdk: Sdk
) -> None:
    ms_server.add_model("org", "tiny", FILES)
    weights = ms_cache / "models" / "org--tiny" / "snapshots" / "master" / "weights"
    weights.mkdir(parents=True)
    (weights / "model.safetensors.incomplete").write_bytes(WEIGHTS[:10_000])
    sdk.run(SNAPSHOT.format(args='"org/tiny"'), MODELSCOPE_ENDPOINT=ms_server.endpoint)
    assert (weights / "model.safetensors").read_bytes() == WEIGHTS
    ranged = [r for r in ms_server.downloads() if r.range]
    assert [(r.range, r.status, r.bytes_sent) for r in ranged] == [("bytes=10000-", 206, 30_000)]


def test_sdk_starts_over_when_range_is_ignored(
    ms_server: ModelScopeServer, ms_cache: Path, sdk: Sdk
) -> None:
    ms_server.add_model("org", "tiny", FILES)
    ms_server.ignore_range = True
    weights = ms_cache / "models" / "org--tiny" / "snapshots" / "master" / "weights"
    weights.mkdir(parents=True)
    (weights / "model.safetensors.incomplete").write_bytes(WEIGHTS[:10_000])
    sdk.run(SNAPSHOT.format(args='"org/tiny"'), MODELSCOPE_ENDPOINT=ms_server.endpoint)
    assert (weights / "model.safetensors").read_bytes() == WEIGHTS
    ranged = [r for r in ms_server.downloads() if r.range]
    assert [(r.status, r.bytes_sent) for r in ranged] == [(200, len(WEIGHTS))]


def test_sdk_rejects_bytes_that_do_not_match_the_listed_sha256(
    ms_server: ModelScopeServer, ms_cache: Path, sdk: Sdk
) -> None:
    ms_server.add_model("org", "tiny", FILES)

    def lie_about_weights(entries: list[dict[str, object]]) -> list[dict[str, object]]:
        for entry in entries:
            if entry["Path"] == "weights/model.safetensors":
                entry["Sha256"] = hashlib.sha256(b"something else").hexdigest()
        return entries

    ms_server.listing_hook = lie_about_weights
    failed = sdk.run(
        SNAPSHOT.format(args='"org/tiny"'), check=False, MODELSCOPE_ENDPOINT=ms_server.endpoint,
        MODELSCOPE_DOWNLOAD_MAX_RETRIES="0",
    )
    assert failed.returncode != 0
    assert "Hash mismatch" in failed.stderr or "hash" in failed.stderr.lower()
    folder = ms_cache / "models" / "org--tiny" / "snapshots" / "master"
    assert not (folder / "weights" / "model.safetensors").exists()


def test_sdk_error_for_an_unknown_model_carries_the_server_request_id(
    ms_server: ModelScopeServer, ms_cache: Path, sdk: Sdk
) -> None:
    failed = sdk.run(
        SNAPSHOT.format(args='"org/missing"'), check=False, MODELSCOPE_ENDPOINT=ms_server.endpoint
    )
    assert failed.returncode != 0
    (listing,) = [r for r in ms_server.log if r.path.endswith("/repo/files")]
    assert listing.status == 404 and listing.request_id
    assert "does not exist" in failed.stderr


def test_sdk_single_file_download_reads_revisions_and_picks_the_newest_older_tag(
    ms_server: ModelScopeServer, ms_cache: Path, sdk: Sdk
) -> None:
    """modelscope's model_file_download (unlike snapshot_download) resolves a missing revision
    through /revisions: the newest tag created before the SDK's release, else master."""
    ms_server.add_model(
        "org", "tagged", {"w.bin": b"new"}, revisions={"v1": {"w.bin": b"old"}}, tags=["v1"]
    )
    out = sdk.run(
        "from modelscope import model_file_download as get; import json; "
        "print(json.dumps(get('org/tagged', 'w.bin')))",
        MODELSCOPE_ENDPOINT=ms_server.endpoint,
    )
    path = Path(json.loads(out.stdout.strip().splitlines()[-1]))
    assert path.read_bytes() == b"old"
    assert any(r.path.endswith("/revisions") and r.status == 200 for r in ms_server.log)
    assert {r.query["Revision"] for r in ms_server.downloads()} == {"v1"}
