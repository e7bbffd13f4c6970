"""Durable publish: a file gets its final name only after its bytes are on disk.

Each download runs in a child process under ``strace``; the calls it makes
show the order: fsync of the file, rename into place, fsync of the folder.
A power cut at any point then leaves either no file under the final name or
the whole file, never an empty or short one that later runs would trust.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.servers.strace import assert_durable, traced_download


@pytest.fixture
def repo(olah):
    """A small repo: a config and an LFS weights file."""
    repo_id = f"org/durable-{uuid.uuid4().hex[:8]}"
    files = {"config.json": b'{"model_type": "llama"}\n', "model.safetensors": os.urandom(300_000)}
    olah.make_repo(repo_id, files)
    return repo_id, files


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "hf-cache"


def _blob_path(cache: Path, repo_id: str, name: str) -> Path:
    link = cache / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    entry = next(link.iterdir()) / name
    return entry.parent / os.readlink(entry)


def test_hf_cache_blobs_links_and_ref_are_flushed_in_order(hf_front, repo, cache):
    repo_id, files = repo
    calls, last = traced_download("hf", repo_id, base_url=hf_front.endpoint, cache_dir=str(cache))
    assert last["status"] == "complete", last
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    for name in files:
        assert_durable(calls, _blob_path(cache, repo_id, name).resolve())
    ref = folder / "refs" / "main"
    assert_durable(calls, ref)
    # the snapshot's links are on disk before the ref names the snapshot
    snapshot = str(Path(last["path"]).resolve())
    ref_at = max(i for i, c in enumerate(calls) if c.kind == "rename" and c.path == str(ref.resolve()))
    assert any(c.kind == "fsync" and c.path == snapshot for c in calls[:ref_at]), calls


def test_local_dir_files_and_their_metadata_are_flushed(hf_front, repo, tmp_path):
    repo_id, files = repo
    target = tmp_path / "local"
    calls, last = traced_download("hf", repo_id, base_url=hf_front.endpoint, local_dir=str(target))
    assert last["status"] == "complete", last
    for name in files:
        assert_durable(calls, (target / name).resolve())
        assert_durable(calls, (target / ".cache" / "huggingface" / "download" / f"{name}.metadata").resolve())
