"""Ollama's store: blobs and the manifest are flushed before and after they get their names (strace)."""

from __future__ import annotations

from tests.servers.strace import assert_durable, traced_download


def test_blobs_and_manifest_are_flushed_in_order(registry, tiny_model, models_dir):
    name = f"{registry.host}/{tiny_model.repo}:{tiny_model.tag}"
    calls, last = traced_download("ollama-registry", name, insecure=True, models_dir=str(models_dir))
    assert last["status"] == "complete", last
    for digest in tiny_model.blobs:
        assert_durable(calls, (models_dir / "blobs" / digest.replace(":", "-")).resolve())
    manifest = models_dir / "manifests" / registry.host / tiny_model.repo / tiny_model.tag
    assert_durable(calls, manifest.resolve())
    # the manifest is renamed into place after the last blob
    renames = [c.path for c in calls if c.kind == "rename"]
    assert renames[-1] == str(manifest.resolve()), renames
